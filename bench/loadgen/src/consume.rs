//! Throughput consumer: reads a topic from the beginning with `assign()` (no group) and
//! librdkafka's default fetch settings.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::client;
use crate::stats::CpuWindow;

#[derive(Debug, Clone)]
pub struct ConsumeArgs {
    pub bootstrap: String,
    pub topic: String,
    pub count: u64,
    pub seconds: f64,
    pub broker_pid: Option<u32>,
    pub extra: Vec<(String, String)>,
}

/// Consume errors printed before the rest are only counted.
const MAX_PRINTED_ERRORS: u64 = 5;

pub fn run(args: &ConsumeArgs) -> Result<Value> {
    let consumer = client::consumer(&args.bootstrap, &args.extra)?;
    let partitions =
        client::partition_count(consumer.client(), &args.topic, Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&args.topic, p, Offset::Beginning)?;
    }

    let cpu = CpuWindow::start(args.broker_pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    consumer.assign(&tpl)?;
    let mut msgs: u64 = 0;
    let mut bytes: u64 = 0;
    let mut errors: u64 = 0;
    let mut first_msg: Option<Duration> = None;
    let mut polls: u64 = 0;
    while msgs < args.count {
        polls += 1;
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                msgs += 1;
                bytes += m.payload_len() as u64;
                first_msg.get_or_insert_with(|| start.elapsed());
            }
            Some(Err(e)) => {
                errors += 1;
                if errors <= MAX_PRINTED_ERRORS {
                    eprintln!("consume error: {e}");
                }
            }
            None => {
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        if polls.is_multiple_of(1024) && Instant::now() >= deadline {
            break;
        }
    }
    let elapsed = start.elapsed();
    let usage = cpu.finish();
    if msgs == 0 {
        bail!(
            "no record consumed from {} within {:.0}s",
            args.topic,
            args.seconds
        );
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let msgs_per_s = msgs as f64 / secs;
    eprintln!(
        "consume {}: {msgs} records in {secs:.2}s = {msgs_per_s:.0} msgs/s ({errors} errors)",
        args.topic
    );
    Ok(json!({
        "topic": args.topic,
        "partitions": partitions,
        "consumed": msgs,
        "complete": msgs >= args.count,
        "errors": errors,
        "seconds": secs,
        "first_record_ms": first_msg.map(|d| d.as_secs_f64() * 1000.0),
        "msgs_per_s": msgs_per_s,
        "mb_per_s": bytes as f64 / secs / 1e6,
        "broker_cores": usage.broker_cores,
        "broker_rss_mib": usage.broker_rss_mib,
        "client_cores": usage.client_cores,
        "other_cores": usage.other_cores,
    }))
}
