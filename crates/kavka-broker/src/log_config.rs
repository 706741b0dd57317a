//! Effective log settings of a topic: its own overrides, else the broker's `log.*` defaults.

use crate::config::BrokerConfig;
use kavka_storage::{LogConfig, TimestampType};
use std::collections::BTreeMap;

fn pick<T: std::str::FromStr>(overrides: &BTreeMap<String, String>, key: &str, default: T) -> T {
    // The controller validated every override; an unparsable one can only come from an
    // older metadata log, so fall back to the broker default rather than refuse to serve.
    overrides
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn log_config_for(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let d = &broker.log;
    let log_append = match overrides.get("message.timestamp.type").map(String::as_str) {
        Some("LogAppendTime") => true,
        Some("CreateTime") => false,
        _ => d.message_timestamp_type_log_append,
    };
    let flush_messages: i64 = pick(
        overrides,
        "flush.messages",
        d.flush_interval_messages.min(i64::MAX as u64) as i64,
    );
    LogConfig {
        segment_bytes: pick(overrides, "segment.bytes", d.segment_bytes),
        segment_ms: pick(overrides, "segment.ms", d.roll_ms),
        retention_bytes: pick(overrides, "retention.bytes", d.retention_bytes),
        retention_ms: pick(overrides, "retention.ms", d.retention_ms),
        max_message_bytes: pick(overrides, "max.message.bytes", broker.message_max_bytes),
        index_interval_bytes: pick(overrides, "index.interval.bytes", d.index_interval_bytes),
        segment_index_bytes: pick(overrides, "segment.index.bytes", d.segment_index_bytes),
        flush_interval_messages: flush_messages.max(1) as u64,
        flush_interval_ms: pick(overrides, "flush.ms", d.flush_interval_ms),
        message_timestamp_type: if log_append {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        file_delete_delay_ms: pick(overrides, "file.delete.delay.ms", d.file_delete_delay_ms),
        producer_id_expiration_ms: d.producer_id_expiration_ms,
    }
}
