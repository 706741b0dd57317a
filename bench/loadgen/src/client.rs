//! librdkafka client construction shared by every scenario.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;

/// librdkafka log lines and errors printed to stderr, at most this many per client, so a
/// broker that is down cannot flood the terminal.
const MAX_LOG_LINES: u32 = 20;

/// Set when the user asked librdkafka for debug contexts (`-X debug=...`): then every log
/// line is printed, uncapped.
pub static VERBOSE: AtomicBool = AtomicBool::new(false);

/// A client context that surfaces librdkafka's warnings and errors instead of dropping them.
#[derive(Default)]
pub struct LoggingContext {
    printed: AtomicU32,
}

impl LoggingContext {
    fn print(&self, line: std::fmt::Arguments<'_>) {
        let n = self.printed.fetch_add(1, Ordering::Relaxed);
        if n < MAX_LOG_LINES {
            eprintln!("librdkafka: {line}");
        } else if n == MAX_LOG_LINES {
            eprintln!("librdkafka: further messages suppressed");
        }
    }
}

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if VERBOSE.load(Ordering::Relaxed) {
            eprintln!("librdkafka: {level:?} {fac}: {log_message}");
        } else if matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        ) {
            self.print(format_args!("{level:?} {fac}: {log_message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.print(format_args!("error {error}: {reason}"));
    }
}

impl ConsumerContext for LoggingContext {}

/// Parses `-X key=value` arguments (librdkafka property overrides, as in kcat).
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected key=value, got '{s}'")),
    }
}

/// Base configuration: bootstrap servers plus the user's `-X` overrides (applied last, so
/// they win over anything a scenario sets).
pub fn config(bootstrap: &str, base: &[(&str, &str)], extra: &[(String, String)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap);
    cfg.set("client.id", "kavka-loadgen");
    for (k, v) in base {
        cfg.set(*k, *v);
    }
    for (k, v) in extra {
        cfg.set(k, v);
    }
    cfg
}

/// A consumer for `assign()` only, never `subscribe()`. librdkafka refuses `assign()` without
/// a `group.id` (Local: Unknown group), so one is set, but no group is ever joined and no
/// offset is committed or stored; fetch settings stay librdkafka's defaults.
pub fn consumer(
    bootstrap: &str,
    extra: &[(String, String)],
) -> Result<BaseConsumer<LoggingContext>> {
    let group = format!("kavka-loadgen-{}", std::process::id());
    config(
        bootstrap,
        &[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
        ],
        extra,
    )
    .create_with_context(LoggingContext::default())
    .context("creating consumer")
}

/// Number of partitions of `topic`, from a Metadata request.
pub fn partition_count<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<i32> {
    let md = client
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("metadata for topic {topic}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} missing from metadata response");
    };
    if let Some(err) = t.error() {
        bail!("topic {topic}: {err:?}");
    }
    let n = t.partitions().len();
    if n == 0 {
        bail!("topic {topic} has no partitions");
    }
    i32::try_from(n).context("partition count")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_parsing() {
        assert_eq!(
            parse_property("linger.ms=5").unwrap(),
            ("linger.ms".to_string(), "5".to_string())
        );
        assert_eq!(
            parse_property("a=b=c").unwrap(),
            ("a".to_string(), "b=c".to_string())
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=x").is_err());
    }
}
