//! Kafka's textual form of a UUID: URL-safe base64 without padding (22 characters), as used
//! for cluster ids and topic ids on the command line.

use uuid::Uuid;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes `id` the way Kafka's `Uuid.toString()` does.
pub fn uuid_to_kafka_string(id: Uuid) -> String {
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut chunks = bytes.chunks_exact(3);
    for c in &mut chunks {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        for shift in [18, 12, 6, 0] {
            out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
        }
    }
    // 16 bytes = 5 full chunks + 1 byte, which encodes to 2 characters.
    if let [last] = chunks.remainder() {
        let n = u32::from(*last) << 16;
        out.push(char::from(ALPHABET[((n >> 18) & 63) as usize]));
        out.push(char::from(ALPHABET[((n >> 12) & 63) as usize]));
    }
    debug_assert_eq!(out.len(), 22);
    out
}

/// A random UUID that is neither nil nor printed with a leading '-', which command-line tools
/// would take for a flag (Kafka's `Uuid.randomUuid()` makes the same guarantee).
pub(crate) fn random_uuid() -> Uuid {
    loop {
        let id = Uuid::new_v4();
        if !id.is_nil() && !uuid_to_kafka_string(id).starts_with('-') {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafka_encoding() {
        // Kafka: new Uuid(0, 1).toString() == "AAAAAAAAAAAAAAAAAAAAAQ"
        let id = Uuid::from_u128(1);
        assert_eq!(uuid_to_kafka_string(id), "AAAAAAAAAAAAAAAAAAAAAQ");
        let all = Uuid::from_u128(u128::MAX);
        assert_eq!(uuid_to_kafka_string(all), "_____________________w");
    }

    #[test]
    fn random_ids_are_safe() {
        for _ in 0..100 {
            let s = uuid_to_kafka_string(random_uuid());
            assert_eq!(s.len(), 22);
            assert!(!s.starts_with('-'));
        }
    }
}
