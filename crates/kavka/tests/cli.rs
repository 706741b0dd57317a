//! End-to-end: the real `kavka server` on a free port, driven by the real `kavka topics`,
//! `console-producer` and `console-consumer` binaries. Every wait is bounded; the broker is
//! killed when the test ends, pass or fail.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kavka_client::partitioner::partition_for_key;

const KAVKA: &str = env!("CARGO_BIN_EXE_kavka");
const STARTUP: Duration = Duration::from_secs(30);
const TOOL_DEADLINE: Duration = Duration::from_secs(60);

/// A running broker; killed on drop.
struct Broker {
    child: Child,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(KAVKA)
            .arg("server")
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{port}"))
            .arg("--override")
            .arg(format!("log.dirs={}", dir.path().join("data").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn kavka server");
        let mut broker = Broker {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            if TcpStream::connect_timeout(
                &broker.bootstrap.parse().unwrap(),
                Duration::from_secs(1),
            )
            .is_ok()
            {
                return broker;
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("kavka server exited with {status}: {}", broker.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "kavka server did not listen within {STARTUP:?}: {}",
                    broker.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `kavka <tool> --bootstrap-server <broker> args...` with `stdin`.
    fn tool(&self, tool: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut argv = vec![tool, "--bootstrap-server", &self.bootstrap];
        argv.extend_from_slice(args);
        run(&argv, stdin)
    }

    /// Like [`Broker::tool`], but the run must succeed; returns stdout.
    fn ok(&self, tool: &str, args: &[&str], stdin: &[u8]) -> String {
        let out = self.tool(tool, args, stdin);
        assert!(
            out.status.success(),
            "kavka {tool} {args:?} failed: {}\nbroker log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// The run must fail with exactly one line on stderr, which is returned.
    fn fails(&self, tool: &str, args: &[&str]) -> String {
        let out = self.tool(tool, args, b"");
        assert!(!out.status.success(), "kavka {tool} {args:?} should fail");
        let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
        assert_eq!(
            stderr.lines().count(),
            1,
            "one line of error, got: {stderr:?}"
        );
        stderr
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Runs the binary with a wall-clock deadline; a hung tool is killed and fails the test.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(KAVKA)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kavka");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + TOOL_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kavka {args:?} did not finish within {TOOL_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn describe_header(out: &str) -> &str {
    out.lines().next().unwrap_or_default()
}

#[test]
fn topics_create_list_describe_alter_delete() {
    let broker = Broker::start();
    let created = broker.ok(
        "topics",
        &[
            "--create",
            "--topic",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=3600000",
        ],
        b"",
    );
    assert_eq!(created, "Created topic orders.\n");

    let err = broker.fails(
        "topics",
        &["--create", "--topic", "orders", "--partitions", "3"],
    );
    assert!(err.contains("TOPIC_ALREADY_EXISTS"), "{err}");
    broker.ok(
        "topics",
        &["--create", "--topic", "orders", "--if-not-exists"],
        b"",
    );

    let list = broker.ok("topics", &["--list"], b"");
    assert!(list.lines().any(|l| l == "orders"), "{list}");

    let described = broker.ok("topics", &["--describe", "--topic", "orders"], b"");
    let header = describe_header(&described);
    assert!(header.starts_with("Topic: orders\tTopicId: "), "{header}");
    assert!(
        header.contains("\tPartitionCount: 3\tReplicationFactor: 1\tConfigs: "),
        "{header}"
    );
    assert!(header.contains("retention.ms=3600000"), "{header}");
    let partitions: Vec<&str> = described.lines().skip(1).collect();
    assert_eq!(partitions.len(), 3, "{described}");
    for (i, line) in partitions.iter().enumerate() {
        let prefix = format!("\tTopic: orders\tPartition: {i}\tLeader: ");
        assert!(line.starts_with(&prefix), "{line}");
        assert!(
            line.contains("\tReplicas: ") && line.contains("\tIsr: "),
            "{line}"
        );
    }

    broker.ok(
        "topics",
        &["--alter", "--topic", "orders", "--partitions", "5"],
        b"",
    );
    broker.ok(
        "topics",
        &[
            "--alter",
            "--topic",
            "orders",
            "--config",
            "cleanup.policy=compact",
        ],
        b"",
    );
    let described = broker.ok("topics", &["--describe", "--topic", "orders"], b"");
    assert!(
        describe_header(&described).contains("PartitionCount: 5"),
        "{described}"
    );
    assert!(
        describe_header(&described).contains("cleanup.policy=compact"),
        "{described}"
    );
    assert_eq!(described.lines().count(), 6);

    let err = broker.fails(
        "topics",
        &["--alter", "--topic", "orders", "--partitions", "2"],
    );
    assert!(err.contains("INVALID_PARTITIONS"), "{err}");

    broker.ok("topics", &["--delete", "--topic", "orders"], b"");
    let list = broker.ok("topics", &["--list"], b"");
    assert!(!list.lines().any(|l| l == "orders"), "{list}");
    let err = broker.fails("topics", &["--delete", "--topic", "orders"]);
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
    broker.ok(
        "topics",
        &["--delete", "--topic", "orders", "--if-exists"],
        b"",
    );
    let err = broker.fails("topics", &["--describe", "--topic", "orders"]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn console_producer_then_consumer_round_trip_with_keys() {
    let broker = Broker::start();
    let partitions = 4;
    broker.ok(
        "topics",
        &[
            "--create",
            "--topic",
            "events",
            "--partitions",
            &partitions.to_string(),
        ],
        b"",
    );
    let n = 2000;
    let input: String = (0..n)
        .map(|i| format!("key{}:value{i}\n", i % 50))
        .collect();
    broker.ok(
        "console-producer",
        &[
            "--topic",
            "events",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
            "--producer-property",
            "acks=all",
            "--compression-codec",
            "lz4",
        ],
        input.as_bytes(),
    );

    let out = broker.ok(
        "console-consumer",
        &[
            "--topic",
            "events",
            "--from-beginning",
            "--max-messages",
            &n.to_string(),
            "--timeout-ms",
            "20000",
            "--property",
            "print.key=true",
            "--property",
            "print.partition=true",
            "--property",
            "print.offset=true",
            "--property",
            "key.separator=|",
        ],
        b"",
    );
    let mut seen = vec![false; n];
    let mut last_offset = vec![-1i64; partitions as usize];
    let mut last_value_of_key = std::collections::HashMap::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 4, "{line}");
        let partition: i32 = fields[0]
            .strip_prefix("Partition:")
            .unwrap()
            .parse()
            .unwrap();
        let offset: i64 = fields[1].strip_prefix("Offset:").unwrap().parse().unwrap();
        let (key, value) = (fields[2], fields[3]);
        // Keys land where Java's default partitioner puts them.
        assert_eq!(
            partition,
            partition_for_key(key.as_bytes(), partitions),
            "{line}"
        );
        // Offsets grow within a partition, and so do values of one key.
        let p = partition as usize;
        assert!(offset > last_offset[p], "{line}");
        last_offset[p] = offset;
        let i: usize = value.strip_prefix("value").unwrap().parse().unwrap();
        assert_eq!(key, format!("key{}", i % 50));
        if let Some(prev) = last_value_of_key.insert(key.to_string(), i) {
            assert!(i > prev, "order of key {key}: {prev} then {i}");
        }
        assert!(!seen[i], "duplicate {line}");
        seen[i] = true;
    }
    assert!(seen.iter().all(|s| *s), "every record came back");

    // One partition from an explicit offset.
    let p = partition_for_key(b"key7", partitions);
    let out = broker.ok(
        "console-consumer",
        &[
            "--topic",
            "events",
            "--partition",
            &p.to_string(),
            "--offset",
            "1",
            "--max-messages",
            "3",
            "--timeout-ms",
            "20000",
            "--property",
            "print.offset=true",
        ],
        b"",
    );
    let offsets: Vec<&str> = out
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default())
        .collect();
    assert_eq!(offsets, ["Offset:1", "Offset:2", "Offset:3"], "{out}");

    let err = broker.fails(
        "console-consumer",
        &[
            "--topic",
            "events",
            "--partition",
            "0",
            "--offset",
            "999999",
            "--timeout-ms",
            "20000",
        ],
    );
    assert!(err.contains("OFFSET_OUT_OF_RANGE"), "{err}");

    // A key separator missing on a line is an error naming the line.
    let out = broker.tool(
        "console-producer",
        &["--topic", "events", "--property", "parse.key=true"],
        b"k\tv\nno separator\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
}

#[test]
fn unreachable_broker_is_one_line_error() {
    let port = free_port();
    let out = run(
        &[
            "topics",
            "--bootstrap-server",
            &format!("127.0.0.1:{port}"),
            "--list",
        ],
        b"",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("Error: cannot connect to 127.0.0.1:"),
        "{stderr}"
    );
    assert!(Path::new(KAVKA).exists());
}

/// The client itself, end to end, at three generations of every API: the oldest version
/// both kavka and the codecs know, the last non-flexible one, and the newest.
#[test]
fn client_round_trip_at_old_and_new_versions() {
    use kavka_client::{
        AlterConfigOp, ClientConfig, Compression, Consumer, ConsumerConfig, NewTopic, OffsetSpec,
        Producer, ProducerConfig, ProducerRecord,
    };
    use kavka_protocol::kafka_protocol::messages::ApiKey;
    use std::collections::HashMap;

    let broker = Broker::start();
    let floor: &[(ApiKey, i16)] = &[
        (ApiKey::ApiVersions, 0),
        (ApiKey::Metadata, 0),
        (ApiKey::Produce, 3),
        (ApiKey::Fetch, 4),
        (ApiKey::ListOffsets, 1),
        (ApiKey::CreateTopics, 2),
        (ApiKey::DeleteTopics, 1),
        (ApiKey::DescribeConfigs, 1),
        (ApiKey::CreatePartitions, 0),
        (ApiKey::IncrementalAlterConfigs, 0),
    ];
    let last_rigid: &[(ApiKey, i16)] = &[
        (ApiKey::ApiVersions, 2),
        (ApiKey::Metadata, 8),
        (ApiKey::Produce, 8),
        (ApiKey::Fetch, 11),
        (ApiKey::ListOffsets, 5),
        (ApiKey::CreateTopics, 4),
        (ApiKey::DeleteTopics, 3),
        (ApiKey::DescribeConfigs, 3),
        (ApiKey::CreatePartitions, 1),
        (ApiKey::IncrementalAlterConfigs, 0),
    ];
    let generations: [(&str, &[(ApiKey, i16)]); 3] = [
        ("floor", floor),
        ("last-rigid", last_rigid),
        ("newest", &[]),
    ];

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (generation, caps) in generations {
        let topic = format!("gen-{generation}");
        let mut config = ClientConfig::new(&broker.bootstrap).unwrap();
        config.connection.request_timeout = Duration::from_secs(5);
        config.connection.max_versions = caps
            .iter()
            .map(|(k, v)| (*k as i16, *v))
            .collect::<HashMap<_, _>>();
        runtime.block_on(async {
            let mut admin = kavka_client::Admin::connect(config.clone()).await.unwrap();
            admin
                .create_topic(NewTopic {
                    name: topic.clone(),
                    partitions: Some(2),
                    replication_factor: Some(1),
                    configs: vec![("retention.ms".into(), "3600000".into())],
                })
                .await
                .unwrap_or_else(|e| panic!("{generation}: create: {e}"));
            admin
                .create_partitions(&topic, 3)
                .await
                .unwrap_or_else(|e| panic!("{generation}: {e}"));
            admin
                .incremental_alter_configs(
                    &topic,
                    &[AlterConfigOp::Set(
                        "retention.bytes".into(),
                        "1000000".into(),
                    )],
                )
                .await
                .unwrap_or_else(|e| panic!("{generation}: alter: {e}"));
            let d = admin
                .describe_topics(&[topic.as_str()])
                .await
                .unwrap()
                .remove(0);
            assert_eq!(d.partitions.len(), 3, "{generation}");
            let value = |k: &str| {
                d.configs
                    .iter()
                    .find(|c| c.name == k)
                    .and_then(|c| c.value.clone())
            };
            assert_eq!(
                value("retention.ms").as_deref(),
                Some("3600000"),
                "{generation}"
            );
            assert_eq!(
                value("retention.bytes").as_deref(),
                Some("1000000"),
                "{generation}"
            );
            assert!(admin.list_topics(false).await.unwrap().contains(&topic));

            let producer_config = ProducerConfig {
                compression: Compression::Gzip,
                batch_size: 512,
                ..Default::default()
            };
            let mut producer = Producer::connect(config.clone(), producer_config)
                .await
                .unwrap();
            for i in 0..100 {
                let mut r = ProducerRecord::new(topic.clone(), format!("v{i}"))
                    .with_key(format!("k{}", i % 10));
                r.headers = vec![("n".into(), Some(i.to_string().into()))];
                producer
                    .send(r)
                    .await
                    .unwrap_or_else(|e| panic!("{generation}: send: {e}"));
            }
            let acks = producer
                .flush()
                .await
                .unwrap_or_else(|e| panic!("{generation}: flush: {e}"));
            assert_eq!(
                acks.iter().map(|a| a.record_count).sum::<usize>(),
                100,
                "{generation}"
            );

            let mut consumer = Consumer::connect(config.clone(), ConsumerConfig::default())
                .await
                .unwrap();
            let ends = consumer
                .list_offsets(&topic, &[0, 1, 2], OffsetSpec::Latest)
                .await
                .unwrap_or_else(|e| panic!("{generation}: list offsets: {e}\n{}", broker.log()));
            assert_eq!(
                ends.iter().map(|(_, o)| o).sum::<i64>(),
                100,
                "{generation}: {ends:?}"
            );
            let starts = consumer
                .list_offsets(&topic, &[0, 1, 2], OffsetSpec::Timestamp(0))
                .await
                .unwrap();
            assert!(
                starts.iter().all(|(_, o)| *o == 0),
                "{generation}: {starts:?}"
            );
            consumer
                .assign(&topic, &[0, 1, 2], OffsetSpec::Earliest)
                .await
                .unwrap();
            let mut records = Vec::new();
            for _ in 0..100 {
                if records.len() >= 100 {
                    break;
                }
                records.extend(
                    consumer
                        .poll()
                        .await
                        .unwrap_or_else(|e| panic!("{generation}: poll: {e}")),
                );
            }
            assert_eq!(records.len(), 100, "{generation}");
            for r in &records {
                let key = r.key.as_deref().unwrap();
                assert_eq!(r.partition, partition_for_key(key, 3), "{generation}");
                let i: usize = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap()[1..]
                    .parse()
                    .unwrap();
                assert_eq!(key, format!("k{}", i % 10).as_bytes());
                assert_eq!(
                    r.headers,
                    vec![("n".to_string(), Some(i.to_string().into()))]
                );
            }
            admin
                .delete_topic(&topic)
                .await
                .unwrap_or_else(|e| panic!("{generation}: delete: {e}"));
        });
    }
}
