//! The transaction coordinator's broker settings (Kafka's `transaction.*` and
//! `transactional.id.*` keys).

use crate::config::ConfigError;
use crate::group::config::{invalid, ranged};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// Partitions of `__transaction_state` (fixed once the topic exists).
    pub log_num_partitions: i32,
    /// Replicas `__transaction_state` is created with, capped at the live brokers.
    pub log_replication_factor: i16,
    /// The topic's min.insync.replicas, capped at its replication factor.
    pub log_min_isr: i32,
    pub log_segment_bytes: u64,
    /// Longest transaction.timeout.ms a producer may ask for.
    pub max_timeout_ms: i32,
    /// An idle transactional id (no transaction for this long) is forgotten.
    pub id_expiration_ms: i64,
    /// How often Ongoing transactions are checked against their timeout.
    pub abort_timed_out_interval_ms: u64,
    /// How often expired transactional ids are removed.
    pub remove_expired_interval_ms: u64,
    /// How long a `__transaction_state` write waits for the ISR before the client hears
    /// COORDINATOR_NOT_AVAILABLE (Kafka uses the request timeout of its append).
    pub write_timeout_ms: u64,
    /// `transaction.partition.verification.enable` (KIP-890 part 1): a partition leader asks
    /// the transaction coordinator whether a transactional batch's partition was added to
    /// the producer's transaction before appending the batch that starts it there.
    pub partition_verification_enable: bool,
}

impl Default for TxnConfig {
    fn default() -> Self {
        // Parsing an empty property set yields Kafka's defaults.
        TxnConfig::from_props(&BTreeMap::new()).unwrap_or(TxnConfig {
            log_num_partitions: 50,
            log_replication_factor: 3,
            log_min_isr: 2,
            log_segment_bytes: 104_857_600,
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
            abort_timed_out_interval_ms: 10_000,
            remove_expired_interval_ms: 3_600_000,
            write_timeout_ms: 5000,
            partition_verification_enable: true,
        })
    }
}

/// Keys read here; config.rs lists them as known.
pub const TXN_CONFIG_KEYS: &[&str] = &[
    "transaction.state.log.num.partitions",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "transaction.state.log.segment.bytes",
    "transaction.max.timeout.ms",
    "transactional.id.expiration.ms",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    "transaction.remove.expired.transaction.cleanup.interval.ms",
    "transaction.partition.verification.enable",
];

impl TxnConfig {
    pub fn from_props(props: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| props.get(k).map(String::as_str);
        Ok(TxnConfig {
            log_num_partitions: ranged(get, "transaction.state.log.num.partitions", 50, 1, 1000)?,
            log_replication_factor: ranged(
                get,
                "transaction.state.log.replication.factor",
                3,
                1,
                i16::MAX,
            )?,
            log_min_isr: ranged(get, "transaction.state.log.min.isr", 2, 1, i32::MAX)?,
            log_segment_bytes: ranged(
                get,
                "transaction.state.log.segment.bytes",
                104_857_600,
                1024,
                1 << 30,
            )?,
            max_timeout_ms: ranged(get, "transaction.max.timeout.ms", 900_000, 1, i32::MAX)?,
            id_expiration_ms: ranged(
                get,
                "transactional.id.expiration.ms",
                604_800_000,
                1,
                i64::from(i32::MAX),
            )?,
            abort_timed_out_interval_ms: ranged(
                get,
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                10_000,
                1,
                i32::MAX as u64,
            )?,
            remove_expired_interval_ms: ranged(
                get,
                "transaction.remove.expired.transaction.cleanup.interval.ms",
                3_600_000,
                1,
                i32::MAX as u64,
            )?,
            write_timeout_ms: 5000,
            partition_verification_enable: boolean(
                get,
                "transaction.partition.verification.enable",
                true,
            )?,
        })
    }
}

fn boolean<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    key: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(key).map(str::trim) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(invalid(key, v, "must be true or false".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_config_defaults_and_bad_values() {
        let mut p = BTreeMap::new();
        let c = TxnConfig::from_props(&p).unwrap();
        assert_eq!(c.log_num_partitions, 50);
        assert_eq!(c.log_replication_factor, 3);
        assert_eq!(c.log_min_isr, 2);
        assert_eq!(c.max_timeout_ms, 900_000);
        assert_eq!(c.id_expiration_ms, 7 * 24 * 3600 * 1000);
        assert_eq!(c.abort_timed_out_interval_ms, 10_000);
        assert_eq!(c.remove_expired_interval_ms, 3_600_000);
        p.insert("transaction.state.log.num.partitions".into(), "0".into());
        assert!(TxnConfig::from_props(&p).is_err());
        p.clear();
        p.insert("transaction.max.timeout.ms".into(), "x".into());
        assert!(TxnConfig::from_props(&p).is_err());
        p.insert("transaction.max.timeout.ms".into(), "60000".into());
        assert_eq!(TxnConfig::from_props(&p).unwrap().max_timeout_ms, 60_000);
        assert!(c.partition_verification_enable);
        p.insert(
            "transaction.partition.verification.enable".into(),
            "false".into(),
        );
        assert!(
            !TxnConfig::from_props(&p)
                .unwrap()
                .partition_verification_enable
        );
        p.insert(
            "transaction.partition.verification.enable".into(),
            "maybe".into(),
        );
        assert!(TxnConfig::from_props(&p).is_err());
    }
}
