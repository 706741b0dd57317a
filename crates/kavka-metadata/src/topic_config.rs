//! The topic configs Kafka knows: type, validation, Kafka's default and the broker properties
//! a topic inherits from when it has no override. Serves CreateTopics/AlterConfigs validation
//! and DescribeConfigs.

use std::collections::BTreeMap;

use crate::error::ControllerError;

/// Kafka's `ConfigType` ids as sent in DescribeConfigs responses (v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Unknown = 0,
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
    Class = 8,
    Password = 9,
}

impl ConfigType {
    /// The wire id.
    pub fn id(self) -> i8 {
        self as i8
    }
}

/// Where a config value comes from, with Kafka's DescribeConfigs source ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Unknown = 0,
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

impl ConfigSource {
    /// The wire id.
    pub fn id(self) -> i8 {
        self as i8
    }
}

impl From<i8> for ConfigSource {
    fn from(id: i8) -> Self {
        match id {
            1 => Self::DynamicTopic,
            2 => Self::DynamicBroker,
            3 => Self::DynamicDefaultBroker,
            4 => Self::StaticBroker,
            5 => Self::Default,
            _ => Self::Unknown,
        }
    }
}

/// One row of a DescribeConfigs answer for a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub is_sensitive: bool,
    pub read_only: bool,
    /// `(name, value, source)` from the winning source down to the default, as Kafka lists them.
    pub synonyms: Vec<(String, Option<String>, ConfigSource)>,
    /// A [`ConfigType`] id.
    pub config_type: i8,
    pub documentation: Option<String>,
}

impl ConfigEntry {
    /// An entry without synonyms or documentation, e.g. for a broker property. Its type is
    /// known when the property is the broker-level default of a topic config.
    pub fn simple(
        name: impl Into<String>,
        value: Option<String>,
        source: impl Into<ConfigSource>,
    ) -> Self {
        let name = name.into();
        let config_type = broker_synonym(&name).map_or(ConfigType::Unknown, |(d, s)| {
            if s.unit_ms == HOUR_MS || s.unit_ms == MINUTE_MS {
                ConfigType::Int
            } else {
                d.config_type
            }
        });
        Self {
            name,
            value,
            source: source.into(),
            is_sensitive: false,
            read_only: false,
            synonyms: Vec::new(),
            config_type: config_type.id(),
            documentation: None,
        }
    }
}

/// How a value is checked beyond parsing as its type.
#[derive(Debug, Clone, Copy)]
enum Validator {
    None,
    AtLeast(i64),
    Between(i64, i64),
    Ratio,
    OneOf(&'static [&'static str]),
    ListOf(&'static [&'static str]),
    GzipLevel,
    ThrottledReplicas,
    /// Tiered storage is not implemented, so it can only be left off.
    MustBeFalse,
}

/// A broker property a topic config inherits from; `unit_ms` converts its unit to the topic
/// config's (log.retention.hours → retention.ms is 3,600,000).
#[derive(Debug, Clone, Copy)]
pub struct BrokerSynonym {
    pub name: &'static str,
    pub unit_ms: i64,
}

/// The definition of one topic config.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    /// Kafka's default, used when neither the topic nor the broker sets it.
    pub default: &'static str,
    /// Broker properties it inherits from, highest precedence first.
    pub synonyms: &'static [BrokerSynonym],
    pub doc: &'static str,
    validator: Validator,
}

const LONG_MAX: &str = "9223372036854775807";
const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;

const fn syn(name: &'static str) -> BrokerSynonym {
    BrokerSynonym { name, unit_ms: 1 }
}

const fn def(
    name: &'static str,
    config_type: ConfigType,
    default: &'static str,
    validator: Validator,
    synonyms: &'static [BrokerSynonym],
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        config_type,
        default,
        synonyms,
        doc,
        validator,
    }
}

use ConfigType as T;
use Validator as V;

/// Every topic config, sorted by name.
static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def("cleanup.policy", T::List, "delete", V::ListOf(&["compact", "delete"]), &[syn("log.cleanup.policy")],
        "The retention policy for old log segments: \"delete\", \"compact\" or both."),
    def("compression.gzip.level", T::Int, "-1", V::GzipLevel, &[syn("compression.gzip.level")],
        "The compression level to use if compression.type is gzip."),
    def("compression.lz4.level", T::Int, "9", V::Between(1, 17), &[syn("compression.lz4.level")],
        "The compression level to use if compression.type is lz4."),
    def("compression.type", T::String, "producer",
        V::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]), &[syn("compression.type")],
        "The final compression type for the topic; \"producer\" keeps the producer's codec."),
    def("compression.zstd.level", T::Int, "3", V::Between(-131_072, 22), &[syn("compression.zstd.level")],
        "The compression level to use if compression.type is zstd."),
    def("delete.retention.ms", T::Long, "86400000", V::AtLeast(0), &[syn("log.cleaner.delete.retention.ms")],
        "How long delete tombstones are retained on compacted topics."),
    def("file.delete.delay.ms", T::Long, "60000", V::AtLeast(0), &[syn("log.segment.delete.delay.ms")],
        "How long to wait before deleting a file from the filesystem."),
    def("flush.messages", T::Long, LONG_MAX, V::AtLeast(1), &[syn("log.flush.interval.messages")],
        "Messages written before an fsync of the log is forced."),
    def("flush.ms", T::Long, LONG_MAX, V::AtLeast(0),
        &[syn("log.flush.interval.ms"), syn("log.flush.scheduler.interval.ms")],
        "Time after which an fsync of the log is forced."),
    def("follower.replication.throttled.replicas", T::List, "", V::ThrottledReplicas, &[],
        "Replicas throttled on the follower side: partitionId:brokerId pairs or \"*\"."),
    def("index.interval.bytes", T::Int, "4096", V::AtLeast(0), &[syn("log.index.interval.bytes")],
        "How often an entry is added to the offset index."),
    def("leader.replication.throttled.replicas", T::List, "", V::ThrottledReplicas, &[],
        "Replicas throttled on the leader side: partitionId:brokerId pairs or \"*\"."),
    def("local.retention.bytes", T::Long, "-2", V::AtLeast(-2), &[syn("log.local.retention.bytes")],
        "Local retention size with tiered storage; -2 uses retention.bytes."),
    def("local.retention.ms", T::Long, "-2", V::AtLeast(-2), &[syn("log.local.retention.ms")],
        "Local retention time with tiered storage; -2 uses retention.ms."),
    def("max.compaction.lag.ms", T::Long, LONG_MAX, V::AtLeast(1), &[syn("log.cleaner.max.compaction.lag.ms")],
        "The maximum time a message remains ineligible for compaction."),
    def("max.message.bytes", T::Int, "1048588", V::AtLeast(0), &[syn("message.max.bytes")],
        "The largest record batch size allowed."),
    def("message.downconversion.enable", T::Boolean, "true", V::None, &[syn("log.message.downconversion.enable")],
        "Whether fetches by old consumers down-convert the message format."),
    def("message.timestamp.after.max.ms", T::Long, LONG_MAX, V::AtLeast(0),
        &[syn("log.message.timestamp.after.max.ms")],
        "How far a record timestamp may be ahead of the broker time (CreateTime)."),
    def("message.timestamp.before.max.ms", T::Long, LONG_MAX, V::AtLeast(0),
        &[syn("log.message.timestamp.before.max.ms")],
        "How far a record timestamp may be behind the broker time (CreateTime)."),
    def("message.timestamp.difference.max.ms", T::Long, LONG_MAX, V::AtLeast(0),
        &[syn("log.message.timestamp.difference.max.ms")],
        "Deprecated: the maximum difference between a record timestamp and the broker time."),
    def("message.timestamp.type", T::String, "CreateTime", V::OneOf(&["CreateTime", "LogAppendTime"]),
        &[syn("log.message.timestamp.type")],
        "Whether the record timestamp is the producer's create time or the log append time."),
    def("min.cleanable.dirty.ratio", T::Double, "0.5", V::Ratio, &[syn("log.cleaner.min.cleanable.ratio")],
        "How dirty the log must be before the cleaner compacts it."),
    def("min.compaction.lag.ms", T::Long, "0", V::AtLeast(0), &[syn("log.cleaner.min.compaction.lag.ms")],
        "The minimum time a message remains uncompacted."),
    def("min.insync.replicas", T::Int, "1", V::AtLeast(1), &[syn("min.insync.replicas")],
        "The minimum number of in-sync replicas for an acks=all produce to succeed."),
    def("preallocate", T::Boolean, "false", V::None, &[syn("log.preallocate")],
        "Whether to preallocate the file when creating a new segment."),
    def("remote.storage.enable", T::Boolean, "false", V::MustBeFalse, &[],
        "Tiered storage for the topic (not supported by kavka)."),
    def("retention.bytes", T::Long, "-1", V::None, &[syn("log.retention.bytes")],
        "The maximum size a partition's log may reach before old segments are discarded; -1 = no limit."),
    def("retention.ms", T::Long, "604800000", V::AtLeast(-1),
        &[syn("log.retention.ms"), BrokerSynonym { name: "log.retention.minutes", unit_ms: MINUTE_MS },
          BrokerSynonym { name: "log.retention.hours", unit_ms: HOUR_MS }],
        "How long a log is retained before old segments are discarded; -1 = no limit."),
    def("segment.bytes", T::Int, "1073741824", V::AtLeast(14), &[syn("log.segment.bytes")],
        "The segment file size of the log."),
    def("segment.index.bytes", T::Int, "10485760", V::AtLeast(4), &[syn("log.index.size.max.bytes")],
        "The size of the index that maps offsets to file positions."),
    def("segment.jitter.ms", T::Long, "0", V::AtLeast(0),
        &[syn("log.roll.jitter.ms"), BrokerSynonym { name: "log.roll.jitter.hours", unit_ms: HOUR_MS }],
        "The maximum random jitter subtracted from the scheduled segment roll time."),
    def("segment.ms", T::Long, "604800000", V::AtLeast(1),
        &[syn("log.roll.ms"), BrokerSynonym { name: "log.roll.hours", unit_ms: HOUR_MS }],
        "The period after which the log rolls a new segment even if the segment is not full."),
    def("unclean.leader.election.enable", T::Boolean, "false", V::None, &[syn("unclean.leader.election.enable")],
        "Whether replicas outside the ISR may be elected leader as a last resort."),
];

/// All topic config definitions, sorted by name.
pub fn topic_config_defs() -> &'static [TopicConfigDef] {
    TOPIC_CONFIGS
}

/// The definition of topic config `name`.
pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .binary_search_by(|d| d.name.cmp(name))
        .ok()
        .and_then(|i| TOPIC_CONFIGS.get(i))
}

/// Whether `name` is a LIST-typed topic config (the only kind that accepts APPEND/SUBTRACT).
pub fn is_list_config(name: &str) -> bool {
    topic_config_def(name).is_some_and(|d| d.config_type == ConfigType::List)
}

/// Checks one topic config: known name, value parses as its type and passes its validator.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ControllerError> {
    let def = topic_config_def(name).ok_or_else(|| {
        ControllerError::InvalidConfig(format!("Unknown topic config name: {name}"))
    })?;
    check_value(def, value).map_err(|reason| {
        ControllerError::InvalidConfig(format!(
            "Invalid value {value} for configuration {name}: {reason}"
        ))
    })
}

/// Checks a whole set of topic overrides, including rules that span configs.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), ControllerError> {
    for (name, value) in configs {
        validate_topic_config(name, value)?;
    }
    let lag = |name: &str| -> i64 {
        configs
            .get(name)
            .map(String::as_str)
            .or_else(|| topic_config_def(name).map(|d| d.default))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (min_lag, max_lag) = (lag("min.compaction.lag.ms"), lag("max.compaction.lag.ms"));
    if min_lag > max_lag {
        return Err(ControllerError::InvalidConfig(format!(
            "conflict topic config setting min.compaction.lag.ms ({min_lag}) > max.compaction.lag.ms ({max_lag})"
        )));
    }
    Ok(())
}

/// The replication throttle rates (KIP-73), dynamic broker configs in bytes/s with no topic
/// counterpart.
pub const REPLICATION_THROTTLE_RATES: [&str; 2] = [
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
];

/// Checks a dynamic broker config. Kavka accepts the broker-level defaults of topic configs
/// (log.retention.ms, message.max.bytes, ...), the set Kafka reconfigures without restart;
/// anything else is refused as Kafka refuses non-dynamic keys.
pub fn validate_dynamic_broker_config(name: &str, value: &str) -> Result<(), ControllerError> {
    if REPLICATION_THROTTLE_RATES.contains(&name) {
        // KIP-73: bytes/s, a Long at least 0 (absent means Long.MAX, unthrottled).
        return match value.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(()),
            Ok(_) => Err(ControllerError::InvalidConfig(format!(
                "Invalid value {value} for configuration {name}: Value must be at least 0"
            ))),
            Err(_) => Err(ControllerError::InvalidConfig(format!(
                "Invalid value {value} for configuration {name}: Not a valid number"
            ))),
        };
    }
    let Some((def, synonym)) = broker_synonym(name) else {
        return Err(ControllerError::InvalidRequest(format!(
            "Cannot update these configs dynamically: {name}"
        )));
    };
    let converted = convert_broker_value(def, synonym, value).ok_or_else(|| {
        ControllerError::InvalidConfig(format!(
            "Invalid value {value} for configuration {name}: Not a valid number"
        ))
    })?;
    check_value(def, &converted).map_err(|reason| {
        ControllerError::InvalidConfig(format!(
            "Invalid value {value} for configuration {name}: {reason}"
        ))
    })
}

fn broker_synonym(name: &str) -> Option<(&'static TopicConfigDef, &'static BrokerSynonym)> {
    TOPIC_CONFIGS
        .iter()
        .find_map(|d| d.synonyms.iter().find(|s| s.name == name).map(|s| (d, s)))
}

/// The broker property's value in the topic config's unit, or `None` if it does not parse.
/// Negative retention in minutes/hours means "unlimited", as in Kafka.
fn convert_broker_value(
    def: &TopicConfigDef,
    synonym: &BrokerSynonym,
    raw: &str,
) -> Option<String> {
    if synonym.unit_ms == 1 {
        return Some(raw.trim().to_owned());
    }
    let n: i64 = raw.trim().parse().ok()?;
    if n < 0 && def.name == "retention.ms" {
        return Some("-1".to_owned());
    }
    n.checked_mul(synonym.unit_ms).map(|v| v.to_string())
}

fn check_value(def: &TopicConfigDef, value: &str) -> Result<(), String> {
    let v = value.trim();
    match def.config_type {
        ConfigType::Boolean => {
            if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                return Err("Expected value to be either true or false".into());
            }
        }
        ConfigType::Int | ConfigType::Short => {
            v.parse::<i32>()
                .map_err(|_| "Not a number of type INT".to_owned())?;
        }
        ConfigType::Long => {
            v.parse::<i64>()
                .map_err(|_| "Not a number of type LONG".to_owned())?;
        }
        ConfigType::Double => {
            let d = v
                .parse::<f64>()
                .map_err(|_| "Not a number of type DOUBLE".to_owned())?;
            if d.is_nan() {
                return Err("Not a number of type DOUBLE".into());
            }
        }
        ConfigType::Unknown
        | ConfigType::String
        | ConfigType::List
        | ConfigType::Class
        | ConfigType::Password => {}
    }
    let int = || v.parse::<i64>().unwrap_or(0);
    match def.validator {
        Validator::None => Ok(()),
        Validator::AtLeast(min) if int() < min => Err(format!("Value must be at least {min}")),
        Validator::AtLeast(_) => Ok(()),
        Validator::Between(min, max) => {
            let n = int();
            if n < min {
                Err(format!("Value must be at least {min}"))
            } else if n > max {
                Err(format!("Value must be no more than {max}"))
            } else {
                Ok(())
            }
        }
        Validator::Ratio => match v.parse::<f64>() {
            Ok(d) if (0.0..=1.0).contains(&d) => Ok(()),
            Ok(d) if d < 0.0 => Err("Value must be at least 0".into()),
            _ => Err("Value must be no more than 1".into()),
        },
        Validator::OneOf(allowed) if allowed.contains(&v) => Ok(()),
        Validator::OneOf(allowed) => Err(format!("String must be one of: {}", allowed.join(", "))),
        Validator::ListOf(allowed) => {
            match split_list(v)
                .into_iter()
                .find(|item| !allowed.contains(&item.as_str()))
            {
                Some(bad) => Err(format!(
                    "Invalid value {bad} for configuration {}: String must be one of: {}",
                    def.name,
                    allowed.join(", ")
                )),
                None => Ok(()),
            }
        }
        Validator::GzipLevel => {
            let n = int();
            if n == -1 || (1..=9).contains(&n) {
                Ok(())
            } else {
                Err("Value must be between 1 and 9, or -1".into())
            }
        }
        Validator::ThrottledReplicas => {
            let items = split_list(v);
            let pair = |s: &str| {
                s.split_once(':').is_some_and(|(p, b)| {
                    p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                })
            };
            if items.len() == 1 && items.first().is_some_and(|s| s == "*")
                || items.iter().all(|s| pair(s))
            {
                Ok(())
            } else {
                Err(
                    "must be the literal '*' or a list of replicas in the following format: \
                     [partitionId]:[brokerId],[partitionId]:[brokerId],..."
                        .into(),
                )
            }
        }
        Validator::MustBeFalse if v.eq_ignore_ascii_case("false") => Ok(()),
        Validator::MustBeFalse => {
            Err("Tiered Storage functionality is disabled in the broker".into())
        }
    }
}

/// Splits a LIST value as Kafka does: comma-separated, trimmed, empty string = empty list.
pub fn split_list(value: &str) -> Vec<String> {
    if value.trim().is_empty() {
        return Vec::new();
    }
    value.split(',').map(|s| s.trim().to_owned()).collect()
}

/// One layer of broker properties, from the most specific (dynamic per-broker) to the least
/// (static `server.properties`).
pub type BrokerLayer<'a> = (ConfigSource, &'a BTreeMap<String, String>);

/// DescribeConfigs for a topic: every topic config with its effective value and source.
/// `broker_props` are the static broker properties (server.properties and overrides).
pub fn describe_topic_configs(
    topic_overrides: &BTreeMap<String, String>,
    broker_props: &BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    describe_topic_configs_layered(
        topic_overrides,
        &[(ConfigSource::StaticBroker, broker_props)],
    )
}

/// Like [`describe_topic_configs`], with several broker layers (e.g. dynamic per-broker,
/// dynamic cluster default, static), most specific first.
pub fn describe_topic_configs_layered(
    topic_overrides: &BTreeMap<String, String>,
    broker_layers: &[BrokerLayer<'_>],
) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| describe_one(def, topic_overrides, broker_layers))
        .collect()
}

fn describe_one(
    def: &TopicConfigDef,
    topic_overrides: &BTreeMap<String, String>,
    broker_layers: &[BrokerLayer<'_>],
) -> ConfigEntry {
    let mut synonyms = Vec::new();
    let mut winner: Option<(String, ConfigSource)> = None;
    if let Some(v) = topic_overrides.get(def.name) {
        synonyms.push((
            def.name.to_owned(),
            Some(v.clone()),
            ConfigSource::DynamicTopic,
        ));
        winner = Some((v.clone(), ConfigSource::DynamicTopic));
    }
    for (source, props) in broker_layers {
        for synonym in def.synonyms {
            let Some(raw) = props.get(synonym.name) else {
                continue;
            };
            synonyms.push((synonym.name.to_owned(), Some(raw.clone()), *source));
            if winner.is_none() {
                if let Some(v) = convert_broker_value(def, synonym, raw) {
                    winner = Some((v, *source));
                }
            }
        }
    }
    let default_name = def.synonyms.first().map_or(def.name, |s| s.name);
    synonyms.push((
        default_name.to_owned(),
        Some(def.default.to_owned()),
        ConfigSource::Default,
    ));
    let (value, source) = winner.unwrap_or_else(|| (def.default.to_owned(), ConfigSource::Default));
    ConfigEntry {
        name: def.name.to_owned(),
        value: Some(value),
        source,
        is_sensitive: false,
        read_only: false,
        synonyms,
        config_type: def.config_type.id(),
        documentation: Some(def.doc.to_owned()),
    }
}

/// The effective value of every topic config (override, else broker property, else default):
/// what the log of this topic should run with.
pub fn effective_topic_configs(
    topic_overrides: &BTreeMap<String, String>,
    broker_props: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    describe_topic_configs(topic_overrides, broker_props)
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn entry<'a>(entries: &'a [ConfigEntry], name: &str) -> &'a ConfigEntry {
        entries
            .iter()
            .find(|e| e.name == name)
            .expect("entry present")
    }

    #[test]
    fn catalog_is_sorted_and_defaults_are_valid() {
        assert!(TOPIC_CONFIGS.windows(2).all(|w| w[0].name < w[1].name));
        for d in TOPIC_CONFIGS {
            assert!(
                validate_topic_config(d.name, d.default).is_ok(),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn validation() {
        let code = |n: &str, v: &str| validate_topic_config(n, v).map_err(|e| e.code());
        assert_eq!(code("retention.ms", "-1"), Ok(()));
        assert_eq!(code("retention.ms", "-2"), Err(40));
        assert_eq!(code("retention.ms", "abc"), Err(40));
        assert_eq!(code("no.such.config", "1"), Err(40));
        assert_eq!(code("cleanup.policy", "compact,delete"), Ok(()));
        assert_eq!(code("cleanup.policy", "compact, bogus"), Err(40));
        assert_eq!(code("compression.type", "zstd"), Ok(()));
        assert_eq!(code("compression.type", "brotli"), Err(40));
        assert_eq!(code("min.cleanable.dirty.ratio", "1.5"), Err(40));
        assert_eq!(code("min.cleanable.dirty.ratio", "0.1"), Ok(()));
        assert_eq!(code("max.message.bytes", "99999999999"), Err(40));
        assert_eq!(code("unclean.leader.election.enable", "TRUE"), Ok(()));
        assert_eq!(code("unclean.leader.election.enable", "yes"), Err(40));
        assert_eq!(code("compression.gzip.level", "0"), Err(40));
        assert_eq!(code("compression.gzip.level", "-1"), Ok(()));
        assert_eq!(
            code("leader.replication.throttled.replicas", "0:1, 1:2"),
            Ok(())
        );
        assert_eq!(code("leader.replication.throttled.replicas", "*"), Ok(()));
        assert_eq!(code("leader.replication.throttled.replicas", "x"), Err(40));
        assert_eq!(code("remote.storage.enable", "true"), Err(40));
        assert_eq!(code("min.insync.replicas", "0"), Err(40));
        let conflict = map(&[
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "5"),
        ]);
        assert_eq!(
            validate_topic_configs(&conflict).map_err(|e| e.code()),
            Err(40)
        );
    }

    #[test]
    fn describe_sources_and_retention_precedence() {
        let overrides = map(&[("cleanup.policy", "compact")]);
        let broker = map(&[
            ("log.retention.hours", "1"),
            ("log.retention.minutes", "2"),
            ("log.segment.bytes", "1024"),
        ]);
        let entries = describe_topic_configs(&overrides, &broker);
        assert_eq!(entries.len(), TOPIC_CONFIGS.len());

        let cleanup = entry(&entries, "cleanup.policy");
        assert_eq!(
            (cleanup.value.as_deref(), cleanup.source),
            (Some("compact"), ConfigSource::DynamicTopic)
        );
        assert_eq!(cleanup.source.id(), 1);
        assert_eq!(cleanup.config_type, 7);

        // minutes beat hours; ms would beat both.
        let retention = entry(&entries, "retention.ms");
        assert_eq!(retention.value.as_deref(), Some("120000"));
        assert_eq!(retention.source, ConfigSource::StaticBroker);
        assert_eq!(retention.source.id(), 4);
        assert_eq!(
            retention.synonyms.first().map(|s| s.0.as_str()),
            Some("log.retention.minutes")
        );
        assert_eq!(
            retention.synonyms.last().map(|s| s.2),
            Some(ConfigSource::Default)
        );

        let broker_ms = map(&[("log.retention.hours", "1"), ("log.retention.ms", "7")]);
        let e = describe_topic_configs(&BTreeMap::new(), &broker_ms);
        assert_eq!(entry(&e, "retention.ms").value.as_deref(), Some("7"));
        let hours_only = map(&[("log.retention.hours", "2")]);
        let e = describe_topic_configs(&BTreeMap::new(), &hours_only);
        assert_eq!(entry(&e, "retention.ms").value.as_deref(), Some("7200000"));
        let unlimited = map(&[("log.retention.hours", "-1")]);
        let e = describe_topic_configs(&BTreeMap::new(), &unlimited);
        assert_eq!(entry(&e, "retention.ms").value.as_deref(), Some("-1"));

        let seg = entry(&entries, "segment.bytes");
        assert_eq!(
            (seg.value.as_deref(), seg.source),
            (Some("1024"), ConfigSource::StaticBroker)
        );
        let flush = entry(&entries, "flush.messages");
        assert_eq!(
            (flush.value.as_deref(), flush.source),
            (Some(LONG_MAX), ConfigSource::Default)
        );
        assert_eq!(flush.source.id(), 5);
        assert_eq!(flush.config_type, ConfigType::Long.id());

        let eff = effective_topic_configs(&overrides, &broker);
        assert_eq!(
            eff.get("max.message.bytes").map(String::as_str),
            Some("1048588")
        );
    }

    #[test]
    fn dynamic_broker_configs() {
        assert!(validate_dynamic_broker_config("log.retention.ms", "1000").is_ok());
        assert!(validate_dynamic_broker_config("log.retention.hours", "-1").is_ok());
        assert_eq!(
            validate_dynamic_broker_config("log.retention.ms", "x").map_err(|e| e.code()),
            Err(40)
        );
        assert_eq!(
            validate_dynamic_broker_config("log.dirs", "/x").map_err(|e| e.code()),
            Err(42)
        );
        for name in REPLICATION_THROTTLE_RATES {
            assert!(validate_dynamic_broker_config(name, "1048576").is_ok());
            assert!(validate_dynamic_broker_config(name, "0").is_ok());
            let code = |v| validate_dynamic_broker_config(name, v).map_err(|e| e.code());
            assert_eq!(code("-1"), Err(40));
            assert_eq!(code("fast"), Err(40));
        }
    }
}
