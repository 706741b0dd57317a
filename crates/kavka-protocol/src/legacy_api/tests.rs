use super::*;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::records::Compression as WireCompression;

use crate::legacy_message_set::{parse_message_set, ParseOptions};
use crate::records;

fn hex(s: &str) -> Bytes {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

/// Magic 0, offset 7, value "a" (see legacy_message_set tests): 27 bytes.
const MESSAGE: &str = "0000000000000007 0000000f 51df3a32 00 00 ffffffff 00000001 61";

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

#[test]
fn decodes_produce_request_v0_to_v2() {
    let body = hex(&format!(
        "0001 000003e8 00000001 0001 74 00000001 00000000 0000001b {MESSAGE}"
    ));
    for version in 0..=2 {
        let req = decode_produce_request_v0_2(body.clone(), version).unwrap();
        assert_eq!(
            (req.acks, req.timeout_ms, req.transactional_id.clone()),
            (1, 1000, None)
        );
        assert_eq!(req.topic_data.len(), 1);
        assert_eq!(&*req.topic_data[0].name.0, "t");
        let p = &req.topic_data[0].partition_data[0];
        assert_eq!(p.index, 0);
        assert_eq!(p.records.as_deref(), Some(&hex(MESSAGE)[..]));
    }
    assert_eq!(
        decode_produce_request_v0_2(body, 3),
        Err(LegacyApiError::UnsupportedVersion(3))
    );
}

#[test]
fn rejects_malformed_produce_requests() {
    // Truncated records.
    let body = hex("0001 000003e8 00000001 0001 74 00000001 00000000 0000001b 00");
    assert!(matches!(
        decode_produce_request_v0_2(body, 0),
        Err(LegacyApiError::Truncated {
            field: "records",
            ..
        })
    ));
    // Absurd topic count: rejected before anything is reserved.
    let body = hex("0001 000003e8 7fffffff 0001 74");
    assert!(matches!(
        decode_produce_request_v0_2(body, 0),
        Err(LegacyApiError::InvalidLength {
            field: "topic_data",
            ..
        })
    ));
    // Invalid UTF-8 topic name.
    let body = hex("0001 000003e8 00000001 0001 ff 00000000");
    assert_eq!(
        decode_produce_request_v0_2(body, 1),
        Err(LegacyApiError::InvalidUtf8("topic name"))
    );
    // Null topic name.
    let body = hex("0001 000003e8 00000001 ffff 00000000");
    assert!(matches!(
        decode_produce_request_v0_2(body, 1),
        Err(LegacyApiError::UnexpectedNull { .. })
    ));
    // Negative records length other than -1.
    let body = hex("0001 000003e8 00000001 0001 74 00000001 00000000 fffffffe");
    assert!(matches!(
        decode_produce_request_v0_2(body, 2),
        Err(LegacyApiError::InvalidLength { len: -2, .. })
    ));
}

fn produce_response() -> ProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = 0;
    p.base_offset = 5;
    let mut t = TopicProduceResponse::default();
    t.name = topic("t");
    t.partition_responses = vec![p];
    let mut resp = ProduceResponse::default();
    resp.responses = vec![t];
    resp.throttle_time_ms = 100;
    resp
}

#[test]
fn encodes_produce_response_each_version() {
    let resp = produce_response();
    let expect = [
        "00000001 0001 74 00000001 00000000 0000 0000000000000005",
        "00000001 0001 74 00000001 00000000 0000 0000000000000005 00000064",
        "00000001 0001 74 00000001 00000000 0000 0000000000000005 ffffffffffffffff 00000064",
    ];
    for (version, want) in expect.iter().enumerate() {
        let mut out = BytesMut::new();
        encode_produce_response_v0_2(&resp, version as i16, &mut out).unwrap();
        assert_eq!(out.freeze(), hex(want), "v{version}");
    }
}

#[test]
fn decodes_fetch_request_v0_and_v3() {
    let tail = "00000001 0001 74 00000001 00000002 000000000000000a 00100000";
    for version in 0..=2 {
        let req =
            decode_fetch_request_v0_3(hex(&format!("ffffffff 000001f4 00000001 {tail}")), version)
                .unwrap();
        assert_eq!(
            (
                req.replica_id.0,
                req.max_wait_ms,
                req.min_bytes,
                req.max_bytes
            ),
            (-1, 500, 1, i32::MAX)
        );
        assert_eq!(
            (req.isolation_level, req.session_id, req.session_epoch),
            (0, 0, -1)
        );
        let p = &req.topics[0].partitions[0];
        assert_eq!(
            (p.partition, p.fetch_offset, p.partition_max_bytes),
            (2, 10, 1 << 20)
        );
        assert_eq!(&*req.topics[0].topic.0, "t");
    }
    let req = decode_fetch_request_v0_3(
        hex(&format!("ffffffff 000001f4 00000001 03200000 {tail}")),
        3,
    )
    .unwrap();
    assert_eq!(req.max_bytes, 52_428_800);
    assert_eq!(req.topics[0].partitions[0].fetch_offset, 10);
    // Absurd partition count.
    let bad = hex("ffffffff 000001f4 00000001 00000001 0001 74 10000000 00000002");
    assert!(matches!(
        decode_fetch_request_v0_3(bad, 0),
        Err(LegacyApiError::InvalidLength {
            field: "partitions",
            ..
        })
    ));
}

fn fetch_response(records: Bytes) -> FetchResponse {
    let mut p = PartitionData::default();
    p.partition_index = 2;
    p.high_watermark = 11;
    p.records = Some(records);
    let mut t = FetchableTopicResponse::default();
    t.topic = topic("t");
    t.partitions = vec![p];
    let mut resp = FetchResponse::default();
    resp.responses = vec![t];
    resp
}

#[test]
fn encodes_fetch_response_each_version() {
    let resp = fetch_response(hex(MESSAGE));
    let body =
        format!("00000001 0001 74 00000001 00000002 0000 000000000000000b 0000001b {MESSAGE}");
    for version in 0..=3 {
        let mut out = BytesMut::new();
        encode_fetch_response_v0_3(&resp, version, &mut out).unwrap();
        let want = if version == 0 {
            hex(&body)
        } else {
            hex(&format!("00000000 {body}"))
        };
        assert_eq!(out.freeze(), want, "v{version}");
    }
    // A null record set is written as an empty one.
    let mut resp = fetch_response(Bytes::new());
    resp.responses[0].partitions[0].records = None;
    let mut out = BytesMut::new();
    encode_fetch_response_v0_3(&resp, 0, &mut out).unwrap();
    assert_eq!(
        out.freeze(),
        hex("00000001 0001 74 00000001 00000002 0000 000000000000000b 00000000")
    );
}

#[test]
fn down_converts_fetch_responses_by_version() {
    let rec = |offset: i64| kafka_protocol::records::Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset,
        sequence: offset as i32 - 1,
        timestamp: 77,
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let stored = records::encode_batch(&[rec(9), rec(10)], WireCompression::Gzip).unwrap();
    let opts = ParseOptions {
        max_decompressed_bytes: 1 << 20,
        allow_partial_trailing: false,
    };
    for (version, magic) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
        let mut resp = fetch_response(stored.clone());
        down_convert_fetch_response(&mut resp, version, 1 << 20);
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let msgs = parse_message_set(p.records.as_ref().unwrap(), &opts).unwrap();
        assert_eq!(
            msgs.iter().map(|m| (m.offset, m.magic)).collect::<Vec<_>>(),
            [(9, magic), (10, magic)],
            "v{version}"
        );
    }
    let mut resp = fetch_response(stored.clone());
    down_convert_fetch_response(&mut resp, 4, 1 << 20);
    assert_eq!(
        resp.responses[0].partitions[0].records.as_ref(),
        Some(&stored)
    );
    // Corrupt stored data: that partition errors, the response survives.
    let mut bad = stored.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut resp = fetch_response(Bytes::from(bad));
    down_convert_fetch_response(&mut resp, 0, 1 << 20);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, ErrorCode::CorruptMessage.code());
    assert_eq!(p.records.as_deref(), Some(&[][..]));
}

#[test]
fn list_offsets_v0_round_trip() {
    let body = hex("ffffffff 00000001 0001 74 00000001 00000000 ffffffffffffffff 00000001");
    let req = decode_list_offsets_request_v0(body).unwrap();
    assert_eq!(req.replica_id.0, -1);
    let p = &req.topics[0].partitions[0];
    assert_eq!(
        (p.partition_index, p.timestamp, p.current_leader_epoch),
        (0, -1, -1)
    );
    assert!(
        decode_list_offsets_request_v0(hex("ffffffff 00000001 0001 74 00000001 00000000")).is_err()
    );

    let mut ok = ListOffsetsPartitionResponse::default();
    ok.partition_index = 0;
    ok.offset = 42;
    let mut err = ListOffsetsPartitionResponse::default();
    err.partition_index = 1;
    err.error_code = ErrorCode::UnknownTopicOrPartition.code();
    let mut t = ListOffsetsTopicResponse::default();
    t.name = topic("t");
    t.partitions = vec![ok, err];
    let mut resp = ListOffsetsResponse::default();
    resp.topics = vec![t];
    let mut out = BytesMut::new();
    encode_list_offsets_response_v0(&resp, &mut out).unwrap();
    assert_eq!(
        out.freeze(),
        hex("00000001 0001 74 00000002 00000000 0000 00000001 000000000000002a 00000001 0003 00000000")
    );
}

#[test]
fn message_format_by_fetch_version() {
    assert_eq!(
        [0, 1, 2, 3, 4, 16].map(fetch_message_format),
        [0, 0, 1, 1, 2, 2]
    );
}

proptest::proptest! {
    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200), version in 0i16..4) {
        let b = Bytes::from(data);
        let _ = decode_produce_request_v0_2(b.clone(), version);
        let _ = decode_fetch_request_v0_3(b.clone(), version);
        let _ = decode_list_offsets_request_v0(b);
    }
}

/// The generated request-header codec handles the legacy versions (header v1), so a whole
/// payload goes frame → header → legacy body decoder.
#[test]
fn legacy_requests_pass_the_header_decoder() {
    for (api, version, body) in [
        (0i16, 0i16, "0001 000003e8 00000000"),
        (1, 3, "ffffffff 000001f4 00000001 03200000 00000000"),
        (2, 0, "ffffffff 00000000"),
    ] {
        // api key, version, correlation id 9, client id "c"
        let payload = hex(&format!("{api:04x} {version:04x} 00000009 0001 63 {body}"));
        let (key, header, rest) = crate::frame::decode_request_header(payload).unwrap();
        assert_eq!(
            (
                key as i16,
                header.request_api_version,
                header.correlation_id
            ),
            (api, version, 9)
        );
        assert_eq!(header.client_id.as_deref(), Some("c"));
        match api {
            0 => assert_eq!(
                decode_produce_request_v0_2(rest, version)
                    .unwrap()
                    .timeout_ms,
                1000
            ),
            1 => assert_eq!(
                decode_fetch_request_v0_3(rest, version).unwrap().max_bytes,
                52_428_800
            ),
            _ => assert!(decode_list_offsets_request_v0(rest)
                .unwrap()
                .topics
                .is_empty()),
        }
    }
}
