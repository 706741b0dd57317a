//! kavka-loadgen: an independent load generator for Kafka-compatible brokers, built on
//! librdkafka (not on kavka's own client), so the benchmark measures the broker against the
//! client everybody uses.
//!
//! Every measuring subcommand prints one JSON object on stdout (and appends it to `--out`),
//! named by `--scenario`; `report` turns such a file into the comparison table.

mod admin;
mod client;
mod consume;
mod e2e;
mod group;
mod physical;
mod produce;
mod report;
mod stats;
mod wire;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};

#[derive(Parser)]
#[command(
    name = "kavka-loadgen",
    about = "librdkafka-based load generator for Kafka-compatible brokers"
)]
struct Cli {
    /// Broker to talk to.
    #[arg(long, global = true, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    /// Name of this measurement in the results.
    #[arg(long, global = true)]
    scenario: Option<String>,
    /// Append the JSON result (or the error) to this file.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Broker process id, to report its CPU (cores) and RSS over the measured window.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// librdkafka property override, as in kcat (repeatable): -X fetch.wait.max.ms=100
    #[arg(short = 'X', global = true, value_parser = client::parse_property)]
    property: Vec<(String, String)>,
    /// Extra field copied into the JSON result (repeatable): --tag log_mib=1024
    #[arg(long, global = true, value_parser = client::parse_property)]
    tag: Vec<(String, String)>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a topic (or `--topics N` topics named TOPIC-0..) with CreateTopics.
    CreateTopic {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        topics: u32,
    },
    /// Produce fixed-size records as fast as possible.
    Produce {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 5_000_000)]
        count: u64,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value = "1")]
        acks: String,
        #[arg(long, default_value_t = 5)]
        linger_ms: u32,
    },
    /// Consume a topic from the beginning (assign, no group, librdkafka defaults).
    Consume {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
    },
    /// End-to-end latency at a fixed rate (send time in the payload, measured at the consumer).
    E2e {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value = "1")]
        acks: String,
        #[arg(long, default_value_t = 0)]
        linger_ms: u32,
    },
    /// A consumer group of --members members on a --partitions topic over the classic protocol:
    /// time from the last JoinGroup to a stable assignment, then the ApiVersions baseline and
    /// the OffsetCommit rate on the same connections (no librdkafka: raw requests).
    Group {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 200)]
        partitions: i32,
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value = "kavka-loadgen-group")]
        group: String,
        #[arg(long, default_value_t = 60.0)]
        join_timeout_seconds: f64,
        #[arg(long, default_value_t = 5.0)]
        baseline_seconds: f64,
        #[arg(long, default_value_t = 10.0)]
        commit_seconds: f64,
        #[arg(long, default_value_t = 30_000)]
        session_timeout_ms: i32,
        #[arg(long, default_value_t = 30_000)]
        rebalance_timeout_ms: i32,
        /// Heartbeat interval while the group forms (how soon a member notices a rebalance).
        #[arg(long, default_value_t = 100)]
        join_heartbeat_ms: u64,
        /// classic (JoinGroup/SyncGroup) or consumer (KIP-848 ConsumerGroupHeartbeat).
        #[arg(long, value_enum, default_value_t = group::GroupProtocol::Classic)]
        protocol: group::GroupProtocol,
    },
    /// Poll with Metadata requests until the broker answers; reports ms since --since-epoch-ns.
    WaitReady {
        /// Launch time of the broker (date +%s%N); default: now.
        #[arg(long)]
        since_epoch_ns: Option<u128>,
        #[arg(long, default_value_t = 60.0)]
        timeout_seconds: f64,
    },
    /// Resident memory of --broker-pid, in MiB.
    Rss,
    /// Loopback TCP bandwidth (physical reference).
    TcpBlast {
        #[arg(long, default_value_t = 4 << 30)]
        bytes: u64,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Append + fdatasync latency in a directory (physical reference).
    FsyncLatency {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4096)]
        block: usize,
        #[arg(long, default_value_t = 2000)]
        count: u64,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Print the comparison table of a results file.
    Report { file: PathBuf },
}

fn run(cli: &Cli) -> Result<Option<Value>> {
    let bs = cli.bootstrap_server.clone();
    let extra = cli.property.clone();
    let value = match &cli.cmd {
        Cmd::CreateTopic {
            topic,
            partitions,
            topics,
        } => admin::create_topics(&bs, topic, *partitions, *topics, &extra)?,
        Cmd::Produce {
            topic,
            count,
            seconds,
            size,
            acks,
            linger_ms,
        } => produce::run(&produce::ProduceArgs {
            bootstrap: bs,
            topic: topic.clone(),
            count: *count,
            seconds: *seconds,
            size: *size,
            acks: acks.clone(),
            linger_ms: *linger_ms,
            broker_pid: cli.broker_pid,
            extra,
        })?,
        Cmd::Consume {
            topic,
            count,
            seconds,
        } => consume::run(&consume::ConsumeArgs {
            bootstrap: bs,
            topic: topic.clone(),
            count: *count,
            seconds: *seconds,
            broker_pid: cli.broker_pid,
            extra,
        })?,
        Cmd::E2e {
            topic,
            rate,
            seconds,
            warmup_seconds,
            size,
            acks,
            linger_ms,
        } => e2e::run(&e2e::E2eArgs {
            bootstrap: bs,
            topic: topic.clone(),
            rate: *rate,
            seconds: *seconds,
            warmup_seconds: *warmup_seconds,
            size: *size,
            acks: acks.clone(),
            linger_ms: *linger_ms,
            broker_pid: cli.broker_pid,
            extra,
        })?,
        Cmd::Group {
            topic,
            partitions,
            members,
            group,
            join_timeout_seconds,
            baseline_seconds,
            commit_seconds,
            session_timeout_ms,
            rebalance_timeout_ms,
            join_heartbeat_ms,
            protocol,
        } => group::run(&group::GroupArgs {
            protocol: *protocol,
            bootstrap: bs,
            topic: topic.clone(),
            partitions: *partitions,
            members: *members,
            group: group.clone(),
            join_timeout_seconds: *join_timeout_seconds,
            baseline_seconds: *baseline_seconds,
            commit_seconds: *commit_seconds,
            session_timeout_ms: *session_timeout_ms,
            rebalance_timeout_ms: *rebalance_timeout_ms,
            join_heartbeat_ms: *join_heartbeat_ms,
            broker_pid: cli.broker_pid,
        })?,
        Cmd::WaitReady {
            since_epoch_ns,
            timeout_seconds,
        } => admin::wait_ready(
            &bs,
            *since_epoch_ns,
            Duration::from_secs_f64(*timeout_seconds),
        )?,
        Cmd::Rss => {
            let pid = cli.broker_pid.context("rss needs --broker-pid")?;
            let kib = stats::rss_kib(pid)?;
            eprintln!("pid {pid} RSS {:.1} MiB", kib as f64 / 1024.0);
            json!({ "rss_mib": kib as f64 / 1024.0 })
        }
        Cmd::TcpBlast { bytes, seconds } => physical::tcp_blast(*bytes, *seconds)?,
        Cmd::FsyncLatency {
            dir,
            block,
            count,
            seconds,
        } => physical::fsync_latency(dir, *block, *count, *seconds)?,
        Cmd::Report { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            print!("{}", report::render(&report::parse(&text)?));
            return Ok(None);
        }
    };
    Ok(Some(value))
}

/// Adds the scenario name and `--tag`s (numbers stay numbers) to a result object.
fn decorate(cli: &Cli, mut v: Value) -> Value {
    let mut head = Map::new();
    if let Some(s) = &cli.scenario {
        head.insert("scenario".into(), Value::String(s.clone()));
    }
    for (k, val) in &cli.tag {
        let parsed = val
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| Value::String(val.clone()));
        head.insert(k.clone(), parsed);
    }
    if let Value::Object(body) = &mut v {
        head.append(body);
    }
    Value::Object(head)
}

fn emit(cli: &Cli, v: &Value) -> Result<()> {
    let line = v.to_string();
    println!("{line}");
    if let Some(path) = &cli.out {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.property.iter().any(|(k, _)| k == "debug") {
        client::VERBOSE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    match run(&cli) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(v)) => match emit(&cli, &decorate(&cli, v)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e:#}");
            let _ = emit(&cli, &decorate(&cli, json!({ "error": format!("{e:#}") })));
            ExitCode::FAILURE
        }
    }
}
