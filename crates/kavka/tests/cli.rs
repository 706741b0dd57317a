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
        Broker::start_with(&[])
    }

    /// A broker with extra `key=value` config overrides.
    fn start_with(overrides: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut command = Command::new(KAVKA);
        command
            .arg("server")
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{port}"))
            .arg("--override")
            .arg(format!("log.dirs={}", dir.path().join("data").display()));
        for o in overrides {
            command.arg("--override").arg(o);
        }
        let child = command
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

/// Group settings that keep the group tests short: no initial rebalance delay, a small
/// `__consumer_offsets`.
const GROUP_OVERRIDES: &[&str] = &[
    "group.initial.rebalance.delay.ms=0",
    "offsets.topic.num.partitions=4",
    "group.min.session.timeout.ms=1000",
];

/// A group member as a background `kavka console-consumer --group`; SIGTERM'd (commit and
/// leave) by [`Member::stop`], killed on drop.
struct Member {
    child: Option<Child>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Member {
    fn start(broker: &Broker, topic: &str, group: &str) -> Member {
        let mut child = Command::new(KAVKA)
            .args([
                "console-consumer",
                "--bootstrap-server",
                &broker.bootstrap,
                "--topic",
                topic,
                "--group",
                group,
                "--from-beginning",
                "--timeout-ms",
                "60000",
                "--property",
                "print.partition=true",
                "--consumer-property",
                "session.timeout.ms=6000",
                "--consumer-property",
                "heartbeat.interval.ms=500",
                "--consumer-property",
                "auto.commit.interval.ms=500",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn console-consumer");
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b);
            b
        });
        Member {
            child: Some(child),
            stdout: Some(stdout),
        }
    }

    /// SIGTERM, wait (bounded) for a clean exit, and return what it printed.
    fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + TOOL_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("console-consumer did not stop within {TOOL_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "console-consumer exited with {status}");
        let out = self
            .stdout
            .take()
            .expect("stdout")
            .join()
            .unwrap_or_default();
        String::from_utf8(out).expect("utf-8 output")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The rows of `--describe --group` output (after the blank line and the header), split
/// into their nine columns.
fn describe_rows(out: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("GROUP "));
    let header = lines.next().unwrap_or_default();
    assert!(
        header.split_whitespace().eq([
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID"
        ]),
        "{out}"
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Polls `--describe` (bounded) until `done` holds for its output; returns that output.
fn describe_until(broker: &Broker, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + TOOL_DEADLINE;
    loop {
        let out = broker.tool("consumer-groups", args, b"");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && done(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "consumer-groups {args:?} never showed what was awaited; last:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn committed_total(rows: &[Vec<String>]) -> i64 {
    rows.iter().filter_map(|r| r[3].parse::<i64>().ok()).sum()
}

#[test]
fn consumer_groups_describe_reset_and_delete() {
    let broker = Broker::start_with(GROUP_OVERRIDES);
    broker.ok(
        "topics",
        &["--create", "--topic", "orders", "--partitions", "3"],
        b"",
    );
    let input: String = (0..30).map(|i| format!("k{i}:v{i}\n")).collect();
    broker.ok(
        "console-producer",
        &[
            "--topic",
            "orders",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ],
        input.as_bytes(),
    );

    // A group member reads ten records, commits them and leaves.
    let out = broker.ok(
        "console-consumer",
        &[
            "--topic",
            "orders",
            "--group",
            "g1",
            "--from-beginning",
            "--max-messages",
            "10",
            "--timeout-ms",
            "30000",
        ],
        b"",
    );
    assert_eq!(out.lines().count(), 10, "{out}");

    let list = broker.ok("consumer-groups", &["--list"], b"");
    assert!(list.lines().any(|l| l == "g1"), "{list}");
    let list = broker.ok("consumer-groups", &["--list", "--state"], b"");
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().eq(["g1", "Empty"])),
        "{list}"
    );
    let list = broker.ok("consumer-groups", &["--list", "--state", "stable"], b"");
    assert!(!list.contains("g1"), "{list}");

    // Committed offsets and lag of an empty group.
    let out = broker.tool("consumer-groups", &["--describe", "--group", "g1"], b"");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Consumer group 'g1' has no active members."),
        "{stderr}"
    );
    let rows = describe_rows(&String::from_utf8_lossy(&out.stdout));
    assert!(!rows.is_empty());
    assert_eq!(committed_total(&rows), 10, "{rows:?}");
    let mut log_end_total = 0;
    for r in &rows {
        assert_eq!((r[0].as_str(), r[1].as_str()), ("g1", "orders"));
        let (current, end, lag): (i64, i64, i64) = (
            r[3].parse().unwrap(),
            r[4].parse().unwrap(),
            r[5].parse().unwrap(),
        );
        assert_eq!(lag, end - current, "{r:?}");
        assert_eq!(&r[6..], ["-", "-", "-"], "no owner: {r:?}");
        log_end_total += end;
    }
    assert!(log_end_total <= 30);

    // Reset: a dry run changes nothing; --execute does.
    let dry = broker.ok(
        "consumer-groups",
        &[
            "--reset-offsets",
            "--group",
            "g1",
            "--topic",
            "orders",
            "--to-earliest",
            "--dry-run",
        ],
        b"",
    );
    let new_offsets: Vec<Vec<&str>> = dry
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        new_offsets[0],
        ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]
    );
    assert_eq!(
        new_offsets[1..],
        [
            ["g1", "orders", "0", "0"],
            ["g1", "orders", "1", "0"],
            ["g1", "orders", "2", "0"]
        ]
    );
    // Every record is younger than a day: a day back is the log start.
    let by_duration = broker.ok(
        "consumer-groups",
        &[
            "--reset-offsets",
            "--group",
            "g1",
            "--all-topics",
            "--by-duration",
            "P1D",
            "--dry-run",
        ],
        b"",
    );
    let rows: Vec<Vec<&str>> = by_duration
        .lines()
        .filter(|l| l.starts_with("g1"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r[3] == "0"),
        "{by_duration}"
    );
    let out = broker.ok("consumer-groups", &["--describe", "--group", "g1"], b"");
    assert_eq!(committed_total(&describe_rows(&out)), 10, "dry run: {out}");

    broker.ok(
        "consumer-groups",
        &[
            "--reset-offsets",
            "--group",
            "g1",
            "--topic",
            "orders",
            "--to-latest",
            "--execute",
        ],
        b"",
    );
    let out = broker.ok("consumer-groups", &["--describe", "--group", "g1"], b"");
    let rows = describe_rows(&out);
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(committed_total(&rows), 30, "{out}");
    assert!(rows.iter().all(|r| r[5] == "0"), "no lag at the end: {out}");

    // Shift back on one partition, clamped at the log start; --to-offset past the end is
    // clamped to it.
    let out = broker.ok(
        "consumer-groups",
        &[
            "--reset-offsets",
            "--group",
            "g1",
            "--topic",
            "orders:0",
            "--shift-by",
            "-1000",
            "--execute",
        ],
        b"",
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["g1", "orders", "0", "0"])),
        "{out}"
    );
    let out = broker.ok(
        "consumer-groups",
        &[
            "--reset-offsets",
            "--group",
            "g1",
            "--all-topics",
            "--to-offset",
            "1000000",
            "--dry-run",
        ],
        b"",
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("g1")).count(),
        3,
        "{out}"
    );
    let rows = describe_rows(&broker.ok("consumer-groups", &["--describe", "--group", "g1"], b""));
    let lag: i64 = rows.iter().map(|r| r[5].parse::<i64>().unwrap()).sum();
    let p0_end: i64 = rows.iter().find(|r| r[2] == "0").unwrap()[4]
        .parse()
        .unwrap();
    assert_eq!(lag, p0_end, "only partition 0 lags, by all of it");

    // An active member: the group is Stable, described with its member, and refuses
    // resets and deletion.
    let member = Member::start(&broker, "orders", "g1");
    let out = describe_until(&broker, &["--describe", "--group", "g1"], |out| {
        let rows = describe_rows(out);
        rows.len() == 3 && rows.iter().all(|r| r[6] != "-" && r[5] == "0")
    });
    let rows = describe_rows(&out);
    assert!(rows.iter().all(|r| r[7].contains("127.0.0.1")), "{out}");
    let members = broker.ok(
        "consumer-groups",
        &["--describe", "--group", "g1", "--members", "--verbose"],
        b"",
    );
    let member_row: Vec<&str> = members.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(member_row[0], "g1");
    assert_eq!(member_row[5], "3", "{members}");
    assert_eq!(member_row[6], "orders(0,1,2)", "{members}");
    let state = broker.ok(
        "consumer-groups",
        &["--describe", "--group", "g1", "--state"],
        b"",
    );
    let state_row: Vec<&str> = state.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(state_row[0], "g1");
    assert_eq!(
        &state_row[state_row.len() - 3..],
        ["range", "Stable", "1"],
        "{state}"
    );

    let err = broker.fails(
        "consumer-groups",
        &[
            "--reset-offsets",
            "--group",
            "g1",
            "--topic",
            "orders",
            "--to-earliest",
            "--execute",
        ],
    );
    assert_eq!(
        err.trim_end(),
        "Error: Assignments can only be reset if the group 'g1' is inactive, but the current state is Stable."
    );
    let out = broker.tool("consumer-groups", &["--delete", "--group", "g1"], b"");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NON_EMPTY_GROUP"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let printed = member.stop();
    assert_eq!(
        printed.lines().count() as i64,
        p0_end,
        "partition 0 from offset 0: {printed}"
    );
    assert!(
        printed.lines().all(|l| l.starts_with("Partition:0\t")),
        "{printed}"
    );

    // It committed before leaving: Empty again, nothing to catch up on.
    let out = broker.tool("consumer-groups", &["--describe", "--group", "g1"], b"");
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no active members"));
    let rows = describe_rows(&String::from_utf8_lossy(&out.stdout));
    assert!(rows.iter().all(|r| r[5] == "0" && r[6] == "-"), "{rows:?}");

    // Offsets of one partition, then the whole group.
    let out = broker.ok(
        "consumer-groups",
        &["--delete-offsets", "--group", "g1", "--topic", "orders:0"],
        b"",
    );
    assert!(
        out.contains("Request succeed for deleting offsets with topic orders group g1"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["orders", "0", "Successful"])),
        "{out}"
    );
    let rows = describe_rows(&broker.ok("consumer-groups", &["--describe", "--group", "g1"], b""));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let out = broker.ok("consumer-groups", &["--delete", "--group", "g1"], b"");
    assert_eq!(
        out.trim_end(),
        "Deletion of requested consumer groups ('g1') was successful."
    );
    let err = broker.fails("consumer-groups", &["--describe", "--group", "g1"]);
    assert_eq!(err.trim_end(), "Error: Consumer group 'g1' does not exist.");
    let list = broker.ok("consumer-groups", &["--list"], b"");
    assert!(!list.lines().any(|l| l == "g1"), "{list}");
}

/// Two console consumers in one group split a six-partition topic with the client-side
/// range assignor: three partitions each, every record read exactly once between them.
#[test]
fn console_consumers_share_a_group() {
    let broker = Broker::start_with(GROUP_OVERRIDES);
    broker.ok(
        "topics",
        &["--create", "--topic", "shared", "--partitions", "6"],
        b"",
    );
    let first = Member::start(&broker, "shared", "g2");
    let second = Member::start(&broker, "shared", "g2");
    let members = describe_until(
        &broker,
        &["--describe", "--group", "g2", "--members", "--verbose"],
        |out| {
            let rows: Vec<Vec<&str>> = out
                .lines()
                .filter(|l| l.starts_with("g2 "))
                .map(|l| l.split_whitespace().collect())
                .collect();
            rows.len() == 2 && rows.iter().all(|r| r.get(5) == Some(&"3"))
        },
    );
    let assigned: Vec<&str> = members
        .lines()
        .filter(|l| l.starts_with("g2 "))
        .map(|l| l.split_whitespace().last().unwrap_or_default())
        .collect();
    let mut both = assigned.clone();
    both.sort_unstable();
    assert_eq!(both, ["shared(0,1,2)", "shared(3,4,5)"], "{members}");

    let n = 600;
    let input: String = (0..n).map(|i| format!("v{i}\n")).collect();
    broker.ok(
        "console-producer",
        &["--topic", "shared", "--producer-property", "acks=all"],
        input.as_bytes(),
    );
    // Wait until the group has committed everything, then stop both.
    describe_until(&broker, &["--describe", "--group", "g2"], |out| {
        let rows = describe_rows(out);
        rows.len() == 6 && committed_total(&rows) == n
    });
    let outputs = [first.stop(), second.stop()];
    let mut seen = std::collections::HashSet::new();
    for (i, out) in outputs.iter().enumerate() {
        let partitions: std::collections::BTreeSet<&str> =
            out.lines().filter_map(|l| l.split('\t').next()).collect();
        assert!(partitions.len() <= 3, "member {i} read {partitions:?}");
        for line in out.lines() {
            let value = line.split('\t').nth(1).expect("partition\tvalue");
            assert!(seen.insert(value.to_string()), "{value} read twice");
        }
    }
    assert_eq!(seen.len(), n as usize);
}

/// A KIP-848 group (group.protocol=consumer) is described through ConsumerGroupDescribe:
/// one member joined with raw ConsumerGroupHeartbeat requests.
#[test]
fn consumer_groups_describes_a_kip848_group() {
    use kavka_client::connection::{Connection, ConnectionOptions};
    use kavka_protocol::kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    use kavka_protocol::kafka_protocol::messages::{
        ConsumerGroupHeartbeatRequest, GroupId, TopicName,
    };
    use kavka_protocol::kafka_protocol::protocol::StrBytes;

    const MEMBER: &str = "kavka-cli-test-member";
    let broker = Broker::start_with(GROUP_OVERRIDES);
    broker.ok(
        "topics",
        &["--create", "--topic", "next", "--partitions", "3"],
        b"",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = |epoch: i32, owned: Vec<TopicPartitions>| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g848")))
            .with_member_id(StrBytes::from_static_str(MEMBER))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(
                (epoch == 0).then(|| vec![TopicName(StrBytes::from_static_str("next"))]),
            )
            .with_topic_partitions((epoch >= 0).then_some(owned))
    };
    // FindCoordinator first, as clients do: it is what creates __consumer_offsets.
    let coordinator = runtime
        .block_on(async {
            let config = kavka_client::ClientConfig::new(&broker.bootstrap)?;
            kavka_client::Admin::connect(config)
                .await?
                .find_coordinator("g848")
                .await
        })
        .unwrap();
    let mut conn = runtime
        .block_on(Connection::connect(
            &coordinator.addr(),
            &ConnectionOptions::default(),
        ))
        .unwrap();
    // Join, then acknowledge the assignment, as a client reconciles.
    let (mut epoch, mut owned) = (0, Vec::new());
    for _ in 0..50 {
        let resp = runtime
            .block_on(conn.send(&request(epoch, owned.clone())))
            .unwrap();
        match resp.error_code {
            0 => {}
            // The coordinator is still loading __consumer_offsets.
            14..=16 => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            code => panic!("heartbeat error {code}: {:?}", resp.error_message),
        }
        epoch = resp.member_epoch;
        match resp.assignment {
            Some(a) => {
                owned = a
                    .topic_partitions
                    .iter()
                    .map(|t| {
                        TopicPartitions::default()
                            .with_topic_id(t.topic_id)
                            .with_partitions(t.partitions.clone())
                    })
                    .collect()
            }
            None if owned.iter().map(|t| t.partitions.len()).sum::<usize>() == 3 => break,
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let members = describe_until(
        &broker,
        &["--describe", "--group", "g848", "--members", "--verbose"],
        |out| out.lines().any(|l| l.starts_with("g848 ")),
    );
    let row: Vec<&str> = members
        .lines()
        .find(|l| l.starts_with("g848 "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[1], MEMBER, "{members}");
    assert_eq!(&row[5..], ["3", "next(0,1,2)"], "{members}");
    let out = broker.ok("consumer-groups", &["--describe", "--group", "g848"], b"");
    let rows = describe_rows(&out);
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows.iter().all(|r| r[6] == MEMBER), "{out}");
    let state = broker.ok(
        "consumer-groups",
        &["--describe", "--group", "g848", "--state"],
        b"",
    );
    let row: Vec<&str> = state.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(&row[row.len() - 2..], ["Stable", "1"], "{state}");

    // Leave (epoch -1): the group is empty.
    let resp = runtime
        .block_on(conn.send(&request(-1, Vec::new())))
        .unwrap();
    assert_eq!(resp.error_code, 0);
    let out = broker.tool("consumer-groups", &["--describe", "--group", "g848"], b"");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Consumer group 'g848' has no active members."),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
