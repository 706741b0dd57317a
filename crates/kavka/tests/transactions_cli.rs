//! End-to-end: `kavka transactions` and `kavka describe-producers` against the real
//! `kavka server`. A transaction is driven with raw protocol requests (InitProducerId,
//! AddPartitionsToTxn, a transactional Produce, EndTxn) so the test does not depend on any
//! producer library; the tools must then show it Ongoing, then CompleteCommit. Every wait is
//! bounded; the broker is killed when the test ends, pass or fail.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kavka_client::connection::{Connection, ConnectionOptions};
use kavka_protocol::kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kavka_protocol::kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ProduceRequest, ProducerId, TopicName, TransactionalId,
};
use kavka_protocol::kafka_protocol::protocol::StrBytes;
use kavka_protocol::kafka_protocol::records::Compression;

const KAVKA: &str = env!("CARGO_BIN_EXE_kavka");
const STARTUP: Duration = Duration::from_secs(30);
const TOOL_DEADLINE: Duration = Duration::from_secs(60);
/// How long the coordinator may take to create and load `__transaction_state`.
const COORDINATOR_WAIT: Duration = Duration::from_secs(60);

/// Kafka error codes the raw requests wait out.
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const CONCURRENT_TRANSACTIONS: i16 = 51;

/// A running broker; killed on drop.
struct Broker {
    child: Child,
    bootstrap: String,
    dir: tempfile::TempDir,
}

impl Broker {
    fn start(overrides: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
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
            dir,
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            let addr = broker.bootstrap.parse().expect("socket address");
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return broker;
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("kavka server exited with {status}: {}", broker.log());
            }
            assert!(
                Instant::now() < deadline,
                "kavka server did not listen within {STARTUP:?}: {}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `kavka <tool> --bootstrap-server <broker> args...`.
    fn tool(&self, tool: &str, args: &[&str]) -> Output {
        let mut argv = vec![tool, "--bootstrap-server", &self.bootstrap];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// The run must succeed; returns stdout.
    fn ok(&self, tool: &str, args: &[&str]) -> String {
        let out = self.tool(tool, args);
        assert!(
            out.status.success(),
            "kavka {tool} {args:?} failed: {}\nbroker log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// The run must fail with exit code 1 and exactly one line on stderr, returned.
    fn fails(&self, tool: &str, args: &[&str]) -> String {
        let out = self.tool(tool, args);
        assert_eq!(out.status.code(), Some(1), "kavka {tool} {args:?}");
        let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
        assert_eq!(stderr.lines().count(), 1, "one line of error: {stderr:?}");
        stderr
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("broker log (last lines, newest first):");
            for line in tail {
                eprintln!("  {line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with a wall-clock deadline; a hung tool is killed and fails the test.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(KAVKA)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kavka");
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
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// A table's rows (header included) split on tabs, cells trimmed.
fn table(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split('\t').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// The row whose first cell is `key`, as `header -> cell` pairs.
fn row(out: &str, column: usize, key: &str) -> Option<Vec<(String, String)>> {
    let t = table(out);
    let header = t.first()?.clone();
    let r = t
        .iter()
        .skip(1)
        .find(|r| r.get(column).map(String::as_str) == Some(key))?;
    Some(header.into_iter().zip(r.iter().cloned()).collect())
}

fn cell<'a>(row: &'a [(String, String)], name: &str) -> &'a str {
    row.iter()
        .find(|(h, _)| h == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no column {name} in {row:?}"))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Sends `build()` until its error code (by `code`) is not a coordinator-moving one.
async fn until_coordinator_ready<R, F, C>(conn: &mut Connection, build: F, code: C) -> R::Response
where
    R: kavka_protocol::kafka_protocol::protocol::Request + std::fmt::Debug,
    F: Fn() -> R,
    C: Fn(&R::Response) -> i16,
{
    let deadline = Instant::now() + COORDINATOR_WAIT;
    loop {
        let request = build();
        let resp = conn
            .send(&request)
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e}"));
        let c = code(&resp);
        let waiting = matches!(
            c,
            COORDINATOR_LOAD_IN_PROGRESS
                | COORDINATOR_NOT_AVAILABLE
                | NOT_COORDINATOR
                | CONCURRENT_TRANSACTIONS
        );
        if !waiting {
            return resp;
        }
        assert!(Instant::now() < deadline, "coordinator still answers {c}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One transactional batch of `values` from producer `pid`/`epoch` starting at sequence 0.
fn txn_batch(values: &[&str], pid: i64, epoch: i16) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut r = kavka_protocol::records::plain_record(
                i as i64,
                now,
                None,
                Some(Bytes::from(v.to_string())),
            );
            r.transactional = true;
            r.producer_id = pid;
            r.producer_epoch = epoch;
            r.sequence = i as i32;
            r
        })
        .collect();
    kavka_protocol::records::encode_batch(&records, Compression::None).expect("encode batch")
}

#[test]
fn transactions_list_describe_and_describe_producers() {
    let broker = Broker::start(&["transaction.state.log.num.partitions=3"]);
    let topic = "txn-out";
    let tid = "cli-tx";
    broker.ok(
        "topics",
        &[
            "--create",
            "--topic",
            topic,
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
    );

    // Before any transaction: an empty list (the coordinator may still be loading; the
    // tool waits that out) and a clear error for an unknown id.
    let listed = broker.ok("transactions", &["--list"]);
    assert_eq!(
        table(&listed),
        vec![vec![
            "TransactionalId",
            "Coordinator",
            "ProducerId",
            "TransactionState"
        ]]
    );
    let err = broker.fails(
        "transactions",
        &["--describe", "--transactional-id", "nope"],
    );
    assert!(
        err.contains("transactional id 'nope' not found"),
        "unexpected error: {err}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut conn = rt
        .block_on(Connection::connect(
            &broker.bootstrap,
            &ConnectionOptions::default(),
        ))
        .expect("connect");

    // As a producer does: find the coordinator first (it may still be loading its shard).
    let found = rt.block_on(until_coordinator_ready(
        &mut conn,
        || {
            FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_coordinator_keys(vec![s(tid)])
        },
        |r| r.coordinators.first().map_or(-1, |c| c.error_code),
    ));
    assert_eq!(found.coordinators[0].node_id.0, 1, "FindCoordinator");

    // InitProducerId first on a fresh broker: it also allocates the first producer-id block
    // (once a self-deadlock of the coordinator, kept here as a regression check).
    // InitProducerId, AddPartitionsToTxn (v3, the client form), one transactional batch.
    let init = rt.block_on(until_coordinator_ready(
        &mut conn,
        || {
            InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s(tid))))
                .with_transaction_timeout_ms(60_000)
        },
        |r| r.error_code,
    ));
    assert_eq!(init.error_code, 0, "InitProducerId");
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    let add = rt.block_on(async {
        let deadline = Instant::now() + COORDINATOR_WAIT;
        loop {
            let request = AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s(tid)))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![0])]);
            let resp = conn
                .send_version(&request, 3, Duration::ZERO)
                .await
                .expect("AddPartitionsToTxn");
            let code = resp
                .results_by_topic_v3_and_below
                .first()
                .and_then(|t| t.results_by_partition.first())
                .map_or(-1, |p| p.partition_error_code);
            if !matches!(code, COORDINATOR_LOAD_IN_PROGRESS | CONCURRENT_TRANSACTIONS)
                || Instant::now() > deadline
            {
                break code;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert_eq!(add, 0, "AddPartitionsToTxn");
    let produced = rt.block_on(async {
        let request = kavka_client::producer::produce_request(
            &[(topic, 0, txn_batch(&["a", "b"], pid, epoch))],
            &Default::default(),
            -1,
            30_000,
        )
        .with_transactional_id(Some(TransactionalId(s(tid))));
        let version = conn.version_for::<ProduceRequest>(None).expect("version");
        conn.send_version(&request, version, Duration::ZERO)
            .await
            .expect("Produce")
    });
    let p = &produced.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "transactional produce"
    );

    // Ongoing: listed, described with its partition, and its producer open at offset 0.
    let listed = broker.ok("transactions", &["--list"]);
    let r = row(&listed, 0, tid).unwrap_or_else(|| panic!("{tid} not listed:\n{listed}"));
    assert_eq!(cell(&r, "Coordinator"), "1");
    assert_eq!(cell(&r, "ProducerId"), pid.to_string());
    assert_eq!(cell(&r, "TransactionState"), "Ongoing");
    let filtered = broker.ok("transactions", &["--list", "--state", "CompleteCommit"]);
    assert!(row(&filtered, 0, tid).is_none(), "{filtered}");
    let by_pid = broker.ok("transactions", &["list", "--producer-id", &pid.to_string()]);
    assert!(row(&by_pid, 0, tid).is_some(), "{by_pid}");

    let described = broker.ok("transactions", &["--describe", "--transactional-id", tid]);
    let d = row(&described, 1, tid).unwrap_or_else(|| panic!("not described:\n{described}"));
    assert_eq!(cell(&d, "CoordinatorId"), "1");
    assert_eq!(cell(&d, "ProducerId"), pid.to_string());
    assert_eq!(cell(&d, "ProducerEpoch"), epoch.to_string());
    assert_eq!(cell(&d, "TransactionState"), "Ongoing");
    assert_eq!(cell(&d, "TransactionTimeoutMs"), "60000");
    assert!(cell(&d, "CurrentTransactionStartTimeMs")
        .parse::<i64>()
        .is_ok());
    assert!(cell(&d, "TransactionDurationMs").parse::<i64>().is_ok());
    assert_eq!(cell(&d, "TopicPartitions"), format!("{topic}-0"));

    let producers = broker.ok(
        "describe-producers",
        &["--topic", topic, "--partition", "0"],
    );
    let p = row(&producers, 0, &pid.to_string())
        .unwrap_or_else(|| panic!("producer {pid} missing:\n{producers}"));
    assert_eq!(cell(&p, "ProducerEpoch"), epoch.to_string());
    assert_eq!(cell(&p, "LastSequence"), "1");
    assert_eq!(cell(&p, "CurrentTransactionStartOffset"), "0");
    // kafka-transactions.sh's spelling gives the same table.
    let same = broker.ok(
        "transactions",
        &["describe-producers", "--topic", topic, "--partition", "0"],
    );
    assert_eq!(same, producers);

    // Commit; the markers complete it in the background.
    let end = rt.block_on(until_coordinator_ready(
        &mut conn,
        || {
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s(tid)))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(true)
        },
        |r| r.error_code,
    ));
    assert_eq!(end.error_code, 0, "EndTxn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let d = loop {
        let described = broker.ok("transactions", &["--describe", "--transactional-id", tid]);
        let d = row(&described, 1, tid).unwrap_or_else(|| panic!("{described}"));
        if cell(&d, "TransactionState") == "CompleteCommit" {
            break d;
        }
        assert!(Instant::now() < deadline, "never completed: {described}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Kafka keeps the start time of a completed transaction (only a new epoch clears it),
    // and empties its partitions.
    assert_eq!(cell(&d, "ProducerId"), pid.to_string());
    assert!(
        d.iter().all(|(h, _)| h != "TopicPartitions") || cell(&d, "TopicPartitions").is_empty()
    );
    let listed = broker.ok("transactions", &["--list", "--state", "completecommit"]);
    let r = row(&listed, 0, tid).unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(cell(&r, "TransactionState"), "CompleteCommit");

    // The marker closed the producer's transaction on the partition.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let producers = broker.ok(
            "describe-producers",
            &["--topic", topic, "--partition", "0"],
        );
        let p = row(&producers, 0, &pid.to_string()).unwrap_or_else(|| panic!("{producers}"));
        if cell(&p, "CurrentTransactionStartOffset") == "None" {
            assert!(
                cell(&p, "LatestCoordinatorEpoch")
                    .parse::<i32>()
                    .unwrap_or(-1)
                    >= 0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "marker never landed: {producers}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Bad input is one clear line and exit code 1.
    let err = broker.fails(
        "describe-producers",
        &["--topic", topic, "--partition", "5"],
    );
    assert!(
        err.contains(&format!("partition {topic}-5 does not exist")),
        "{err}"
    );
    let err = broker.fails(
        "describe-producers",
        &["--topic", "no-such-topic", "--partition", "0"],
    );
    assert!(err.contains("does not exist"), "{err}");
    let err = broker.fails("transactions", &["--list", "--state", "Stable"]);
    assert!(err.contains("invalid state"), "{err}");
}
