//! Where a record goes: keyed records by murmur2 exactly like the Java client's default
//! partitioner (and librdkafka's `murmur2_random`), so a key lands on the same partition
//! whichever client wrote it; unkeyed records stick to one partition per batch.

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let len = data.len();
    // Java uses an int length; keys above 2 GiB cannot exist in a record anyway.
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on MIN).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition of a keyed record among `partitions` partitions, as Java's
/// `BuiltInPartitioner.partitionForKey` computes it.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    to_positive(murmur2(key)) % partitions.max(1)
}

/// Sticky choice for unkeyed records: one partition per topic until its batch is sent,
/// then the next one, so unkeyed records fill whole batches instead of many tiny ones.
#[derive(Debug, Default)]
pub struct StickyPartitioner {
    current: std::collections::HashMap<String, i32>,
    seed: u64,
}

impl StickyPartitioner {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        StickyPartitioner {
            current: Default::default(),
            seed: seed | 1,
        }
    }

    /// The partition unkeyed records of `topic` go to now.
    pub fn partition(&mut self, topic: &str, partitions: i32) -> i32 {
        let partitions = partitions.max(1);
        if let Some(p) = self.current.get(topic) {
            if *p < partitions {
                return *p;
            }
        }
        let p = (self.next_random() % partitions as u64) as i32;
        self.current.insert(topic.to_string(), p);
        p
    }

    /// Moves `topic` on to the next partition (its batch was closed).
    pub fn advance(&mut self, topic: &str, partitions: i32) {
        if let Some(p) = self.current.get_mut(topic) {
            *p = (*p + 1) % partitions.max(1);
        }
    }

    /// xorshift64: spreads the first choice across producers without a rand dependency.
    fn next_random(&mut self) -> u64 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Apache Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_java() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                *expected,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    /// librdkafka's `unittest_murmur2` (`java_murmur2_results` in rdmurmur2.c), which
    /// includes the unaligned tails and the empty key.
    #[test]
    fn murmur2_matches_librdkafka_java_vectors() {
        let cases: &[(&[u8], u32)] = &[
            (b"kafka", 0xd067cf64),
            (b"giberish123456789", 0x8f552b0c),
            (b"1234", 0x9fc97b14),
            (b"234", 0xe7c009ca),
            (b"34", 0x873930da),
            (b"4", 0x5a4b5ca1),
            (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 0x78424f1c),
            (b"reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62b377),
            (b"eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4e09e),
            (b"AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8b43f),
            (b"", 0x106e08d9),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as u32,
                *expected,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn keyed_partition_is_positive_modulo() {
        // -973932308 & 0x7fffffff = 1173551340; % 3 = 0, % 7 = 4
        assert_eq!(to_positive(-973932308), 1173551340);
        assert_eq!(partition_for_key(b"21", 3), 1173551340 % 3);
        assert_eq!(partition_for_key(b"21", 7), 1173551340 % 7);
        assert_eq!(to_positive(i32::MIN), 0);
        for n in 1..20 {
            let p = partition_for_key(b"foobar", n);
            assert!((0..n).contains(&p));
        }
    }

    #[test]
    fn sticky_stays_until_advanced() {
        let mut s = StickyPartitioner::new();
        let first = s.partition("t", 4);
        assert_eq!(s.partition("t", 4), first);
        s.advance("t", 4);
        assert_eq!(s.partition("t", 4), (first + 1) % 4);
        // A shrunk view re-picks inside the range.
        assert!(s.partition("t", 1) == 0);
    }
}
