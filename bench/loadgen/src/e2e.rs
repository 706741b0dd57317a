//! End-to-end latency at a fixed rate: the producer writes its send time into each payload,
//! a consumer in the same process (same clock) reads it back and records now − send time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::client;
use crate::produce;
use crate::stats::{CpuWindow, Latencies};

#[derive(Debug, Clone)]
pub struct E2eArgs {
    pub bootstrap: String,
    pub topic: String,
    pub rate: u64,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub size: usize,
    pub acks: String,
    pub linger_ms: u32,
    pub broker_pid: Option<u32>,
    pub extra: Vec<(String, String)>,
}

/// Bytes at the start of each payload holding the send time (ns since the shared base, LE).
const STAMP_LEN: usize = 8;
/// Pacing granularity: the records due in each tick are sent back to back.
const TICK: Duration = Duration::from_millis(1);
/// How long the consumer may lag behind the end of production before giving up.
const DRAIN_GRACE: Duration = Duration::from_secs(15);

/// Records that should have been sent `elapsed` into a run at `rate` per second.
pub fn due(rate: u64, elapsed: Duration) -> u64 {
    (u128::from(rate) * elapsed.as_nanos() / 1_000_000_000) as u64
}

pub fn write_stamp(buf: &mut [u8], ns: u64) {
    if let Some(head) = buf.get_mut(..STAMP_LEN) {
        head.copy_from_slice(&ns.to_le_bytes());
    }
}

pub fn read_stamp(buf: &[u8]) -> Option<u64> {
    let head: [u8; STAMP_LEN] = buf.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

struct Shared {
    base: Instant,
    /// Records stamped earlier than this (ns since base) are warm-up and not recorded.
    warmup_end_ns: u64,
    producing_done: AtomicBool,
    acked_total: AtomicU64,
}

struct ConsumerOutcome {
    received: u64,
    malformed: u64,
    latencies: Latencies,
}

pub fn run(args: &E2eArgs) -> Result<Value> {
    if args.size < STAMP_LEN {
        bail!("--size must be at least {STAMP_LEN} bytes to carry the timestamp");
    }
    if args.rate == 0 {
        bail!("--rate must be positive");
    }
    let base = Instant::now();
    let producer = produce::producer(
        &args.bootstrap,
        &args.acks,
        args.linger_ms,
        &args.extra,
        base,
    )?;
    let consumer = client::consumer(&args.bootstrap, &args.extra)?;
    let partitions =
        client::partition_count(consumer.client(), &args.topic, Duration::from_secs(10))?;
    // Also through the producer: librdkafka otherwise learns a topic's leaders lazily, on its
    // 1 s topic scan, and the first records would wait for it.
    client::partition_count(producer.client(), &args.topic, Duration::from_secs(10))?;

    // Start exactly at the current log end offsets, so nothing older is read and nothing of
    // ours is skipped (Offset::End would resolve asynchronously and could miss the first records).
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(&args.topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {}-{p}", args.topic))?;
        tpl.add_partition_offset(&args.topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;

    let warmup = Duration::from_secs_f64(args.warmup_seconds);
    let total = warmup + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        base,
        warmup_end_ns: u64::try_from((start + warmup).duration_since(base).as_nanos()).unwrap_or(0),
        producing_done: AtomicBool::new(false),
        acked_total: AtomicU64::new(0),
    });
    let hard_deadline = start + total + DRAIN_GRACE;

    let consumer_shared = Arc::clone(&shared);
    let consumer_thread = thread::Builder::new()
        .name("e2e-consumer".into())
        .spawn(move || {
            let mut out = ConsumerOutcome {
                received: 0,
                malformed: 0,
                latencies: Latencies::new(),
            };
            loop {
                if consumer_shared.producing_done.load(Ordering::Acquire)
                    && out.received >= consumer_shared.acked_total.load(Ordering::Acquire)
                {
                    break;
                }
                if Instant::now() >= hard_deadline {
                    break;
                }
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        let now = u64::try_from(consumer_shared.base.elapsed().as_nanos())
                            .unwrap_or(u64::MAX);
                        out.received += 1;
                        match m.payload().and_then(read_stamp) {
                            Some(sent) if sent >= consumer_shared.warmup_end_ns => {
                                out.latencies.record_us(now.saturating_sub(sent) / 1000);
                            }
                            Some(_) => {}
                            None => out.malformed += 1,
                        }
                    }
                    Some(Err(e)) => eprintln!("e2e consume error: {e}"),
                    None => {}
                }
            }
            out
        })
        .context("spawning consumer thread")?;

    let cpu = CpuWindow::start(args.broker_pid);
    let mut buf = produce::payload(args.size);
    let end = start + total;
    let mut sent: u64 = 0;
    let mut next_tick = start;
    let mut send_error = None;
    'ticks: loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let target = due(args.rate, now.duration_since(start));
        while sent < target {
            write_stamp(&mut buf, producer.context().now_ns());
            match produce::send_blocking(
                &producer,
                &args.topic,
                Some((sent % partitions as u64) as i32),
                &buf,
                end,
            ) {
                Ok(true) => sent += 1,
                Ok(false) => break 'ticks,
                Err(e) => {
                    send_error = Some(e);
                    break 'ticks;
                }
            }
        }
        producer.poll(Duration::ZERO);
        next_tick += TICK;
        let now = Instant::now();
        if next_tick > now {
            thread::sleep(next_tick - now);
        } else {
            next_tick = now;
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    produce::drain(&producer, Duration::from_secs(10));
    let usage = cpu.finish();
    let ctx = producer.context();
    shared.acked_total.store(ctx.acked(), Ordering::Release);
    shared.producing_done.store(true, Ordering::Release);
    let outcome = consumer_thread
        .join()
        .map_err(|_| anyhow!("consumer thread panicked"))?;
    if let Some(e) = send_error {
        return Err(e);
    }

    let lat = &outcome.latencies;
    let ack = ctx.latencies();
    eprintln!(
        "e2e {} at {}/s: sent {sent}, received {} (measured {}), p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
        args.topic,
        args.rate,
        outcome.received,
        lat.count(),
        lat.quantile_ms(0.5),
        lat.quantile_ms(0.99),
        lat.quantile_ms(0.999),
        lat.max_ms()
    );
    Ok(json!({
        "topic": args.topic,
        "partitions": partitions,
        "target_rate": args.rate,
        "achieved_rate": sent as f64 / send_secs.max(1e-9),
        "acks": args.acks,
        "linger_ms": args.linger_ms,
        "sent": sent,
        "acked": ctx.acked(),
        "failed": ctx.failed(),
        "received": outcome.received,
        "malformed": outcome.malformed,
        "measured": lat.count(),
        "p50_ms": lat.quantile_ms(0.5),
        "p99_ms": lat.quantile_ms(0.99),
        "p999_ms": lat.quantile_ms(0.999),
        "max_ms": lat.max_ms(),
        "ack_p50_ms": ack.quantile_ms(0.5),
        "ack_p99_ms": ack.quantile_ms(0.99),
        "ack_max_ms": ack.max_ms(),
        "broker_cores": usage.broker_cores,
        "broker_rss_mib": usage.broker_rss_mib,
        "client_cores": usage.client_cores,
        "other_cores": usage.other_cores,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_counts() {
        assert_eq!(due(10_000, Duration::ZERO), 0);
        assert_eq!(due(10_000, Duration::from_millis(1)), 10);
        assert_eq!(due(100_000, Duration::from_millis(2500)), 250_000);
        assert_eq!(due(3, Duration::from_millis(999)), 2);
        // No overflow for absurd inputs.
        assert!(due(u64::MAX, Duration::from_secs(1)) > 0);
    }

    #[test]
    fn stamp_round_trip() {
        let mut buf = vec![0u8; 100];
        write_stamp(&mut buf, 0x0102_0304_0506_0708);
        assert_eq!(read_stamp(&buf), Some(0x0102_0304_0506_0708));
        assert_eq!(read_stamp(&buf[..7]), None);
        let mut short = [0u8; 4];
        write_stamp(&mut short, 1);
        assert_eq!(short, [0; 4]);
    }
}
