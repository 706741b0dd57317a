//! The client against a scripted in-process broker: leader errors are retried after a
//! metadata refresh, within a bounded budget, and OFFSET_OUT_OF_RANGE is reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchRequest, FetchResponse, ListOffsetsResponse,
    MetadataResponse, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kavka_client::producer::encode_batch;
use kavka_client::{
    ClientConfig, Compression, Consumer, ConsumerConfig, OffsetSpec, Producer, ProducerConfig,
    ProducerRecord,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOPIC_ID: uuid::Uuid = uuid::Uuid::from_u128(0x1234);

#[derive(Default)]
struct Script {
    /// Produce / Fetch requests answered with NOT_LEADER_OR_FOLLOWER before succeeding.
    produce_failures: u32,
    fetch_failures: u32,
    /// Fetch answers OFFSET_OUT_OF_RANGE.
    out_of_range: bool,
    metadata_requests: u32,
    produce_requests: u32,
    fetch_requests: u32,
}

struct FakeBroker {
    addr: String,
    script: Arc<Mutex<Script>>,
}

impl FakeBroker {
    async fn start(script: Script) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(script));
        let shared = script.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, addr.port(), shared.clone()));
            }
        });
        FakeBroker {
            addr: addr.to_string(),
            script,
        }
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.addr).unwrap();
        c.retry_backoff = Duration::from_millis(1);
        c.max_retry_backoff = Duration::from_millis(5);
        c.connection.request_timeout = Duration::from_secs(5);
        c
    }
}

async fn serve(mut sock: TcpStream, port: u16, script: Arc<Mutex<Script>>) {
    loop {
        let mut prefix = [0u8; 4];
        if sock.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let Ok(len) = kavka_protocol::frame::frame_len(
            prefix,
            kavka_protocol::frame::DEFAULT_MAX_REQUEST_BYTES,
        ) else {
            return;
        };
        let mut payload = vec![0u8; len];
        if sock.read_exact(&mut payload).await.is_err() {
            return;
        }
        let (api, header, mut body) =
            kavka_protocol::frame::decode_request_header(Bytes::from(payload)).unwrap();
        let v = header.request_api_version;
        let mut out = BytesMut::new();
        match api {
            ApiKey::ApiVersions => {
                let keys = kavka_protocol::api_versions::SUPPORTED
                    .iter()
                    .map(|(k, lo, hi)| {
                        ApiVersion::default()
                            .with_api_key(*k as i16)
                            .with_min_version(*lo)
                            .with_max_version(*hi)
                    })
                    .collect();
                ApiVersionsResponse::default()
                    .with_api_keys(keys)
                    .encode(&mut out, v)
                    .unwrap();
            }
            ApiKey::Metadata => {
                script.lock().unwrap().metadata_requests += 1;
                MetadataResponse::default()
                    .with_brokers(vec![MetadataResponseBroker::default()
                        .with_node_id(1.into())
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(port as i32)])
                    .with_controller_id(1.into())
                    .with_topics(vec![MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                        .with_topic_id(TOPIC_ID)
                        .with_partitions(vec![MetadataResponsePartition::default()
                            .with_partition_index(0)
                            .with_leader_id(1.into())
                            .with_replica_nodes(vec![1.into()])
                            .with_isr_nodes(vec![1.into()])])])
                    .encode(&mut out, v)
                    .unwrap();
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut body, v).unwrap();
                let error_code = {
                    let mut s = script.lock().unwrap();
                    s.produce_requests += 1;
                    if s.produce_failures > 0 {
                        s.produce_failures -= 1;
                        6
                    } else {
                        0
                    }
                };
                let topic = &req.topic_data[0];
                ProduceResponse::default()
                    .with_responses(vec![TopicProduceResponse::default()
                        .with_name(topic.name.clone())
                        .with_topic_id(topic.topic_id)
                        .with_partition_responses(vec![PartitionProduceResponse::default()
                            .with_index(0)
                            .with_error_code(error_code)
                            .with_base_offset(if error_code == 0 { 42 } else { -1 })])])
                    .encode(&mut out, v)
                    .unwrap();
            }
            ApiKey::ListOffsets => {
                ListOffsetsResponse::default()
                    .with_topics(vec![ListOffsetsTopicResponse::default()
                        .with_name(TopicName(StrBytes::from_static_str("t")))
                        .with_partitions(vec![ListOffsetsPartitionResponse::default()
                            .with_partition_index(0)
                            .with_offset(0)])])
                    .encode(&mut out, v)
                    .unwrap();
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut body, v).unwrap();
                let offset = req.topics[0].partitions[0].fetch_offset;
                let (error_code, records) = {
                    let mut s = script.lock().unwrap();
                    s.fetch_requests += 1;
                    if s.out_of_range {
                        (1, None)
                    } else if s.fetch_failures > 0 {
                        s.fetch_failures -= 1;
                        (6, None)
                    } else if offset == 0 {
                        let records: Vec<_> = (0..3)
                            .map(|i| ProducerRecord::new("t", format!("v{i}")).with_key("k"))
                            .collect();
                        (
                            0,
                            Some(encode_batch(&records, Compression::Snappy, 5).unwrap()),
                        )
                    } else {
                        (0, Some(Bytes::new()))
                    }
                };
                FetchResponse::default()
                    .with_responses(vec![FetchableTopicResponse::default()
                        .with_topic(TopicName(StrBytes::from_static_str("t")))
                        .with_topic_id(TOPIC_ID)
                        .with_partitions(vec![PartitionData::default()
                            .with_partition_index(0)
                            .with_error_code(error_code)
                            .with_high_watermark(3)
                            .with_records(records)])])
                    .encode(&mut out, v)
                    .unwrap();
            }
            other => panic!("fake broker got {other:?}"),
        }
        let mut head = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(header.correlation_id)
            .encode(&mut head, api.response_header_version(v))
            .unwrap();
        let len = (head.len() + out.len()) as i32;
        if sock.write_all(&len.to_be_bytes()).await.is_err()
            || sock.write_all(&head).await.is_err()
            || sock.write_all(&out).await.is_err()
        {
            return;
        }
    }
}

fn record() -> ProducerRecord {
    ProducerRecord::new("t", "value").with_key("key")
}

#[tokio::test]
async fn produce_retries_not_leader_after_refreshing_metadata() {
    let broker = FakeBroker::start(Script {
        produce_failures: 2,
        ..Default::default()
    })
    .await;
    let mut producer = Producer::connect(broker.config(), ProducerConfig::default())
        .await
        .unwrap();
    producer.send(record()).await.unwrap();
    let acks = producer.flush().await.unwrap();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].base_offset, 42);
    let s = broker.script.lock().unwrap();
    assert_eq!(s.produce_requests, 3);
    assert!(
        s.metadata_requests >= 3,
        "refreshed after each NOT_LEADER_OR_FOLLOWER"
    );
}

#[tokio::test]
async fn produce_gives_up_after_the_retry_budget() {
    let broker = FakeBroker::start(Script {
        produce_failures: 1000,
        ..Default::default()
    })
    .await;
    let config = broker.config();
    let retries = config.retries;
    let mut producer = Producer::connect(config, ProducerConfig::default())
        .await
        .unwrap();
    producer.send(record()).await.unwrap();
    let err = producer.flush().await.unwrap_err();
    assert_eq!(err.code(), Some(6), "{err}");
    assert!(err.to_string().contains("NOT_LEADER_OR_FOLLOWER"), "{err}");
    assert_eq!(broker.script.lock().unwrap().produce_requests, retries + 1);
}

#[tokio::test]
async fn fetch_follows_leader_errors_and_decodes_compressed_batches() {
    let broker = FakeBroker::start(Script {
        fetch_failures: 2,
        ..Default::default()
    })
    .await;
    let mut consumer = Consumer::connect(broker.config(), ConsumerConfig::default())
        .await
        .unwrap();
    consumer
        .assign("t", &[0], OffsetSpec::Earliest)
        .await
        .unwrap();
    let mut records = Vec::new();
    for _ in 0..10 {
        records.extend(consumer.poll().await.unwrap());
        if records.len() >= 3 {
            break;
        }
    }
    let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values, ["v0", "v1", "v2"]);
    assert_eq!(consumer.position("t", 0), Some(3));
    assert_eq!(broker.script.lock().unwrap().fetch_requests, 3);
}

#[tokio::test]
async fn offset_out_of_range_is_reported() {
    let broker = FakeBroker::start(Script {
        out_of_range: true,
        ..Default::default()
    })
    .await;
    let mut consumer = Consumer::connect(broker.config(), ConsumerConfig::default())
        .await
        .unwrap();
    consumer
        .assign("t", &[0], OffsetSpec::Offset(100))
        .await
        .unwrap();
    let err = consumer.poll().await.unwrap_err();
    assert_eq!(err.code(), Some(1));
    assert!(
        err.to_string()
            .contains("offset 100 is out of range for partition t-0"),
        "{err}"
    );
}

#[tokio::test]
async fn fetch_gives_up_when_the_leader_never_comes_back() {
    let broker = FakeBroker::start(Script {
        fetch_failures: 1000,
        ..Default::default()
    })
    .await;
    let config = broker.config();
    let retries = config.retries;
    let mut consumer = Consumer::connect(config, ConsumerConfig::default())
        .await
        .unwrap();
    consumer
        .assign("t", &[0], OffsetSpec::Earliest)
        .await
        .unwrap();
    let mut polls = 0;
    let err = loop {
        polls += 1;
        assert!(polls < 50, "the retry budget must end the loop");
        match consumer.poll().await {
            Ok(records) => assert!(records.is_empty()),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Some(6), "{err}");
    assert_eq!(broker.script.lock().unwrap().fetch_requests, retries + 1);
}
