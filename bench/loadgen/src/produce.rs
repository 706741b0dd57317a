//! Throughput producer: sends fixed-size records as fast as librdkafka accepts them and
//! measures acknowledged msgs/s and the send → delivery-report latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde_json::{json, Value};

use crate::client::{self, LoggingContext};
use crate::stats::{CpuWindow, Latencies};

#[derive(Debug, Clone)]
pub struct ProduceArgs {
    pub bootstrap: String,
    pub topic: String,
    pub count: u64,
    pub seconds: f64,
    pub size: usize,
    pub acks: String,
    pub linger_ms: u32,
    pub broker_pid: Option<u32>,
    pub extra: Vec<(String, String)>,
}

/// Delivery reports arrive on the thread that calls `poll()`, i.e. the sending thread, so
/// the mutex is never contended.
pub struct DeliveryContext {
    log: LoggingContext,
    base: Instant,
    acked: AtomicU64,
    failed: AtomicU64,
    /// Instant (ns since `base`) of the latest delivery report.
    last_report_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
    latencies: Mutex<Latencies>,
}

impl DeliveryContext {
    pub fn new(base: Instant) -> Self {
        Self {
            log: LoggingContext::default(),
            base,
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_report_ns: AtomicU64::new(0),
            first_error: Mutex::new(None),
            latencies: Mutex::new(Latencies::new()),
        }
    }

    /// Nanoseconds since `base`, the value carried as the delivery opaque.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn latencies(&self) -> Latencies {
        let mut out = Latencies::new();
        if let Ok(l) = self.latencies.lock() {
            out.merge(&l);
        }
        out
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    /// Send time in ns since `base`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.now_ns();
        self.last_report_ns.store(now, Ordering::Relaxed);
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                let us = now.saturating_sub(sent_ns as u64) / 1000;
                if let Ok(mut l) = self.latencies.lock() {
                    l.record_us(us);
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// A producer configured for throughput measurements with the given acks and linger.
pub fn producer(
    bootstrap: &str,
    acks: &str,
    linger_ms: u32,
    extra: &[(String, String)],
    base: Instant,
) -> Result<BaseProducer<DeliveryContext>> {
    let linger = linger_ms.to_string();
    client::config(
        bootstrap,
        &[
            ("acks", acks),
            ("linger.ms", &linger),
            // librdkafka 2.0's default local queue (100k messages) is drained in well under a
            // linger period at the target rate; a larger queue keeps the sender from stalling.
            ("queue.buffering.max.messages", "1000000"),
            ("message.timeout.ms", "60000"),
        ],
        extra,
    )
    .create_with_context(DeliveryContext::new(base))
    .context("creating producer")
}

/// A deterministic, non-repeating payload (no compression is configured, but a pattern of
/// distinct bytes keeps any accidental compression honest).
pub fn payload(size: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Sends one record, polling for delivery reports while librdkafka's queue is full.
/// Returns false if the deadline passed before the record was accepted.
pub fn send_blocking(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    partition: Option<i32>,
    payload: &[u8],
    deadline: Instant,
) -> Result<bool> {
    loop {
        let stamp = producer.context().now_ns() as usize;
        let mut record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(topic, stamp).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        match producer.send(record) {
            Ok(()) => return Ok(true),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("send failed: {e}"),
        }
    }
}

/// Polls until every record handed to librdkafka got its delivery report, or `timeout`.
pub fn drain(producer: &BaseProducer<DeliveryContext>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        producer.poll(Duration::from_millis(5));
    }
    true
}

pub fn run(args: &ProduceArgs) -> Result<Value> {
    if args.size == 0 {
        bail!("--size must be positive");
    }
    let base = Instant::now();
    let producer = producer(
        &args.bootstrap,
        &args.acks,
        args.linger_ms,
        &args.extra,
        base,
    )?;
    let partitions =
        client::partition_count(producer.client(), &args.topic, Duration::from_secs(10))?;
    let payload = payload(args.size);

    let cpu = CpuWindow::start(args.broker_pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut sent: u64 = 0;
    while sent < args.count {
        // Explicit round-robin: every partition gets the same load.
        let partition = (sent % partitions as u64) as i32;
        if !send_blocking(&producer, &args.topic, Some(partition), &payload, deadline)? {
            break;
        }
        sent += 1;
        if sent.is_multiple_of(1024) {
            producer.poll(Duration::ZERO);
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    let send_done = start.elapsed();
    let drained = drain(&producer, Duration::from_secs(30));
    let ctx = producer.context();
    let last_ns = ctx.last_report_ns.load(Ordering::Relaxed);
    let start_ns = u64::try_from(start.duration_since(base).as_nanos()).unwrap_or(0);
    let elapsed = Duration::from_nanos(last_ns.saturating_sub(start_ns)).max(send_done);
    let usage = cpu.finish();

    let acked = ctx.acked();
    let failed = ctx.failed();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let lat = ctx.latencies();
    let msgs_per_s = acked as f64 / secs;
    eprintln!(
        "produce {}: {acked} acked ({failed} failed) in {secs:.2}s = {msgs_per_s:.0} msgs/s, \
         ack latency p50 {:.2} ms p99 {:.2} ms",
        args.topic,
        lat.quantile_ms(0.5),
        lat.quantile_ms(0.99)
    );
    if let Some(e) = ctx.first_error() {
        eprintln!("first delivery error: {e}");
    }
    Ok(json!({
        "topic": args.topic,
        "partitions": partitions,
        "acks": args.acks,
        "linger_ms": args.linger_ms,
        "record_bytes": args.size,
        "sent": sent,
        "acked": acked,
        "failed": failed,
        "drained": drained,
        "seconds": secs,
        "msgs_per_s": msgs_per_s,
        "mb_per_s": acked as f64 * args.size as f64 / secs / 1e6,
        "ack_p50_ms": lat.quantile_ms(0.5),
        "ack_p99_ms": lat.quantile_ms(0.99),
        "ack_p999_ms": lat.quantile_ms(0.999),
        "broker_cores": usage.broker_cores,
        "broker_rss_mib": usage.broker_rss_mib,
        "client_cores": usage.client_cores,
        "other_cores": usage.other_cores,
        "first_error": ctx.first_error(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_sized_and_varied() {
        let p = payload(100);
        assert_eq!(p.len(), 100);
        let distinct: std::collections::HashSet<u8> = p.iter().copied().collect();
        assert!(
            distinct.len() > 50,
            "only {} distinct bytes",
            distinct.len()
        );
        assert!(payload(0).is_empty());
    }
}
