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

/// [`log_config_for`] for the topic `name`.
pub fn log_config_for_topic(
    broker: &BrokerConfig,
    name: &str,
    overrides: &BTreeMap<String, String>,
) -> LogConfig {
    // Internal topics are key → latest value tables: compacted unless their own config says
    // otherwise (Kafka always creates them with `cleanup.policy=compact`).
    if crate::internal_topics::is_internal(name) && !overrides.contains_key("cleanup.policy") {
        let mut o = overrides.clone();
        o.insert("cleanup.policy".into(), "compact".into());
        return log_config_for(broker, &o);
    }
    log_config_for(broker, overrides)
}

pub fn log_config_for(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let d = &broker.log;
    let log_append = match overrides.get("message.timestamp.type").map(String::as_str) {
        Some("LogAppendTime") => true,
        Some("CreateTime") => false,
        _ => d.message_timestamp_type_log_append,
    };
    // A compacted topic is never trimmed by time or size: without `delete` in its cleanup
    // policy Kafka keeps every key's latest value forever (the log cleaner removes the rest).
    let policy = overrides
        .get("cleanup.policy")
        .map(String::as_str)
        .unwrap_or(&d.cleanup_policy);
    let deletes = policy.split(',').any(|p| p.trim() == "delete");
    let compact = policy.split(',').any(|p| p.trim() == "compact");
    let flush_messages: i64 = pick(
        overrides,
        "flush.messages",
        d.flush_interval_messages.min(i64::MAX as u64) as i64,
    );
    LogConfig {
        segment_bytes: pick(overrides, "segment.bytes", d.segment_bytes),
        segment_ms: pick(overrides, "segment.ms", d.roll_ms),
        retention_bytes: if deletes {
            pick(overrides, "retention.bytes", d.retention_bytes)
        } else {
            -1
        },
        retention_ms: if deletes {
            pick(overrides, "retention.ms", d.retention_ms)
        } else {
            -1
        },
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
        compact,
        min_cleanable_dirty_ratio: pick(
            overrides,
            "min.cleanable.dirty.ratio",
            d.min_cleanable_ratio,
        ),
        delete_retention_ms: pick(overrides, "delete.retention.ms", d.delete_retention_ms),
        min_compaction_lag_ms: pick(overrides, "min.compaction.lag.ms", 0),
        max_compaction_lag_ms: pick(overrides, "max.compaction.lag.ms", i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> BrokerConfig {
        BrokerConfig::from_properties("log.retention.hours=1", &[])
            .unwrap()
            .0
    }

    #[test]
    fn topic_overrides_win_over_broker_defaults() {
        let b = broker();
        let base = log_config_for(&b, &BTreeMap::new());
        assert_eq!(base.retention_ms, 3_600_000);
        let o = BTreeMap::from([
            ("retention.ms".to_string(), "5".to_string()),
            ("flush.messages".into(), "1".into()),
        ]);
        let c = log_config_for(&b, &o);
        assert_eq!(c.retention_ms, 5);
        assert_eq!(c.flush_interval_messages, 1);
    }

    #[test]
    fn compacted_topics_are_not_trimmed_by_retention() {
        let b = broker();
        let o = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let c = log_config_for(&b, &o);
        assert_eq!((c.retention_ms, c.retention_bytes), (-1, -1));
        assert!(c.compact);
        assert!(!log_config_for(&b, &BTreeMap::new()).compact);
        let o = BTreeMap::from([("cleanup.policy".to_string(), "compact,delete".to_string())]);
        assert_eq!(log_config_for(&b, &o).retention_ms, 3_600_000);
        assert!(log_config_for(&b, &o).compact);
    }

    #[test]
    fn internal_state_topics_are_compacted() {
        let b = broker();
        let none = BTreeMap::new();
        assert!(log_config_for_topic(&b, "__consumer_offsets", &none).compact);
        assert_eq!(
            log_config_for_topic(&b, "__consumer_offsets", &none).retention_ms,
            -1
        );
        assert!(!log_config_for_topic(&b, "orders", &none).compact);
        let o = BTreeMap::from([("cleanup.policy".to_string(), "delete".to_string())]);
        assert!(!log_config_for_topic(&b, "__consumer_offsets", &o).compact);
    }

    #[test]
    fn cleaner_settings_follow_topic_then_broker() {
        let b = BrokerConfig::from_properties(
            "log.cleaner.min.cleanable.ratio=0.25\nlog.cleaner.delete.retention.ms=99",
            &[],
        )
        .unwrap()
        .0;
        let c = log_config_for(&b, &BTreeMap::new());
        assert_eq!(
            (c.min_cleanable_dirty_ratio, c.delete_retention_ms),
            (0.25, 99)
        );
        assert_eq!(
            (c.min_compaction_lag_ms, c.max_compaction_lag_ms),
            (0, i64::MAX)
        );
        let o = BTreeMap::from([
            ("min.cleanable.dirty.ratio".to_string(), "0.01".to_string()),
            ("delete.retention.ms".into(), "5".into()),
            ("min.compaction.lag.ms".into(), "7".into()),
            ("max.compaction.lag.ms".into(), "8".into()),
        ]);
        let c = log_config_for(&b, &o);
        assert_eq!(
            (c.min_cleanable_dirty_ratio, c.delete_retention_ms),
            (0.01, 5)
        );
        assert_eq!((c.min_compaction_lag_ms, c.max_compaction_lag_ms), (7, 8));
    }
}
