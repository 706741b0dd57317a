//! The group coordinator's broker settings (Kafka's `group.*` and `offsets.*` keys).

use crate::config::ConfigError;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_segment_bytes: u64,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    /// How long an offset commit (or any group write) waits for the ISR to have it before
    /// the client hears COORDINATOR_NOT_AVAILABLE (Kafka's offsets.commit.timeout.ms).
    pub offsets_commit_timeout_ms: u64,
    pub offset_metadata_max_bytes: usize,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i64,
    pub max_size: usize,
    /// kavka's own bound on one member's protocol metadata in JoinGroup: the leader receives
    /// every member's, and the group's stored record carries them all.
    pub member_metadata_max_bytes: usize,
    /// KIP-848 groups.
    pub consumer_session_timeout_ms: i32,
    pub consumer_heartbeat_interval_ms: i32,
    pub consumer_max_size: usize,
    /// Which group protocols clients may use ("classic", "consumer").
    pub consumer_protocol_enabled: bool,
}

/// Keys read here; config.rs lists them as known.
pub const GROUP_CONFIG_KEYS: &[&str] = &[
    "offsets.topic.num.partitions",
    "offsets.topic.segment.bytes",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "offsets.commit.timeout.ms",
    "offset.metadata.max.bytes",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.initial.rebalance.delay.ms",
    "group.max.size",
    "group.member.metadata.max.bytes",
    "group.consumer.session.timeout.ms",
    "group.consumer.heartbeat.interval.ms",
    "group.consumer.max.size",
    "group.coordinator.rebalance.protocols",
];

impl GroupConfig {
    pub fn from_props(props: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| props.get(k).map(String::as_str);
        let cfg = GroupConfig {
            offsets_topic_num_partitions: ranged(get, "offsets.topic.num.partitions", 50, 1, 1000)?,
            offsets_topic_segment_bytes: ranged(
                get,
                "offsets.topic.segment.bytes",
                104_857_600,
                1024,
                1 << 30,
            )?,
            offsets_retention_ms: ranged::<i64>(
                get,
                "offsets.retention.minutes",
                10080,
                1,
                i64::MAX / 60_000,
            )? * 60_000,
            offsets_retention_check_interval_ms: ranged(
                get,
                "offsets.retention.check.interval.ms",
                600_000,
                1,
                u64::MAX,
            )?,
            offsets_commit_timeout_ms: ranged(
                get,
                "offsets.commit.timeout.ms",
                5000,
                1,
                i32::MAX as u64,
            )?,
            offset_metadata_max_bytes: ranged(get, "offset.metadata.max.bytes", 4096, 0, 1 << 20)?,
            min_session_timeout_ms: ranged(get, "group.min.session.timeout.ms", 6000, 1, i32::MAX)?,
            max_session_timeout_ms: ranged(
                get,
                "group.max.session.timeout.ms",
                1_800_000,
                1,
                i32::MAX,
            )?,
            initial_rebalance_delay_ms: ranged(
                get,
                "group.initial.rebalance.delay.ms",
                3000,
                0,
                i64::from(i32::MAX),
            )?,
            max_size: ranged(get, "group.max.size", 10_000, 1, 1_000_000)?,
            member_metadata_max_bytes: ranged(
                get,
                "group.member.metadata.max.bytes",
                1 << 20,
                1024,
                64 << 20,
            )?,
            consumer_session_timeout_ms: ranged(
                get,
                "group.consumer.session.timeout.ms",
                45_000,
                1,
                i32::MAX,
            )?,
            consumer_heartbeat_interval_ms: ranged(
                get,
                "group.consumer.heartbeat.interval.ms",
                5000,
                1,
                i32::MAX,
            )?,
            consumer_max_size: ranged(get, "group.consumer.max.size", 10_000, 1, 1_000_000)?,
            consumer_protocol_enabled: match get("group.coordinator.rebalance.protocols") {
                None => true,
                Some(list) => {
                    let mut consumer = false;
                    for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        match p {
                            "classic" => {}
                            "consumer" => consumer = true,
                            other => {
                                return Err(invalid(
                                    "group.coordinator.rebalance.protocols",
                                    list,
                                    format!("unknown protocol '{other}' (classic, consumer)"),
                                ))
                            }
                        }
                    }
                    consumer
                }
            },
        };
        if cfg.min_session_timeout_ms > cfg.max_session_timeout_ms {
            return Err(invalid(
                "group.min.session.timeout.ms",
                &cfg.min_session_timeout_ms.to_string(),
                "must not exceed group.max.session.timeout.ms".into(),
            ));
        }
        Ok(cfg)
    }
}

pub(crate) fn invalid(key: &str, value: &str, reason: String) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// A numeric config value within `min..=max`, `default` when absent (shared by the group
/// and transaction configs).
pub(crate) fn ranged<'a, T>(
    get: impl Fn(&str) -> Option<&'a str>,
    key: &str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = get(key) else {
        return Ok(default);
    };
    let v: T = raw
        .trim()
        .parse()
        .map_err(|_| invalid(key, raw, "not a valid number".into()))?;
    if v < min || v > max {
        return Err(invalid(
            key,
            raw,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let mut p = BTreeMap::new();
        let c = GroupConfig::from_props(&p).unwrap();
        assert_eq!(c.offsets_topic_num_partitions, 50);
        assert_eq!(c.offsets_retention_ms, 7 * 24 * 3600 * 1000);
        assert!(c.consumer_protocol_enabled);
        assert_eq!(c.offsets_commit_timeout_ms, 5000);
        p.insert("group.initial.rebalance.delay.ms".into(), "-1".into());
        assert!(GroupConfig::from_props(&p).is_err());
        p.clear();
        p.insert(
            "group.coordinator.rebalance.protocols".into(),
            "classic".into(),
        );
        assert!(
            !GroupConfig::from_props(&p)
                .unwrap()
                .consumer_protocol_enabled
        );
        p.insert("group.coordinator.rebalance.protocols".into(), "x".into());
        assert!(GroupConfig::from_props(&p).is_err());
    }
}
