use super::*;
use kafka_protocol::records::Compression as WireCompression;

const LIMIT: usize = 1 << 20;

fn parse(buf: &[u8]) -> Result<Vec<LegacyMessage>, LegacyError> {
    let opts = ParseOptions {
        max_decompressed_bytes: LIMIT,
        allow_partial_trailing: false,
    };
    parse_message_set(&Bytes::copy_from_slice(buf), &opts)
}

fn msg(
    offset: i64,
    magic: i8,
    attributes: i8,
    ts: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<u8> {
    let mut b = BytesMut::new();
    write_message(&mut b, offset, magic, attributes, ts, key, value);
    b.to_vec()
}

fn wrapper(offset: i64, magic: i8, codec: Compression, ts: i64, inner: &[u8]) -> Vec<u8> {
    let lz4 = if magic == 0 {
        Lz4Checksum::KafkaLegacy
    } else {
        Lz4Checksum::Standard
    };
    let value = compression::compress(codec, inner, lz4).unwrap();
    msg(offset, magic, codec.id() as i8, ts, None, Some(&value))
}

/// Offset 7, magic 0, no key, value "a". CRC-32 computed independently (Python zlib.crc32
/// over `00 00 ff ff ff ff 00 00 00 01 61`).
const V0_VECTOR: &str = "0000000000000007 0000000f 51df3a32 00 00 ffffffff 00000001 61";
/// Offset 1, magic 1, CreateTime 1000, key "k", value "v" (zlib.crc32 = 0xe4e321bc).
const V1_VECTOR: &str =
    "0000000000000001 00000018 e4e321bc 01 00 00000000000003e8 00000001 6b 00000001 76";

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn encodes_and_parses_hand_checked_vectors() {
    let v0 = hex(V0_VECTOR);
    assert_eq!(
        msg(7, 0, 0, 123, None, Some(b"a")),
        v0,
        "magic 0 drops the timestamp"
    );
    let parsed = parse(&v0).unwrap();
    assert_eq!(
        parsed,
        vec![LegacyMessage {
            offset: 7,
            magic: 0,
            timestamp: NO_TIMESTAMP,
            timestamp_type: TimestampType::Creation,
            compression: Compression::None,
            key: None,
            value: Some(Bytes::from_static(b"a")),
        }]
    );
    let v1 = hex(V1_VECTOR);
    assert_eq!(msg(1, 1, 0, 1000, Some(b"k"), Some(b"v")), v1);
    let parsed = parse(&v1).unwrap();
    assert_eq!(parsed[0].timestamp, 1000);
    assert_eq!(parsed[0].key.as_deref(), Some(&b"k"[..]));
}

#[test]
fn rejects_corruption() {
    let mut v0 = hex(V0_VECTOR);
    *v0.last_mut().unwrap() = b'b';
    assert!(matches!(
        parse(&v0),
        Err(LegacyError::CrcMismatch {
            stored: 0x51df3a32,
            ..
        })
    ));
    let v0 = hex(V0_VECTOR);
    assert!(matches!(
        parse(&v0[..v0.len() - 1]),
        Err(LegacyError::Truncated { .. })
    ));
    let opts = ParseOptions {
        max_decompressed_bytes: LIMIT,
        allow_partial_trailing: true,
    };
    let mut two = v0.clone();
    two.extend_from_slice(&v0[..v0.len() - 2]);
    assert_eq!(
        parse_message_set(&Bytes::from(two), &opts).unwrap().len(),
        1
    );
    // Message size below the minimum.
    let mut bad = v0.clone();
    bad[8..12].copy_from_slice(&3i32.to_be_bytes());
    assert_eq!(parse(&bad), Err(LegacyError::InvalidMessageSize(3)));
    // Magic 2 is not a message.
    let mut bad = v0.clone();
    bad[16] = 2;
    assert_eq!(parse(&bad), Err(LegacyError::UnsupportedMagic(2)));
    // A value length pointing past the message (CRC fixed up so the length check is hit).
    let mut bad = msg(0, 0, 0, 0, None, Some(b"abc"));
    bad[22..26].copy_from_slice(&100i32.to_be_bytes());
    let crc = crc32fast::hash(&bad[16..]);
    bad[12..16].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(parse(&bad), Err(LegacyError::InvalidLength(100)));
    // zstd has no magic 0/1 form.
    let bad = msg(0, 1, 4, 0, None, Some(b"x"));
    assert_eq!(parse(&bad), Err(LegacyError::UnsupportedCompression(4)));
}

#[test]
fn flattens_wrappers_with_kip31_offsets() {
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4] {
        // Magic 1: inner offsets 0..2 relative, wrapper holds the last absolute offset.
        let mut inner = msg(0, 1, 0, 10, Some(b"k0"), Some(b"v0"));
        inner.extend(msg(1, 1, 0, 11, None, Some(b"v1")));
        inner.extend(msg(2, 1, 0, 12, Some(b"k2"), None));
        let set = wrapper(102, 1, codec, 12, &inner);
        let got = parse(&set).unwrap();
        assert_eq!(
            got.iter().map(|m| m.offset).collect::<Vec<_>>(),
            [100, 101, 102],
            "{codec:?}"
        );
        assert_eq!(
            got.iter().map(|m| m.timestamp).collect::<Vec<_>>(),
            [10, 11, 12]
        );
        assert_eq!(got[2].value, None);
        assert!(got.iter().all(|m| m.compression == codec));

        // Magic 0: inner offsets are absolute.
        let mut inner = msg(40, 0, 0, 0, None, Some(b"a"));
        inner.extend(msg(41, 0, 0, 0, None, Some(b"b")));
        let got = parse(&wrapper(41, 0, codec, 0, &inner)).unwrap();
        assert_eq!(
            got.iter().map(|m| m.offset).collect::<Vec<_>>(),
            [40, 41],
            "{codec:?}"
        );
        assert!(got.iter().all(|m| m.timestamp == NO_TIMESTAMP));
    }
}

#[test]
fn log_append_time_wrapper_overrides_inner_timestamps() {
    let inner = msg(0, 1, 0, 5, None, Some(b"x"));
    let mut set = wrapper(0, 1, Compression::Gzip, 999, &inner);
    // Set the LogAppendTime bit on the wrapper and fix its CRC.
    set[17] |= TIMESTAMP_TYPE_LOG_APPEND as u8;
    let crc = crc32fast::hash(&set[16..]);
    set[12..16].copy_from_slice(&crc.to_be_bytes());
    let got = parse(&set).unwrap();
    assert_eq!(got[0].timestamp, 999);
    assert_eq!(got[0].timestamp_type, TimestampType::LogAppend);

    let up =
        message_set_to_batch(&Bytes::from(set), &up_opts(OffsetAssignment::Sequential)).unwrap();
    let h = record_batch::validate(&up.batch).unwrap();
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, 999);
}

#[test]
fn rejects_bad_wrappers() {
    let inner = wrapper(
        0,
        1,
        Compression::Gzip,
        0,
        &msg(0, 1, 0, 0, None, Some(b"x")),
    );
    assert_eq!(
        parse(&wrapper(0, 1, Compression::Gzip, 0, &inner)),
        Err(LegacyError::NestedCompression)
    );
    let inner = msg(0, 0, 0, 0, None, Some(b"x"));
    assert_eq!(
        parse(&wrapper(0, 1, Compression::Snappy, 0, &inner)),
        Err(LegacyError::InnerMagicMismatch {
            wrapper: 1,
            inner: 0
        })
    );
    assert_eq!(
        parse(&msg(0, 1, 1, 0, None, None)),
        Err(LegacyError::BadWrapper("a null value"))
    );
    assert_eq!(
        parse(&wrapper(0, 1, Compression::Gzip, 0, &[])),
        Err(LegacyError::BadWrapper("no inner messages"))
    );
    // A decompression bomb stops at the cap.
    let big = msg(0, 1, 0, 0, None, Some(&vec![0u8; 200_000]));
    let set = wrapper(0, 1, Compression::Gzip, 0, &big);
    let opts = ParseOptions {
        max_decompressed_bytes: 100_000,
        allow_partial_trailing: false,
    };
    assert!(matches!(
        parse_message_set(&Bytes::from(set), &opts),
        Err(LegacyError::Compression(CompressionError::TooLarge {
            limit: 100_000
        }))
    ));
}

fn up_opts(offsets: OffsetAssignment) -> UpConvertOptions {
    UpConvertOptions {
        max_decompressed_bytes: LIMIT,
        offsets,
    }
}

#[test]
fn up_converts_to_one_v2_batch() {
    // Old producers often write offset 0 for every uncompressed message.
    let mut set = msg(0, 1, 0, 100, Some(b"a"), Some(b"1"));
    set.extend(msg(0, 1, 0, 90, None, Some(b"2")));
    set.extend(msg(0, 1, 0, 110, Some(b"c"), None));
    let set = Bytes::from(set);
    let up = message_set_to_batch(&set, &up_opts(OffsetAssignment::Sequential)).unwrap();
    assert_eq!(up.record_count, 3);
    assert_eq!(up.source_magic, 1);
    let h = record_batch::validate(&up.batch).unwrap();
    assert_eq!(h.total_len(), up.batch.len(), "exactly one batch");
    assert_eq!(
        (h.base_offset, h.last_offset_delta, h.records_count),
        (0, 2, 3)
    );
    assert_eq!((h.producer_id, h.base_sequence), (-1, -1));
    assert_eq!((h.base_timestamp, h.max_timestamp), (90, 110));
    let recs = records::decode_batches(&up.batch).unwrap();
    assert_eq!(
        recs.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
        [100, 90, 110]
    );
    assert_eq!(recs[2].value, None);
    assert_eq!(recs[0].key.as_deref(), Some(&b"a"[..]));

    assert!(matches!(
        message_set_to_batch(&set, &up_opts(OffsetAssignment::Preserve)),
        Err(LegacyError::NonMonotonicOffsets {
            previous: 0,
            next: 0
        })
    ));
    assert_eq!(
        message_set_to_batch(&Bytes::new(), &up_opts(OffsetAssignment::Sequential)),
        Err(LegacyError::Empty)
    );
}

#[test]
fn up_converts_magic0_without_timestamps_and_keeps_codec() {
    let mut inner = msg(0, 0, 0, 0, None, Some(b"a"));
    inner.extend(msg(1, 0, 0, 0, None, Some(b"b")));
    let set = Bytes::from(wrapper(1, 0, Compression::Lz4, 0, &inner));
    let up = message_set_to_batch(&set, &up_opts(OffsetAssignment::Sequential)).unwrap();
    assert_eq!(up.compression, Compression::Lz4);
    let h = record_batch::validate(&up.batch).unwrap();
    assert_eq!(h.compression().unwrap(), Compression::Lz4);
    assert_eq!(h.max_timestamp, NO_TIMESTAMP);
    let recs = records::decode_batches(&up.batch).unwrap();
    assert!(recs.iter().all(|r| r.timestamp == NO_TIMESTAMP));
}

fn v2_records(base: i64) -> Vec<Record> {
    let mk = |i: i64, key: Option<&'static [u8]>, value: Option<&'static [u8]>| Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: base + i,
        sequence: -1 + i as i32,
        timestamp: 1_700_000_000_000 + i * 7,
        key: key.map(Bytes::from_static),
        value: value.map(Bytes::from_static),
        headers: IndexMap::new(),
    };
    vec![
        mk(0, Some(b"k0"), Some(b"v0")),
        mk(1, None, Some(b"v1")),
        mk(2, Some(b"k2"), None),
    ]
}

fn down(stored: &Bytes, magic: i8, keep: bool) -> Bytes {
    let opts = DownConvertOptions {
        magic,
        max_decompressed_bytes: LIMIT,
        keep_compression: keep,
    };
    batches_to_message_set(stored, &opts).unwrap()
}

/// v2 → v1 → v2 preserves keys, values, timestamps and offsets, for every codec.
#[test]
fn v2_to_v1_to_v2_round_trip() {
    for codec in [
        WireCompression::None,
        WireCompression::Gzip,
        WireCompression::Snappy,
        WireCompression::Lz4,
        WireCompression::Zstd,
    ] {
        let mut stored = records::encode_batch(&v2_records(500), codec)
            .unwrap()
            .to_vec();
        stored.extend_from_slice(&records::encode_batch(&v2_records(503), codec).unwrap());
        let stored = Bytes::from(stored);
        for keep in [true, false] {
            let v1 = down(&stored, 1, keep);
            let parsed = parse(&v1).unwrap();
            assert_eq!(parsed.len(), 6);
            let wrapped = keep && !matches!(codec, WireCompression::None | WireCompression::Zstd);
            let expect = if wrapped {
                Compression::from(codec)
            } else {
                Compression::None
            };
            assert!(
                parsed
                    .iter()
                    .all(|m| m.magic == 1 && m.compression == expect),
                "{codec:?}"
            );
            let up = message_set_to_batch(&v1, &up_opts(OffsetAssignment::Preserve)).unwrap();
            let back = records::decode_batches(&up.batch).unwrap();
            let mut want = v2_records(500);
            want.extend(v2_records(503));
            assert_eq!(back.len(), want.len());
            for (b, w) in back.iter().zip(&want) {
                assert_eq!(
                    (b.offset, b.timestamp, &b.key, &b.value),
                    (w.offset, w.timestamp, &w.key, &w.value),
                    "{codec:?}"
                );
            }
        }
    }
}

#[test]
fn v2_to_v0_drops_timestamps_and_keeps_absolute_offsets() {
    for codec in [
        WireCompression::None,
        WireCompression::Gzip,
        WireCompression::Snappy,
        WireCompression::Lz4,
    ] {
        let stored = records::encode_batch(&v2_records(42), codec).unwrap();
        let v0 = down(&stored, 0, true);
        let parsed = parse(&v0).unwrap();
        assert_eq!(
            parsed.iter().map(|m| m.offset).collect::<Vec<_>>(),
            [42, 43, 44],
            "{codec:?}"
        );
        assert!(parsed
            .iter()
            .all(|m| m.magic == 0 && m.timestamp == NO_TIMESTAMP));
        if codec == WireCompression::None {
            assert_eq!(
                entry_len(&v0).unwrap(),
                Some(LOG_OVERHEAD + MESSAGE_V0_MIN + 4)
            );
        } else {
            // One wrapper, whose offset is the last inner offset.
            assert_eq!(be_i64(&v0), 44);
            assert_eq!(entry_len(&v0).unwrap(), Some(v0.len()));
        }
    }
}

#[test]
fn down_conversion_skips_control_and_partial_batches() {
    let data = records::encode_batch(&v2_records(0), WireCompression::None).unwrap();
    let mut control = v2_records(3);
    control.truncate(1);
    control[0].control = true;
    control[0].producer_id = 7;
    let control = records::encode_batch(&control, WireCompression::None).unwrap();
    let tail = records::encode_batch(&v2_records(4), WireCompression::Gzip).unwrap();
    let mut stored = data.to_vec();
    stored.extend_from_slice(&control);
    stored.extend_from_slice(&tail[..tail.len() / 2]);
    let v1 = down(&Bytes::from(stored), 1, true);
    let parsed = parse(&v1).unwrap();
    assert_eq!(
        parsed.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[test]
fn partial_first_batch_becomes_an_oversize_marker() {
    let stored = records::encode_batch(&v2_records(70), WireCompression::None).unwrap();
    let partial = stored.slice(..stored.len() - 1);
    let v1 = down(&partial, 1, true);
    // offset 70, then the batch's size: more than the client got, so it knows to grow.
    assert_eq!(v1.len(), LOG_OVERHEAD);
    assert_eq!(be_i64(&v1), 70);
    assert_eq!(be_i32(&v1[8..]) as usize, stored.len() - LOG_OVERHEAD);
    assert_eq!(entry_len(&v1).unwrap(), None, "a partial entry");
    let opts = ParseOptions {
        max_decompressed_bytes: LIMIT,
        allow_partial_trailing: true,
    };
    assert!(parse_message_set(&v1, &opts).unwrap().is_empty());
    // Too short to read even the header: nothing.
    assert!(down(&stored.slice(..20), 1, true).is_empty());
    // A complete batch first: no marker.
    let mut two = stored.to_vec();
    two.extend_from_slice(&partial);
    assert_eq!(parse(&down(&Bytes::from(two), 0, true)).unwrap().len(), 3);
}

#[test]
fn down_conversion_carries_log_append_time() {
    let mut stored = records::encode_batch(&v2_records(0), WireCompression::Snappy)
        .unwrap()
        .to_vec();
    record_batch::set_log_append_time(&mut stored, 4242);
    let v1 = down(&Bytes::from(stored), 1, true);
    let parsed = parse(&v1).unwrap();
    assert!(parsed
        .iter()
        .all(|m| m.timestamp == 4242 && m.timestamp_type == TimestampType::LogAppend));
}

#[test]
fn detects_legacy_sets() {
    assert!(is_legacy(&hex(V0_VECTOR)));
    assert!(is_legacy(&hex(V1_VECTOR)));
    assert!(!is_legacy(
        &records::encode_batch(&v2_records(0), WireCompression::None).unwrap()
    ));
    assert!(!is_legacy(&[0u8; 3]));
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300), partial: bool) {
        let opts = ParseOptions { max_decompressed_bytes: 1 << 16, allow_partial_trailing: partial };
        let _ = parse_message_set(&Bytes::from(data.clone()), &opts);
        let _ = message_set_to_batch(&Bytes::from(data.clone()), &up_opts(OffsetAssignment::Preserve));
        let _ = batches_to_message_set(&Bytes::from(data), &DownConvertOptions { magic: 1, max_decompressed_bytes: 1 << 16, keep_compression: true });
    }

    /// Garbage inside a CRC-valid wrapper reaches the decompressors and inner parser.
    #[test]
    fn wrapper_garbage_never_panics(inner in proptest::collection::vec(proptest::num::u8::ANY, 0..200), codec in 1i8..4, magic in 0i8..2) {
        let _ = parse(&msg(0, magic, codec, 0, None, Some(&inner)));
    }

    #[test]
    fn round_trips_arbitrary_messages(
        values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..40)), 1..20),
        ts in 0i64..1 << 45, base in 0i64..1 << 40,
    ) {
        let mut set = Vec::new();
        for (i, v) in values.iter().enumerate() {
            set.extend(msg(base + i as i64, 1, 0, ts + i as i64, v.as_deref(), v.as_deref()));
        }
        let up = message_set_to_batch(&Bytes::from(set), &up_opts(OffsetAssignment::Preserve)).unwrap();
        let back = parse(&down(&up.batch, 1, true)).unwrap();
        proptest::prop_assert_eq!(back.len(), values.len());
        for (i, (m, v)) in back.iter().zip(&values).enumerate() {
            proptest::prop_assert_eq!(m.offset, base + i as i64);
            proptest::prop_assert_eq!(m.timestamp, ts + i as i64);
            proptest::prop_assert_eq!(m.value.as_deref(), v.as_deref());
        }
    }
}
