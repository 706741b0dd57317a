//! Broker configuration: Apache Kafka's `server.properties` keys, parsed and validated.
//!
//! A bad value is an error naming the key (the broker does not start); an unknown key is a
//! warning, so a Kafka user's existing file still works.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid value '{value}' for '{key}': {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("cannot read properties file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("malformed override '{0}': expected key=value")]
    MalformedOverride(String),
}

/// A `listeners` entry, e.g. `PLAINTEXT://127.0.0.1:9092`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    pub fn bind_addr(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Broker-wide defaults for partition logs (the `log.*` keys); topics override them.
#[derive(Debug, Clone, PartialEq)]
pub struct LogDefaults {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub roll_ms: i64,
    pub flush_interval_messages: u64,
    pub flush_interval_ms: i64,
    pub index_interval_bytes: usize,
    pub segment_index_bytes: usize,
    pub message_timestamp_type_log_append: bool,
    pub file_delete_delay_ms: i64,
    pub cleanup_policy: String,
    /// `producer.id.expiration.ms`: idle idempotent producers are forgotten after this.
    pub producer_id_expiration_ms: i64,
    /// `log.cleaner.min.cleanable.ratio` (topic: `min.cleanable.dirty.ratio`).
    pub min_cleanable_ratio: f64,
    /// `log.cleaner.delete.retention.ms` (topic: `delete.retention.ms`).
    pub delete_retention_ms: i64,
}

/// The log cleaner (Kafka's `log.cleaner.*` broker settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanerSettings {
    /// `log.cleaner.enable`.
    pub enable: bool,
    /// `log.cleaner.backoff.ms`: sleep when no log needs cleaning.
    pub backoff_ms: u64,
    /// `log.cleaner.threads`: accepted; one cleaner task runs whatever the value.
    pub threads: u32,
    /// `log.cleaner.dedupe.buffer.size`: memory of the key map.
    pub dedupe_buffer_size: usize,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub listeners: Vec<Listener>,
    pub advertised_listeners: Vec<Listener>,
    pub log_dirs: Vec<PathBuf>,
    pub metadata_log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub retention_check_interval_ms: u64,
    pub flush_scheduler_interval_ms: u64,
    pub rack: Option<String>,
    pub log: LogDefaults,
    pub cleaner: CleanerSettings,
    /// Group coordinator settings (group.*, offsets.*).
    pub group: crate::group::GroupConfig,
    /// Transaction coordinator settings (transaction.*, transactional.id.*).
    pub txn: crate::txn::TxnConfig,
    /// Follower fetching, ISR and leader-election settings (replica.*).
    pub replication: ReplicationSettings,
    /// The metadata quorum, when `controller.quorum.voters` is set; `None` runs the single-node
    /// embedded controller with a local metadata log.
    pub cluster: Option<ClusterSettings>,
    /// Every key as given (after overrides), for DescribeConfigs on the broker resource.
    pub props: BTreeMap<String, String>,
}

/// Kafka's `replica.*` settings and friends: how followers fetch and when they drop out of
/// the ISR.
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    /// A follower that has not caught up to the leader's log end for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// Bytes a follower asks per partition in one Fetch.
    pub replica_fetch_max_bytes: i32,
    /// Bytes a follower asks in one Fetch over all partitions.
    pub replica_fetch_response_max_bytes: i32,
    pub replica_fetch_wait_max_ms: i32,
    pub replica_fetch_min_bytes: i32,
    /// Pause after a failed fetch (leader unreachable, error) before retrying.
    pub replica_fetch_backoff_ms: u64,
    /// A Fetch or OffsetForLeaderEpoch to the leader that takes longer fails and is retried.
    pub replica_socket_timeout_ms: u64,
    /// Elect an out-of-sync replica when no ISR member is alive (loses data; off by default).
    pub unclean_leader_election_enable: bool,
    /// Move leadership back to each partition's preferred (first) replica periodically.
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_ms: u64,
    /// Replication factor of `__consumer_offsets` (capped at the number of live brokers when
    /// the topic is created, so a single node still works).
    pub offsets_topic_replication_factor: i16,
}

/// One voter of the metadata quorum (`controller.quorum.voters` entry `id@host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumVoter {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

/// Cluster (KRaft-style) mode: the metadata log is replicated by a Raft quorum of voters.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Every voter, this node included (combined broker+controller mode).
    pub voters: Vec<QuorumVoter>,
    /// The controller listener this node binds for quorum traffic (a voter only).
    pub controller_listener: Listener,
    /// Whether this node is a voter of the quorum (process.roles includes controller); a
    /// broker-only node follows the quorum's image and forwards writes.
    pub is_voter: bool,
    /// The controller fences a broker whose heartbeats stop for this long.
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    /// Raft timing (controller.quorum.election.timeout.ms etc.).
    pub election_timeout_ms: u64,
    pub fetch_timeout_ms: u64,
}

/// Keys kavka reads. Anything else gets a warning.
const KNOWN_KEYS: &[&str] = &[
    "node.id",
    "broker.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "controller.listener.names",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "inter.broker.listener.name",
    "log.dirs",
    "log.dir",
    "producer.id.expiration.ms",
    "metadata.log.dir",
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "delete.topic.enable",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.retention.bytes",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.hours",
    "message.max.bytes",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.flush.scheduler.interval.ms",
    "log.retention.check.interval.ms",
    "log.index.interval.bytes",
    "log.index.size.max.bytes",
    "log.message.timestamp.type",
    "log.segment.delete.delay.ms",
    "log.cleanup.policy",
    "log.cleaner.enable",
    "log.cleaner.backoff.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.threads",
    "log.cleaner.dedupe.buffer.size",
    "socket.request.max.bytes",
    "broker.rack",
    "cluster.id",
    "replica.lag.time.max.ms",
    "replica.fetch.max.bytes",
    "replica.fetch.response.max.bytes",
    "replica.fetch.wait.max.ms",
    "replica.fetch.min.bytes",
    "replica.fetch.backoff.ms",
    "replica.socket.timeout.ms",
    "unclean.leader.election.enable",
    "auto.leader.rebalance.enable",
    "leader.imbalance.check.interval.seconds",
    "offsets.topic.replication.factor",
    "min.insync.replicas",
    "broker.session.timeout.ms",
    "broker.heartbeat.interval.ms",
    "controller.quorum.election.timeout.ms",
    "controller.quorum.fetch.timeout.ms",
];

/// Kafka keys that are accepted but have no effect in kavka (threads, buffers ...): a hint
/// rather than a warning.
const IGNORED_KEYS: &[&str] = &[
    "num.network.threads",
    "num.io.threads",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "num.recovery.threads.per.data.dir",
    "zookeeper.connect",
    "zookeeper.connection.timeout.ms",
];

/// Parses the Java `.properties` format: `key=value`, `key: value` or `key value`; `#` and
/// `!` comments; a trailing backslash continues the line.
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let split = entry
            .find(['=', ':'])
            .or_else(|| entry.find(char::is_whitespace));
        let (k, v) = match split {
            Some(i) => (&entry[..i], &entry[i + 1..]),
            None => (entry.as_str(), ""),
        };
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    out
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_listeners(key: &str, value: &str) -> Result<Vec<Listener>, ConfigError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once("://")
            .ok_or_else(|| invalid(key, value, "expected NAME://host:port"))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, value, "missing port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(key, value, "port is not a number 0-65535"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        out.push(Listener {
            name: name.to_string(),
            host,
            port,
        });
    }
    if out.is_empty() {
        return Err(invalid(key, value, "no listener given"));
    }
    Ok(out)
}

/// Cluster mode is on when `controller.quorum.voters` lists voters (`id@host:port,...`).
fn parse_cluster(
    props: &BTreeMap<String, String>,
    controller_listener: Option<Listener>,
    node_id: i32,
) -> Result<Option<ClusterSettings>, ConfigError> {
    let get = |k: &str| props.get(k).map(String::as_str);
    let Some(voters_text) = get("controller.quorum.voters").filter(|v| !v.trim().is_empty()) else {
        if get("controller.quorum.bootstrap.servers").is_some() {
            return Err(invalid(
                "controller.quorum.bootstrap.servers",
                get("controller.quorum.bootstrap.servers").unwrap_or(""),
                "dynamic quorums (KIP-853) are not supported yet: list the voters in controller.quorum.voters",
            ));
        }
        return Ok(None);
    };
    let key = "controller.quorum.voters";
    let mut voters: Vec<QuorumVoter> = Vec::new();
    for item in voters_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| invalid(key, voters_text, "expected id@host:port entries"))?;
        let node: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|n: &i32| *n >= 0)
            .ok_or_else(|| invalid(key, voters_text, "a voter id is not a node id"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, voters_text, "a voter lacks a port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(key, voters_text, "a voter port is not 1-65535"))?;
        if voters.iter().any(|v| v.node_id == node) {
            return Err(invalid(key, voters_text, "a voter id is listed twice"));
        }
        voters.push(QuorumVoter {
            node_id: node,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        });
    }
    if voters.is_empty() || voters.len() > 9 {
        return Err(invalid(
            key,
            voters_text,
            "between 1 and 9 voters are supported",
        ));
    }
    let is_voter = get("process.roles").is_none_or(|r| r.contains("controller"));
    let me = voters.iter().find(|v| v.node_id == node_id);
    let controller_listener = match (is_voter, me, controller_listener) {
        (false, Some(_), _) => {
            return Err(invalid(
                key,
                voters_text,
                format!("node.id {node_id} is a voter, but process.roles has no controller"),
            ))
        }
        // A broker-only node listens for no quorum traffic.
        (false, None, l) => l.unwrap_or(Listener {
            name: String::new(),
            host: String::new(),
            port: 0,
        }),
        (true, None, _) => {
            return Err(invalid(
                key,
                voters_text,
                format!(
                    "node.id {node_id} is not a voter (a controller node must be listed; use process.roles=broker for a broker-only node)"
                ),
            ))
        }
        (true, Some(_), Some(l)) => l,
        (true, Some(me), None) => {
            return Err(invalid(
                "controller.listener.names",
                get("controller.listener.names").unwrap_or(""),
                format!(
                    "cluster mode needs a controller listener in listeners (e.g. CONTROLLER://{}:{}) named by controller.listener.names",
                    me.host, me.port
                ),
            ))
        }
    };
    let num = |k: &str, default: u64| -> Result<u64, ConfigError> {
        match get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(k, v, "not a positive number")),
        }
    };
    Ok(Some(ClusterSettings {
        voters,
        controller_listener,
        is_voter,
        broker_session_timeout_ms: num("broker.session.timeout.ms", 9_000)?,
        broker_heartbeat_interval_ms: num("broker.heartbeat.interval.ms", 2_000)?,
        election_timeout_ms: num("controller.quorum.election.timeout.ms", 1_000)?,
        fetch_timeout_ms: num("controller.quorum.fetch.timeout.ms", 2_000)?,
    }))
}

impl BrokerConfig {
    /// Builds the config from properties text (may be empty) plus `key=value` overrides.
    /// Returns the config and the warnings to log.
    pub fn from_properties(
        text: &str,
        overrides: &[String],
    ) -> Result<(BrokerConfig, Vec<String>), ConfigError> {
        let mut props: BTreeMap<String, String> = parse_properties(text).into_iter().collect();
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::MalformedOverride(o.clone()))?;
            props.insert(k.trim().to_string(), v.trim().to_string());
        }
        let mut warnings = Vec::new();
        for k in props.keys() {
            if IGNORED_KEYS.contains(&k.as_str()) {
                warnings.push(format!("config '{k}' has no effect in kavka"));
            } else if !KNOWN_KEYS.contains(&k.as_str())
                && !crate::group::config::GROUP_CONFIG_KEYS.contains(&k.as_str())
                && !crate::txn::config::TXN_CONFIG_KEYS.contains(&k.as_str())
            {
                warnings.push(format!("unknown config '{k}' ignored"));
            }
        }
        let cfg = Self::build(props, &mut warnings)?;
        Ok((cfg, warnings))
    }

    fn build(
        props: BTreeMap<String, String>,
        warnings: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| props.get(k).map(String::as_str);
        fn num<T: std::str::FromStr>(
            key: &str,
            v: Option<&str>,
            default: T,
        ) -> Result<T, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => s.parse().map_err(|_| invalid(key, s, "not a valid number")),
            }
        }
        fn boolean(key: &str, v: Option<&str>, default: bool) -> Result<bool, ConfigError> {
            match v.map(|s| s.to_ascii_lowercase()) {
                None => Ok(default),
                Some(s) if s == "true" => Ok(true),
                Some(s) if s == "false" => Ok(false),
                Some(s) => Err(invalid(key, &s, "expected true or false")),
            }
        }
        fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
            key: &str,
            v: T,
            min: T,
        ) -> Result<T, ConfigError> {
            if v < min {
                return Err(invalid(
                    key,
                    &v.to_string(),
                    format!("must be at least {min}"),
                ));
            }
            Ok(v)
        }

        let node_id = match (get("node.id"), get("broker.id")) {
            (Some(v), _) => num("node.id", Some(v), 1)?,
            (None, Some(v)) => num("broker.id", Some(v), 1)?,
            (None, None) => 1,
        };
        let node_id = at_least("node.id", node_id, 0)?;
        if let Some(roles) = get("process.roles") {
            for r in roles.split(',').map(str::trim) {
                if r != "broker" && r != "controller" {
                    return Err(invalid(
                        "process.roles",
                        roles,
                        "roles are 'broker' and 'controller'",
                    ));
                }
            }
            if !roles.contains("broker") {
                return Err(invalid(
                    "process.roles",
                    roles,
                    "controller-only nodes are not supported yet: use process.roles=broker,controller",
                ));
            }
            if !roles.contains("controller") && get("controller.quorum.voters").is_none() {
                return Err(invalid(
                    "process.roles",
                    roles,
                    "a broker-only node needs controller.quorum.voters to find the controllers",
                ));
            }
        }
        let controller_names: Vec<&str> = get("controller.listener.names")
            .map(|s| s.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let all_listeners = parse_listeners(
            "listeners",
            get("listeners").unwrap_or("PLAINTEXT://127.0.0.1:9092"),
        )?;
        let controller_listener = all_listeners
            .iter()
            .find(|l| controller_names.contains(&l.name.as_str()))
            .cloned();
        let listeners: Vec<Listener> = all_listeners
            .into_iter()
            .filter(|l| !controller_names.contains(&l.name.as_str()))
            .collect();
        for l in &listeners {
            let protocol = get("listener.security.protocol.map")
                .and_then(|m| {
                    m.split(',')
                        .filter_map(|e| e.split_once(':'))
                        .find(|(n, _)| n.trim() == l.name)
                        .map(|(_, p)| p.trim().to_string())
                })
                .unwrap_or_else(|| l.name.clone());
            if protocol != "PLAINTEXT" {
                return Err(invalid(
                    "listeners",
                    &l.name,
                    format!("security protocol {protocol} is not supported yet (PLAINTEXT only)"),
                ));
            }
        }
        if listeners.is_empty() {
            return Err(invalid(
                "listeners",
                get("listeners").unwrap_or(""),
                "no broker listener left",
            ));
        }
        let advertised_listeners = match get("advertised.listeners") {
            Some(v) => parse_listeners("advertised.listeners", v)?,
            None => listeners.clone(),
        };
        let log_dirs: Vec<PathBuf> = get("log.dirs")
            .or(get("log.dir"))
            .unwrap_or("./data")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if log_dirs.is_empty() {
            return Err(invalid(
                "log.dirs",
                "",
                "at least one directory is required",
            ));
        }
        if log_dirs.len() > 1 {
            warnings.push("several log.dirs: partitions are spread over them round-robin".into());
        }
        let metadata_log_dir = get("metadata.log.dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| log_dirs[0].clone());

        const HOUR_MS: i64 = 3_600_000;
        let retention_ms = if let Some(v) = get("log.retention.ms") {
            num::<i64>("log.retention.ms", Some(v), 0)?
        } else if let Some(v) = get("log.retention.minutes") {
            num::<i64>("log.retention.minutes", Some(v), 0)?.saturating_mul(60_000)
        } else {
            num::<i64>("log.retention.hours", get("log.retention.hours"), 168)?
                .saturating_mul(HOUR_MS)
        };
        if retention_ms < -1 {
            return Err(invalid(
                "log.retention.ms",
                &retention_ms.to_string(),
                "must be -1 (unlimited) or >= 0",
            ));
        }
        let roll_ms = if let Some(v) = get("log.roll.ms") {
            num::<i64>("log.roll.ms", Some(v), 0)?
        } else {
            num::<i64>("log.roll.hours", get("log.roll.hours"), 168)?.saturating_mul(HOUR_MS)
        };
        let roll_ms = at_least("log.roll.ms", roll_ms, 1)?;
        let segment_bytes = at_least(
            "log.segment.bytes",
            num::<u64>("log.segment.bytes", get("log.segment.bytes"), 1 << 30)?,
            14,
        )?;
        let timestamp_type = get("log.message.timestamp.type").unwrap_or("CreateTime");
        let message_timestamp_type_log_append = match timestamp_type {
            "CreateTime" => false,
            "LogAppendTime" => true,
            other => {
                return Err(invalid(
                    "log.message.timestamp.type",
                    other,
                    "expected CreateTime or LogAppendTime",
                ))
            }
        };
        let flush_interval_messages = at_least(
            "log.flush.interval.messages",
            num::<i64>(
                "log.flush.interval.messages",
                get("log.flush.interval.messages"),
                i64::MAX,
            )?,
            1,
        )? as u64;
        let log = LogDefaults {
            retention_ms,
            retention_bytes: num("log.retention.bytes", get("log.retention.bytes"), -1)?,
            segment_bytes,
            roll_ms,
            flush_interval_messages,
            flush_interval_ms: at_least(
                "log.flush.interval.ms",
                num(
                    "log.flush.interval.ms",
                    get("log.flush.interval.ms"),
                    i64::MAX,
                )?,
                0,
            )?,
            index_interval_bytes: num(
                "log.index.interval.bytes",
                get("log.index.interval.bytes"),
                4096,
            )?,
            segment_index_bytes: at_least(
                "log.index.size.max.bytes",
                num(
                    "log.index.size.max.bytes",
                    get("log.index.size.max.bytes"),
                    10 * 1024 * 1024,
                )?,
                4096,
            )?,
            message_timestamp_type_log_append,
            file_delete_delay_ms: num(
                "log.segment.delete.delay.ms",
                get("log.segment.delete.delay.ms"),
                60_000,
            )?,
            cleanup_policy: get("log.cleanup.policy").unwrap_or("delete").to_string(),
            min_cleanable_ratio: {
                let key = "log.cleaner.min.cleanable.ratio";
                let r: f64 = num(key, get(key), 0.5)?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(invalid(key, &r.to_string(), "must be between 0 and 1"));
                }
                r
            },
            delete_retention_ms: at_least(
                "log.cleaner.delete.retention.ms",
                num(
                    "log.cleaner.delete.retention.ms",
                    get("log.cleaner.delete.retention.ms"),
                    86_400_000,
                )?,
                0,
            )?,
            producer_id_expiration_ms: at_least(
                "producer.id.expiration.ms",
                num(
                    "producer.id.expiration.ms",
                    get("producer.id.expiration.ms"),
                    24 * 60 * 60 * 1000,
                )?,
                1,
            )?,
        };
        let cfg = BrokerConfig {
            node_id,
            listeners,
            advertised_listeners,
            log_dirs,
            metadata_log_dir,
            num_partitions: at_least(
                "num.partitions",
                num("num.partitions", get("num.partitions"), 1)?,
                1,
            )?,
            default_replication_factor: at_least(
                "default.replication.factor",
                num(
                    "default.replication.factor",
                    get("default.replication.factor"),
                    1,
                )?,
                1,
            )?,
            auto_create_topics_enable: boolean(
                "auto.create.topics.enable",
                get("auto.create.topics.enable"),
                true,
            )?,
            delete_topic_enable: boolean("delete.topic.enable", get("delete.topic.enable"), true)?,
            message_max_bytes: at_least(
                "message.max.bytes",
                num("message.max.bytes", get("message.max.bytes"), 1_048_588)?,
                0,
            )?,
            socket_request_max_bytes: at_least(
                "socket.request.max.bytes",
                num(
                    "socket.request.max.bytes",
                    get("socket.request.max.bytes"),
                    104_857_600,
                )?,
                1024,
            )?,
            retention_check_interval_ms: at_least(
                "log.retention.check.interval.ms",
                num(
                    "log.retention.check.interval.ms",
                    get("log.retention.check.interval.ms"),
                    300_000,
                )?,
                1,
            )?,
            flush_scheduler_interval_ms: num(
                "log.flush.scheduler.interval.ms",
                get("log.flush.scheduler.interval.ms"),
                1000,
            )?,
            rack: get("broker.rack").map(str::to_string),
            log,
            cleaner: CleanerSettings {
                enable: boolean("log.cleaner.enable", get("log.cleaner.enable"), true)?,
                backoff_ms: at_least(
                    "log.cleaner.backoff.ms",
                    num(
                        "log.cleaner.backoff.ms",
                        get("log.cleaner.backoff.ms"),
                        15_000,
                    )?,
                    1,
                )?,
                threads: at_least(
                    "log.cleaner.threads",
                    num("log.cleaner.threads", get("log.cleaner.threads"), 1)?,
                    1,
                )?,
                dedupe_buffer_size: at_least(
                    "log.cleaner.dedupe.buffer.size",
                    num(
                        "log.cleaner.dedupe.buffer.size",
                        get("log.cleaner.dedupe.buffer.size"),
                        16 * 1024 * 1024,
                    )?,
                    1024,
                )?,
            },
            group: crate::group::GroupConfig::from_props(&props)?,
            txn: crate::txn::TxnConfig::from_props(&props)?,
            replication: ReplicationSettings {
                replica_lag_time_max_ms: at_least(
                    "replica.lag.time.max.ms",
                    num(
                        "replica.lag.time.max.ms",
                        get("replica.lag.time.max.ms"),
                        30_000,
                    )?,
                    1,
                )?,
                replica_fetch_max_bytes: at_least(
                    "replica.fetch.max.bytes",
                    num(
                        "replica.fetch.max.bytes",
                        get("replica.fetch.max.bytes"),
                        1_048_576,
                    )?,
                    1024,
                )?,
                replica_fetch_response_max_bytes: at_least(
                    "replica.fetch.response.max.bytes",
                    num(
                        "replica.fetch.response.max.bytes",
                        get("replica.fetch.response.max.bytes"),
                        10_485_760,
                    )?,
                    1024,
                )?,
                replica_fetch_wait_max_ms: at_least(
                    "replica.fetch.wait.max.ms",
                    num(
                        "replica.fetch.wait.max.ms",
                        get("replica.fetch.wait.max.ms"),
                        500,
                    )?,
                    0,
                )?,
                replica_fetch_min_bytes: at_least(
                    "replica.fetch.min.bytes",
                    num("replica.fetch.min.bytes", get("replica.fetch.min.bytes"), 1)?,
                    1,
                )?,
                replica_fetch_backoff_ms: num(
                    "replica.fetch.backoff.ms",
                    get("replica.fetch.backoff.ms"),
                    1000,
                )?,
                replica_socket_timeout_ms: at_least(
                    "replica.socket.timeout.ms",
                    num(
                        "replica.socket.timeout.ms",
                        get("replica.socket.timeout.ms"),
                        30_000,
                    )?,
                    100,
                )?,
                unclean_leader_election_enable: boolean(
                    "unclean.leader.election.enable",
                    get("unclean.leader.election.enable"),
                    false,
                )?,
                auto_leader_rebalance_enable: boolean(
                    "auto.leader.rebalance.enable",
                    get("auto.leader.rebalance.enable"),
                    true,
                )?,
                leader_imbalance_check_interval_ms: at_least(
                    "leader.imbalance.check.interval.seconds",
                    num::<u64>(
                        "leader.imbalance.check.interval.seconds",
                        get("leader.imbalance.check.interval.seconds"),
                        300,
                    )?,
                    1,
                )? * 1000,
                offsets_topic_replication_factor: at_least(
                    "offsets.topic.replication.factor",
                    num(
                        "offsets.topic.replication.factor",
                        get("offsets.topic.replication.factor"),
                        3,
                    )?,
                    1,
                )?,
            },
            cluster: parse_cluster(&props, controller_listener, node_id)?,
            props,
        };
        Ok(cfg)
    }

    /// Address the first broker listener binds to.
    pub fn bind_addr(&self) -> String {
        self.listeners[0].bind_addr()
    }

    /// Host and port clients are told to connect to, once the actual bound address is known
    /// (a configured port 0 advertises the ephemeral port picked by the OS).
    pub fn advertised_endpoint(&self, bound: SocketAddr) -> (String, u16) {
        let adv = &self.advertised_listeners[0];
        let host = if adv.host.is_empty() || adv.host == "0.0.0.0" || adv.host == "::" {
            "127.0.0.1".to_string()
        } else {
            adv.host.clone()
        };
        let port = if adv.port == 0 {
            bound.port()
        } else {
            adv.port
        };
        (host, port)
    }

    /// The `log.*` properties as kafka names them, for topic-config inheritance.
    pub fn broker_log_props(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("log.retention.ms".into(), self.log.retention_ms.to_string());
        m.insert(
            "log.retention.bytes".into(),
            self.log.retention_bytes.to_string(),
        );
        m.insert(
            "log.segment.bytes".into(),
            self.log.segment_bytes.to_string(),
        );
        m.insert("log.roll.ms".into(), self.log.roll_ms.to_string());
        m.insert(
            "log.flush.interval.messages".into(),
            self.log.flush_interval_messages.to_string(),
        );
        m.insert(
            "log.flush.interval.ms".into(),
            self.log.flush_interval_ms.to_string(),
        );
        m.insert(
            "log.index.interval.bytes".into(),
            self.log.index_interval_bytes.to_string(),
        );
        m.insert(
            "log.index.size.max.bytes".into(),
            self.log.segment_index_bytes.to_string(),
        );
        m.insert(
            "log.message.timestamp.type".into(),
            if self.log.message_timestamp_type_log_append {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .into(),
        );
        m.insert(
            "log.segment.delete.delay.ms".into(),
            self.log.file_delete_delay_ms.to_string(),
        );
        m.insert("log.cleanup.policy".into(), self.log.cleanup_policy.clone());
        m.insert(
            "log.cleaner.min.cleanable.ratio".into(),
            self.log.min_cleanable_ratio.to_string(),
        );
        m.insert(
            "log.cleaner.delete.retention.ms".into(),
            self.log.delete_retention_ms.to_string(),
        );
        m.insert("log.cleaner.enable".into(), self.cleaner.enable.to_string());
        m.insert(
            "log.cleaner.backoff.ms".into(),
            self.cleaner.backoff_ms.to_string(),
        );
        m.insert(
            "producer.id.expiration.ms".into(),
            self.log.producer_id_expiration_ms.to_string(),
        );
        m.insert(
            "message.max.bytes".into(),
            self.message_max_bytes.to_string(),
        );
        m.insert("num.partitions".into(), self.num_partitions.to_string());
        m.insert(
            "default.replication.factor".into(),
            self.default_replication_factor.to_string(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file() {
        let (c, w) = BrokerConfig::from_properties("", &[]).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.node_id, 1);
        assert_eq!(c.bind_addr(), "127.0.0.1:9092");
        assert_eq!(c.log_dirs, vec![PathBuf::from("./data")]);
        assert_eq!(c.log.retention_ms, 168 * 3_600_000);
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert!(c.auto_create_topics_enable);
    }

    #[test]
    fn cluster_roles_voters_and_broker_only_nodes() {
        let voters =
            "controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093";
        let voter = format!(
            "{voters}\nnode.id=2\nprocess.roles=broker,controller\n\
             listeners=PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093\n\
             controller.listener.names=CONTROLLER\n"
        );
        let (cfg, _) = BrokerConfig::from_properties(&voter, &[]).expect("voter config");
        let cluster = cfg.cluster.expect("cluster mode");
        assert!(cluster.is_voter);
        assert_eq!(cluster.voters.len(), 3);
        assert_eq!(cluster.controller_listener.port, 29093);
        assert_eq!(
            cfg.listeners.len(),
            1,
            "the controller listener is not a client listener"
        );

        let broker_only = format!("{voters}\nnode.id=4\nprocess.roles=broker\n");
        let (cfg, _) = BrokerConfig::from_properties(&broker_only, &[]).expect("broker-only");
        assert!(!cfg.cluster.expect("cluster mode").is_voter);

        let bad = [
            // A voter id whose roles leave out the controller.
            format!("{voters}\nnode.id=1\nprocess.roles=broker\n"),
            // A controller node that is not listed as a voter.
            format!(
                "{voters}\nnode.id=9\nlisteners=PLAINTEXT://:9092,CONTROLLER://:9093\n\
                 controller.listener.names=CONTROLLER\n"
            ),
            // A voter without a controller listener.
            format!("{voters}\nnode.id=1\n"),
            // A broker-only node with nothing to follow.
            "node.id=4\nprocess.roles=broker\n".to_string(),
            // A duplicate voter id.
            "controller.quorum.voters=1@h:1,1@h:2\nnode.id=1\n".to_string(),
        ];
        for text in bad {
            assert!(
                BrokerConfig::from_properties(&text, &[]).is_err(),
                "accepted: {text}"
            );
        }
    }

    #[test]
    fn parses_kafka_file_and_overrides() {
        let text = "# comment\nbroker.id=3\nlisteners=PLAINTEXT://:9093,CONTROLLER://:9094\ncontroller.listener.names=CONTROLLER\n\
                    log.dirs = /a, /b\nlog.retention.minutes: 5\nnum.network.threads=3\nfoo.bar=1\nlog.segment.bytes=\\\n1000\n";
        let (c, w) = BrokerConfig::from_properties(text, &["num.partitions=6".into()]).unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.bind_addr(), "0.0.0.0:9093");
        assert_eq!(c.log_dirs.len(), 2);
        assert_eq!(c.log.retention_ms, 300_000);
        assert_eq!(c.log.segment_bytes, 1000);
        assert_eq!(c.num_partitions, 6);
        assert!(w.iter().any(|m| m.contains("foo.bar")));
        assert!(w.iter().any(|m| m.contains("num.network.threads")));
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = BrokerConfig::from_properties("num.partitions=zero", &[]).unwrap_err();
        assert!(e.to_string().contains("num.partitions"), "{e}");
        let e = BrokerConfig::from_properties("", &["log.flush.interval.messages=0".into()])
            .unwrap_err();
        assert!(e.to_string().contains("log.flush.interval.messages"));
        let e = BrokerConfig::from_properties("listeners=SSL://:9093", &[]).unwrap_err();
        assert!(e.to_string().contains("listeners"));
        assert!(BrokerConfig::from_properties("", &["nokey".into()]).is_err());
        assert!(BrokerConfig::from_properties("auto.create.topics.enable=yes", &[]).is_err());
    }
}
