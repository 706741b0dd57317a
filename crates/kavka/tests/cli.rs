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
