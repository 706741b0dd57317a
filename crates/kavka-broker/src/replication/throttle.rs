//! The replication throttle (KIP-73): a byte rate per broker for replication traffic of the
//! replicas an operator lists, so a reassignment does not starve clients.
//!
//! The rates are dynamic broker configs (`leader.replication.throttled.rate`,
//! `follower.replication.throttled.rate`: cluster default `Broker(-1)`, overridden per node;
//! absent means Long.MAX, unthrottled). Which replicas are throttled is a topic config
//! (`leader.replication.throttled.replicas`, `follower.replication.throttled.replicas`:
//! `partition:broker` pairs or `*`); a broker throttles the entries naming itself, as Kafka's
//! `DynamicConfigHandler` does. Like Kafka's `ReplicationQuotaManager` the bucket may run into
//! debt (a fetch is admitted while any tokens remain and its bytes are charged afterwards),
//! so the long-run rate is the configured one and a fetch is never cut short.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kavka_metadata::{ConfigResource, MetadataImage, CLUSTER_DEFAULT_BROKER};

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// A topic's throttled-replicas config, as one broker reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ThrottledReplicas {
    #[default]
    None,
    /// `*`: every replica of the topic.
    All,
    /// `partition:broker` pairs.
    Listed(BTreeSet<(i32, i32)>),
}

impl ThrottledReplicas {
    /// Parses the config value; malformed entries are skipped (the controller validated it).
    pub fn parse(value: &str) -> Self {
        let items: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.contains(&"*") {
            return ThrottledReplicas::All;
        }
        let listed: BTreeSet<(i32, i32)> = items
            .iter()
            .filter_map(|s| {
                let (p, b) = s.split_once(':')?;
                Some((p.trim().parse().ok()?, b.trim().parse().ok()?))
            })
            .collect();
        if listed.is_empty() {
            ThrottledReplicas::None
        } else {
            ThrottledReplicas::Listed(listed)
        }
    }

    /// Whether the replica of `partition` on `broker` is throttled.
    pub fn contains(&self, partition: i32, broker: i32) -> bool {
        match self {
            ThrottledReplicas::None => false,
            ThrottledReplicas::All => true,
            ThrottledReplicas::Listed(set) => set.contains(&(partition, broker)),
        }
    }
}

/// A token bucket of `rate` bytes/s holding at most one second's worth. Time is passed in
/// (milliseconds) so it is deterministic. Tokens are kept in byte-milliseconds, so a low
/// rate refilled every millisecond loses nothing to rounding.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    /// Byte-milliseconds; negative is debt from a fetch larger than what was left.
    tokens: i128,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u64, now_ms: i64) -> Self {
        TokenBucket {
            rate,
            tokens: Self::capacity(rate),
            last_ms: now_ms,
        }
    }

    fn capacity(rate: u64) -> i128 {
        i128::from(rate) * 1000
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Changes the rate, keeping the tokens (capped to the new capacity).
    pub fn set_rate(&mut self, rate: u64, now_ms: i64) {
        self.refill(now_ms);
        self.rate = rate;
        self.tokens = self.tokens.min(Self::capacity(rate));
    }

    fn refill(&mut self, now_ms: i64) {
        // A clock that steps back refills nothing.
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0);
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + i128::from(self.rate) * i128::from(elapsed))
            .min(Self::capacity(self.rate));
    }

    /// Whether the rate is used up: throttled traffic waits until this is false again.
    pub fn is_exhausted(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        self.tokens <= 0
    }

    /// Whole bytes available now (0 when in debt).
    pub fn available(&mut self, now_ms: i64) -> u64 {
        self.refill(now_ms);
        u64::try_from((self.tokens / 1000).max(0)).unwrap_or(u64::MAX)
    }

    /// Charges `bytes` of throttled traffic.
    pub fn record(&mut self, bytes: u64, now_ms: i64) {
        self.refill(now_ms);
        self.tokens -= i128::from(bytes) * 1000;
    }

    /// Milliseconds until the bucket has tokens again (0 when it has).
    pub fn ms_until_available(&mut self, now_ms: i64) -> u64 {
        self.refill(now_ms);
        if self.tokens > 0 || self.rate == 0 {
            // A rate of 0 never refills: callers poll at their own pace.
            return 0;
        }
        let debt = self.tokens.unsigned_abs() + 1;
        u64::try_from(debt.div_ceil(u128::from(self.rate))).unwrap_or(u64::MAX)
    }
}

/// One side's throttle (leader or follower): the rate and the throttled replicas by topic.
#[derive(Debug, Default)]
struct Side {
    bucket: Option<TokenBucket>,
    replicas: HashMap<String, ThrottledReplicas>,
}

impl Side {
    fn update(
        &mut self,
        rate: Option<u64>,
        replicas: HashMap<String, ThrottledReplicas>,
        now: i64,
    ) {
        self.replicas = replicas;
        self.bucket = match (rate, self.bucket.take()) {
            (None, _) => None,
            (Some(r), Some(mut b)) => {
                b.set_rate(r, now);
                Some(b)
            }
            (Some(r), None) => Some(TokenBucket::new(r, now)),
        };
    }

    fn is_throttled(&self, topic: &str, partition: i32, broker: i32) -> bool {
        self.replicas
            .get(topic)
            .is_some_and(|r| r.contains(partition, broker))
    }

    fn is_exhausted(&mut self, now_ms: i64) -> bool {
        self.bucket.as_mut().is_some_and(|b| b.is_exhausted(now_ms))
    }

    fn record(&mut self, bytes: u64, now_ms: i64) {
        if let Some(b) = self.bucket.as_mut() {
            b.record(bytes, now_ms);
        }
    }
}

/// A broker's replication throttle, both sides, kept in step with the metadata image.
#[derive(Debug)]
pub struct ReplicationQuotas {
    node_id: i32,
    leader: Mutex<Side>,
    follower: Mutex<Side>,
}

/// The rate in bytes/s configured for `name` on `node_id`: the node's own value, else the
/// cluster default; `None` when unset or Long.MAX (unthrottled).
pub fn throttle_rate(image: &MetadataImage, node_id: i32, name: &str) -> Option<u64> {
    let own = image.configs(&ConfigResource::Broker(node_id));
    let default = image.configs(&ConfigResource::Broker(CLUSTER_DEFAULT_BROKER));
    let value = own.get(name).or_else(|| default.get(name))?;
    let rate: i64 = value.trim().parse().ok()?;
    (rate != i64::MAX).then(|| rate.max(0) as u64)
}

/// The topics whose `config` (a throttled-replicas config) names any replica.
fn throttled_topics(image: &MetadataImage, config: &str) -> HashMap<String, ThrottledReplicas> {
    image
        .topics
        .iter()
        .filter_map(|(name, t)| {
            let r = ThrottledReplicas::parse(t.configs.get(config)?);
            (r != ThrottledReplicas::None).then(|| (name.clone(), r))
        })
        .collect()
}

impl ReplicationQuotas {
    /// No throttle until the first [`update`](Self::update).
    pub fn new(node_id: i32) -> Self {
        ReplicationQuotas {
            node_id,
            leader: Mutex::new(Side::default()),
            follower: Mutex::new(Side::default()),
        }
    }

    fn side(m: &Mutex<Side>) -> std::sync::MutexGuard<'_, Side> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the rates and the throttled replicas from `image` (call on every image change).
    pub fn update(&self, image: &MetadataImage, now_ms: i64) {
        let rate = |name| throttle_rate(image, self.node_id, name);
        Self::side(&self.leader).update(
            rate(LEADER_RATE),
            throttled_topics(image, LEADER_REPLICAS),
            now_ms,
        );
        Self::side(&self.follower).update(
            rate(FOLLOWER_RATE),
            throttled_topics(image, FOLLOWER_REPLICAS),
            now_ms,
        );
    }

    /// Sets the follower side directly (tests elsewhere in the crate).
    #[cfg(test)]
    pub(crate) fn set_follower(
        &self,
        rate: Option<u64>,
        replicas: HashMap<String, ThrottledReplicas>,
        now_ms: i64,
    ) {
        Self::side(&self.follower).update(rate, replicas, now_ms);
    }

    /// Sets the leader side directly (tests elsewhere in the crate).
    #[cfg(test)]
    pub(crate) fn set_leader(
        &self,
        rate: Option<u64>,
        replicas: HashMap<String, ThrottledReplicas>,
        now_ms: i64,
    ) {
        Self::side(&self.leader).update(rate, replicas, now_ms);
    }

    /// Whether this broker's follower replica of the partition is throttled.
    pub fn is_follower_throttled(&self, topic: &str, partition: i32) -> bool {
        Self::side(&self.follower).is_throttled(topic, partition, self.node_id)
    }

    /// Whether the follower rate is used up (throttled partitions are left out of fetches).
    pub fn is_follower_exhausted(&self, now_ms: i64) -> bool {
        Self::side(&self.follower).is_exhausted(now_ms)
    }

    /// Charges bytes fetched for throttled follower partitions.
    pub fn record_follower(&self, bytes: u64, now_ms: i64) {
        Self::side(&self.follower).record(bytes, now_ms);
    }

    /// Milliseconds until the follower bucket has tokens again.
    pub fn follower_ms_until_available(&self, now_ms: i64) -> u64 {
        Self::side(&self.follower)
            .bucket
            .as_mut()
            .map_or(0, |b| b.ms_until_available(now_ms))
    }

    /// Whether this broker, as the leader, throttles the partition's replication.
    pub fn is_leader_throttled(&self, topic: &str, partition: i32) -> bool {
        Self::side(&self.leader).is_throttled(topic, partition, self.node_id)
    }

    /// Whether the leader rate is used up.
    pub fn is_leader_exhausted(&self, now_ms: i64) -> bool {
        Self::side(&self.leader).is_exhausted(now_ms)
    }

    /// Charges bytes sent to followers for throttled partitions.
    pub fn record_leader(&self, bytes: u64, now_ms: i64) {
        Self::side(&self.leader).record(bytes, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kavka_metadata::MetadataRecord;

    #[test]
    fn throttled_replicas_parse() {
        assert_eq!(ThrottledReplicas::parse(""), ThrottledReplicas::None);
        assert_eq!(ThrottledReplicas::parse(" * "), ThrottledReplicas::All);
        let r = ThrottledReplicas::parse("0:1, 1:2,bad");
        assert!(r.contains(0, 1) && r.contains(1, 2));
        assert!(!r.contains(0, 2) && !r.contains(1, 1));
        assert!(ThrottledReplicas::All.contains(7, 9));
        assert!(!ThrottledReplicas::None.contains(0, 1));
    }

    #[test]
    fn bucket_refills_at_the_rate_up_to_one_second() {
        let mut b = TokenBucket::new(1000, 0);
        assert_eq!(b.available(0), 1000);
        b.record(1500, 0);
        assert!(b.is_exhausted(0));
        assert_eq!(b.ms_until_available(0), 501);
        assert!(b.is_exhausted(500));
        assert!(!b.is_exhausted(501));
        assert_eq!(b.available(1000), 500);
        // Never more than one second's worth, however long it idles.
        assert_eq!(b.available(100_000), 1000);
        // A clock stepping back refills nothing and takes nothing.
        assert_eq!(b.available(50_000), 1000);
        b.set_rate(10, 100_000);
        assert_eq!(b.available(100_000), 10);
        let mut slow = TokenBucket::new(3, 0);
        slow.record(3, 0);
        // 3 bytes/s refilled one millisecond at a time still adds up.
        for ms in 1..=1000 {
            slow.available(ms);
        }
        assert_eq!(slow.available(1000), 3);
    }

    fn image(records: Vec<MetadataRecord>) -> MetadataImage {
        MetadataImage::empty().apply(&records)
    }

    fn config(resource: ConfigResource, name: &str, value: &str) -> MetadataRecord {
        MetadataRecord::Config {
            resource,
            name: name.into(),
            value: Some(value.into()),
        }
    }

    #[test]
    fn rates_come_from_the_node_then_the_cluster_default() {
        let img = image(vec![
            config(ConfigResource::Broker(-1), FOLLOWER_RATE, "100"),
            config(ConfigResource::Broker(2), FOLLOWER_RATE, "50"),
            config(
                ConfigResource::Broker(-1),
                LEADER_RATE,
                &i64::MAX.to_string(),
            ),
        ]);
        assert_eq!(throttle_rate(&img, 1, FOLLOWER_RATE), Some(100));
        assert_eq!(throttle_rate(&img, 2, FOLLOWER_RATE), Some(50));
        assert_eq!(throttle_rate(&img, 1, LEADER_RATE), None);
        assert_eq!(throttle_rate(&MetadataImage::empty(), 1, LEADER_RATE), None);
    }

    /// A follower fetching 1000 bytes per request every 100 ms of (simulated) time, at a
    /// follower rate of 2000 bytes/s: the throttled partition is left out of the fetches
    /// while the bucket is empty, the unthrottled one never is, and over 10 s the throttled
    /// partition copies about the rate (one second's burst plus 2000 bytes/s).
    #[test]
    fn a_throttled_follower_copies_at_about_the_rate() {
        let q = ReplicationQuotas::new(2);
        q.set_follower(
            Some(2000),
            HashMap::from([("t".to_string(), ThrottledReplicas::parse("0:2"))]),
            0,
        );
        assert!(q.is_follower_throttled("t", 0));
        assert!(!q.is_follower_throttled("t", 1));
        assert!(!q.is_leader_throttled("t", 0));
        let (mut throttled_bytes, mut unthrottled_bytes, mut left_out) = (0u64, 0u64, 0u32);
        for step in 0..100i64 {
            let now = step * 100;
            let exhausted = q.is_follower_exhausted(now);
            for partition in [0, 1] {
                let throttled = q.is_follower_throttled("t", partition);
                if throttled && exhausted {
                    left_out += 1;
                    continue;
                }
                if throttled {
                    throttled_bytes += 1000;
                    q.record_follower(1000, now);
                } else {
                    unthrottled_bytes += 1000;
                }
            }
        }
        assert_eq!(unthrottled_bytes, 100 * 1000);
        // Burst of 2000 + 2000 bytes/s over 9.9 s, within one fetch.
        let expected = 2000 + 2000 * 99 / 10;
        assert!(
            throttled_bytes.abs_diff(expected) <= 1000,
            "copied {throttled_bytes}, expected about {expected}"
        );
        assert_eq!(left_out as u64, 100 - throttled_bytes / 1000);
    }

    #[test]
    fn update_reads_the_image_for_this_node_only() {
        let img = image(vec![
            config(ConfigResource::Broker(-1), LEADER_RATE, "10"),
            config(ConfigResource::Broker(-1), FOLLOWER_RATE, "10"),
        ]);
        let q = ReplicationQuotas::new(1);
        q.update(&img, 0);
        // No topic lists a replica: nothing is throttled, whatever the rates.
        assert!(!q.is_follower_throttled("t", 0));
        assert!(!q.is_follower_exhausted(0));
        q.record_follower(100, 0);
        assert!(q.is_follower_exhausted(0));
        assert!(!q.is_leader_exhausted(0));
        q.record_leader(100, 0);
        assert!(q.is_leader_exhausted(0));
        assert_eq!(q.follower_ms_until_available(0), 9001);
        // Rates removed: unthrottled again.
        q.update(&MetadataImage::empty(), 0);
        assert!(!q.is_follower_exhausted(0) && !q.is_leader_exhausted(0));
    }
}
