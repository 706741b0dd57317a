//! Simulation: honest clients join, heartbeat in random order after random delays, report the
//! partitions they really own, sometimes hold on to revoked partitions for a while, lose
//! responses, change subscriptions, leave, crash and come back, while topics change. After
//! every step no partition is owned by two clients; at the end, once every client has
//! heartbeated a few times, every member is stable and every partition is assigned.
//!
//! Deterministic: a seeded xorshift generator drives each run, and a failing seed is printed.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::assignment::{self, Assignment};
use super::test_support::{beat, join, response_assignment, s, Topics};
use super::*;

/// Topic names, and a regex matching exactly those (existing or future) names, or none.
type Subscription = (Vec<String>, Option<String>);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A well-behaved KIP-848 client.
#[derive(Debug, Clone)]
struct Client {
    member_id: String,
    instance_id: Option<String>,
    /// The topics the client means to consume ...
    topics: Vec<String>,
    /// ... named by this regex instead of by name when set.
    regex: Option<String>,
    /// `None` until joined.
    epoch: Option<i32>,
    /// What the client consumes right now.
    owned: Assignment,
    /// The latest assignment from the coordinator: the client may own only these.
    assigned: Assignment,
    /// Whether the next heartbeat must be a full one (after joining or a lost response).
    full: bool,
    /// The last owned set sent, to send null when unchanged.
    last_sent_owned: Option<Assignment>,
    last_beat_ms: i64,
    /// Revoked partitions still held are let go by then, within the rebalance timeout.
    revoke_by_ms: Option<i64>,
    alive: bool,
}

impl Client {
    fn new(member_id: String, instance_id: Option<String>, (topics, regex): Subscription) -> Self {
        Self {
            member_id,
            instance_id,
            topics,
            regex,
            epoch: None,
            owned: Assignment::new(),
            assigned: Assignment::new(),
            full: true,
            last_sent_owned: None,
            last_beat_ms: 0,
            revoke_by_ms: None,
            alive: true,
        }
    }

    fn request(
        &mut self,
        rng: &mut Rng,
    ) -> kafka_protocol::messages::ConsumerGroupHeartbeatRequest {
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let mut req = match self.epoch {
            None => join(&self.member_id, &names),
            Some(epoch) if self.full => beat(&self.member_id, epoch, Some(&self.owned))
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names(Some(
                    names
                        .iter()
                        .map(|n| kafka_protocol::messages::TopicName(s(n)))
                        .collect(),
                )),
            Some(epoch) => {
                let unchanged = self.last_sent_owned.as_ref() == Some(&self.owned);
                let owned = if unchanged && rng.chance(70) {
                    None
                } else {
                    Some(&self.owned)
                };
                beat(&self.member_id, epoch, owned)
            }
        };
        if self.epoch.is_none() || self.full {
            req = req.with_instance_id(self.instance_id.as_deref().map(s));
            if let Some(regex) = &self.regex {
                req = req
                    .with_subscribed_topic_names(Some(vec![]))
                    .with_subscribed_topic_regex(Some(s(regex)));
            } else if self.epoch.is_some() {
                req = req.with_subscribed_topic_regex(Some(s("")));
            }
        }
        if req.topic_partitions.is_some() {
            self.last_sent_owned = Some(self.owned.clone());
        }
        req
    }

    /// Applies a response: adds newly assigned partitions at once; revokes at once or later.
    fn on_response(
        &mut self,
        resp: &kafka_protocol::messages::ConsumerGroupHeartbeatResponse,
        rng: &mut Rng,
        now: i64,
    ) {
        if let Some(id) = resp.member_id.as_deref() {
            self.member_id = id.to_string();
        }
        self.epoch = Some(resp.member_epoch);
        self.full = false;
        if let Some(a) = response_assignment(resp) {
            self.assigned = a;
            for (t, p) in assignment::iter(&self.assigned.clone()) {
                assignment::insert(&mut self.owned, t, p);
            }
            if rng.chance(60) {
                self.revoke();
            } else if self.revoke_by_ms.is_none() {
                self.revoke_by_ms = Some(now + 20_000);
            }
        }
    }

    fn revoke(&mut self) {
        self.revoke_by_ms = None;
        let assigned = &self.assigned;
        self.owned = assignment::normalized(
            self.owned
                .iter()
                .map(|(t, ps)| {
                    let keep = ps
                        .iter()
                        .filter(|p| assignment::contains(assigned, *t, **p))
                        .copied()
                        .collect();
                    (*t, keep)
                })
                .collect(),
        );
    }

    /// Fenced or unknown: abandon everything and join again.
    fn reset(&mut self) {
        self.epoch = None;
        self.owned.clear();
        self.assigned.clear();
        self.full = true;
        self.last_sent_owned = None;
    }
}

fn check_no_double_ownership(clients: &[Client], seed: u64, step: usize) {
    let mut seen: BTreeMap<(Uuid, i32), &str> = BTreeMap::new();
    for c in clients.iter().filter(|c| c.alive) {
        for tp in assignment::iter(&c.owned) {
            if let Some(other) = seen.insert(tp, &c.member_id) {
                panic!(
                    "seed {seed} step {step}: {tp:?} owned by {other} and {}",
                    c.member_id
                );
            }
        }
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut topics = Topics::new(&[("a", 5), ("b", 3), ("c", 8)]);
    let names = ["a", "b", "c", "d"];
    let config = ConsumerGroupConfig {
        assignors: if seed.is_multiple_of(3) {
            vec![ServerAssignor::Range, ServerAssignor::Uniform]
        } else {
            vec![ServerAssignor::Uniform, ServerAssignor::Range]
        },
        ..ConsumerGroupConfig::default()
    };
    let mut group = ConsumerGroup::new("g".into(), config);
    let mut clients: Vec<Client> = Vec::new();
    let mut now: i64 = 1_000;
    let heterogeneous = seed % 2 == 1;
    let subscription = |rng: &mut Rng| -> Subscription {
        if heterogeneous {
            if rng.chance(30) {
                let (topics, regex) = if rng.chance(50) {
                    (vec!["a", "b"], "[ab]")
                } else {
                    (vec!["c", "d"], "c|d")
                };
                return (
                    topics.into_iter().map(String::from).collect(),
                    Some(regex.to_string()),
                );
            }
            let mut t: Vec<String> = names
                .iter()
                .filter(|_| rng.chance(50))
                .map(|n| n.to_string())
                .collect();
            if t.is_empty() {
                t.push("a".into());
            }
            (t, None)
        } else {
            (vec!["a".into(), "c".into()], None)
        }
    };

    for step in 0..steps {
        now += rng.below(1_500) as i64;
        let roll = rng.below(100);
        if roll < 6 && clients.iter().filter(|c| c.alive).count() < 7 {
            let n = clients.len();
            let instance = rng.chance(30).then(|| format!("i{n}"));
            let subs = subscription(&mut rng);
            clients.push(Client::new(format!("m{n}"), instance, subs));
        } else if roll < 8 && !clients.is_empty() {
            // A client leaves cleanly (static ones sometimes only for now).
            let i = rng.below(clients.len() as u64) as usize;
            let c = &mut clients[i];
            if c.alive && c.epoch.is_some() {
                let epoch = if c.instance_id.is_some() && rng.chance(50) {
                    -2
                } else {
                    -1
                };
                let req = beat(&c.member_id, epoch, None)
                    .with_instance_id(c.instance_id.as_deref().map(s));
                let r = group.heartbeat(&req, "sim", "h", &topics, now);
                assert!(r.is_ok(), "seed {seed} step {step}: leave refused: {r:?}");
                c.alive = false;
                c.owned.clear();
                if epoch == -2 && rng.chance(70) {
                    // The same instance restarts under a new member id.
                    let mut back = Client::new(
                        format!("{}r", c.member_id),
                        c.instance_id.clone(),
                        (c.topics.clone(), c.regex.clone()),
                    );
                    back.last_beat_ms = now;
                    clients.push(back);
                }
            }
        } else if roll < 9 && !clients.is_empty() {
            // A crash: the client stops; its session will expire.
            let i = rng.below(clients.len() as u64) as usize;
            clients[i].alive = false;
            clients[i].owned.clear();
        } else if roll < 10 {
            topics.set_partitions("a", topics.0["a"].partitions + 1);
            group.on_metadata_change(&topics);
        } else if roll < 11 {
            if topics.0.contains_key("d") {
                topics.delete("d");
            } else {
                topics.create("d", 1 + rng.below(4) as i32);
            }
            group.on_metadata_change(&topics);
        } else if roll < 13 && !clients.is_empty() {
            let i = rng.below(clients.len() as u64) as usize;
            let (topics, regex) = subscription(&mut rng);
            let c = &mut clients[i];
            if c.alive && c.epoch.is_some() {
                c.topics = topics;
                c.regex = regex;
                c.full = true;
            }
        } else if !clients.is_empty() {
            let i = rng.below(clients.len() as u64) as usize;
            let c = &mut clients[i];
            if c.alive {
                if rng.chance(30) {
                    c.revoke();
                }
                let req = c.request(&mut rng);
                match group.heartbeat(&req, "sim", "h", &topics, now) {
                    Ok(resp) if rng.chance(3) => {
                        // Response lost: the next heartbeat is a full one.
                        let _ = resp;
                        c.full = true;
                    }
                    Ok(resp) => c.on_response(&resp, &mut rng, now),
                    Err(e) => {
                        let code = e.code().code();
                        assert!(
                            matches!(code, 25 | 110),
                            "seed {seed} step {step}: unexpected {e:?} for {req:?}"
                        );
                        c.reset();
                    }
                }
                c.last_beat_ms = now;
            }
        }
        // Honest clients heartbeat and revoke in time: one whose session or revocation is
        // about to run out does so now (the random schedule above only decides the order).
        for c in clients.iter_mut().filter(|c| c.alive && c.epoch.is_some()) {
            let due = group.member(&c.member_id).is_some_and(|m| {
                now + 2_000 >= m.session_deadline_ms
                    || m.revocation_deadline_ms.is_some_and(|d| now + 2_000 >= d)
            });
            if due {
                c.revoke();
                c.full = true;
                let req = c.request(&mut rng);
                match group.heartbeat(&req, "sim", "h", &topics, now) {
                    Ok(resp) => c.on_response(&resp, &mut rng, now),
                    Err(e) => {
                        assert!(
                            matches!(e.code().code(), 25 | 110),
                            "seed {seed} step {step}: {e:?}"
                        );
                        c.reset();
                    }
                }
                c.revoke();
                c.last_beat_ms = now;
            }
        }
        for c in clients
            .iter_mut()
            .filter(|c| c.revoke_by_ms.is_some_and(|t| now >= t))
        {
            c.revoke();
        }
        group.expire(now, &topics);
        check_no_double_ownership(&clients, seed, step);
    }

    // Settle: every live client heartbeats, revoking promptly, for a bounded number of rounds.
    for c in clients.iter_mut().filter(|c| c.alive) {
        c.full = true;
    }
    for round in 0..20 {
        now += 100;
        for c in clients.iter_mut().filter(|c| c.alive) {
            c.revoke();
            let req = c.request(&mut rng);
            match group.heartbeat(&req, "sim", "h", &topics, now) {
                Ok(resp) => c.on_response(&resp, &mut rng, now),
                Err(e) => {
                    assert!(
                        matches!(e.code().code(), 25 | 110),
                        "seed {seed} settle {round}: {e:?}"
                    );
                    c.reset();
                }
            }
            c.revoke();
            c.last_beat_ms = now;
        }
        check_no_double_ownership(&clients, seed, steps + round);
    }
    // Dead clients' sessions run out.
    now += 50_000;
    for c in clients.iter_mut().filter(|c| c.alive) {
        c.last_beat_ms = now;
    }
    for round in 0..10 {
        for c in clients.iter_mut().filter(|c| c.alive) {
            let req = c.request(&mut rng);
            if let Ok(resp) = group.heartbeat(&req, "sim", "h", &topics, now) {
                c.on_response(&resp, &mut rng, now);
            } else {
                c.reset();
            }
            c.revoke();
        }
        group.expire(now, &topics);
        now += 100;
        check_no_double_ownership(&clients, seed, steps + 100 + round);
    }

    let live: Vec<&Client> = clients.iter().filter(|c| c.alive).collect();
    assert_eq!(
        group.members_len(),
        live.len(),
        "seed {seed}: members vs live clients"
    );
    if live.is_empty() {
        return;
    }
    assert_eq!(group.state(), ConsumerGroupState::Stable, "seed {seed}");
    let mut owned_total = BTreeSet::new();
    for c in &live {
        let m = group
            .member(&c.member_id)
            .unwrap_or_else(|| panic!("seed {seed}: {} not a member", c.member_id));
        assert_eq!(m.state, MemberState::Stable, "seed {seed}");
        assert_eq!(m.member_epoch, group.group_epoch(), "seed {seed}");
        assert_eq!(
            c.owned, m.assigned,
            "seed {seed}: client and coordinator disagree"
        );
        owned_total.extend(assignment::iter(&c.owned));
    }
    // Every partition of a topic some live client subscribes to is owned.
    let subscribed: BTreeSet<&str> = live
        .iter()
        .flat_map(|c| c.topics.iter().map(String::as_str))
        .collect();
    for name in subscribed {
        if let Some(t) = topics.0.get(name) {
            for p in 0..t.partitions {
                assert!(
                    owned_total.contains(&(t.id, p)),
                    "seed {seed}: {name}-{p} unassigned"
                );
            }
        }
    }
    // Uniform balance for homogeneous groups.
    if !heterogeneous && group.assignor() == ServerAssignor::Uniform {
        let counts: Vec<usize> = live
            .iter()
            .map(|c| assignment::partition_count(&c.owned))
            .collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "seed {seed}: unbalanced {counts:?}");
    }
}

#[test]
fn random_runs_keep_partitions_exclusive_and_converge() {
    for seed in 1..=150 {
        run(seed, 400);
    }
}

#[test]
fn uniform_is_sticky_when_a_member_joins() {
    // Four stable members over 12 partitions; a fifth joins: each old member gives up at
    // most one partition and keeps the rest.
    let topics = Topics::new(&[("t", 12)]);
    let mut group = ConsumerGroup::new("g".into(), ConsumerGroupConfig::default());
    let mut rng = Rng(7);
    let mut clients: Vec<Client> = (0..4)
        .map(|i| Client::new(format!("m{i}"), None, (vec!["t".into()], None)))
        .collect();
    for _ in 0..6 {
        for c in clients.iter_mut() {
            let req = c.request(&mut rng);
            let resp = group
                .heartbeat(&req, "sim", "h", &topics, 0)
                .expect("accepted");
            c.on_response(&resp, &mut rng, 0);
            c.revoke();
        }
    }
    assert_eq!(group.state(), ConsumerGroupState::Stable);
    let before: Vec<Assignment> = clients.iter().map(|c| c.owned.clone()).collect();
    clients.push(Client::new("m4".into(), None, (vec!["t".into()], None)));
    for _ in 0..6 {
        for c in clients.iter_mut() {
            let req = c.request(&mut rng);
            let resp = group
                .heartbeat(&req, "sim", "h", &topics, 0)
                .expect("accepted");
            c.on_response(&resp, &mut rng, 0);
            c.revoke();
        }
    }
    assert_eq!(group.state(), ConsumerGroupState::Stable);
    for (old, c) in before.iter().zip(&clients) {
        let old: BTreeSet<_> = assignment::iter(old).collect();
        let new: BTreeSet<_> = assignment::iter(&c.owned).collect();
        assert!(new.is_subset(&old), "{}: {old:?} -> {new:?}", c.member_id);
        assert!(old.len() - new.len() <= 1);
    }
    let counts: Vec<usize> = clients
        .iter()
        .map(|c| assignment::partition_count(&c.owned))
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 12);
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "{counts:?}"
    );
}

#[test]
fn arbitrary_requests_never_panic_or_double_assign() {
    // Garbage in every field, from a few member and instance ids so that requests collide.
    let mut rng = Rng(0x5EED);
    let mut topics = Topics::new(&[("a", 4), ("b", 2)]);
    let mut group = ConsumerGroup::new(
        "g".into(),
        ConsumerGroupConfig {
            max_size: 4,
            ..Default::default()
        },
    );
    let ids = ["m0", "m1", "m2", "m3", "m4", ""];
    // The last entry of each is invalid; it is picked one time in ten.
    let instances = [None, Some("i0"), Some("i1"), Some("")];
    let regexes = [None, Some(""), Some("a|b"), Some("(")];
    let assignors = [None, Some("uniform"), Some("range"), Some("nope")];
    let pick = |rng: &mut Rng| {
        if rng.chance(10) {
            3
        } else {
            rng.below(3) as usize
        }
    };
    let mut now = 0;
    let mut accepted = 0;
    for step in 0..20_000 {
        now += rng.below(3_000) as i64;
        let owned = (rng.chance(70)).then(|| {
            let mut a = Assignment::new();
            for _ in 0..rng.below(4) {
                let topic = if rng.chance(80) {
                    topics.id("a")
                } else {
                    Uuid::from_u128(rng.next().into())
                };
                assignment::insert(&mut a, topic, rng.below(8) as i32 - 2);
            }
            a
        });
        let id = ids[rng.below(6) as usize];
        let epoch = match group.member(id) {
            Some(m) if rng.chance(60) => m.member_epoch,
            None if rng.chance(40) => 0,
            _ => rng.below(14) as i32 - 3,
        };
        let mut req = beat(id, epoch, owned.as_ref())
            .with_instance_id(instances[pick(&mut rng)].map(s))
            .with_subscribed_topic_regex(regexes[pick(&mut rng)].map(s))
            .with_server_assignor(assignors[pick(&mut rng)].map(s));
        if rng.chance(60) {
            req = req.with_rebalance_timeout_ms(rng.below(60_000) as i32 - 1);
        }
        if rng.chance(50) {
            let names = ["a", "b", "zz"].iter().filter(|_| rng.chance(50));
            req = req.with_subscribed_topic_names(Some(
                names
                    .map(|n| kafka_protocol::messages::TopicName(s(n)))
                    .collect(),
            ));
        }
        if epoch == 0 && rng.chance(70) {
            req = req.with_topic_partitions(Some(vec![]));
        }
        if group.heartbeat(&req, "fuzz", "h", &topics, now).is_ok() {
            accepted += 1;
        }
        if rng.chance(2) {
            topics.set_partitions("a", 1 + rng.below(6) as i32);
            group.on_metadata_change(&topics);
        }
        if rng.chance(5) {
            group.expire(now, &topics);
        }
        // Coordinator view: no partition in two members' assigned or pending sets.
        let mut seen = BTreeSet::new();
        for described in group.describe(&topics).members {
            let m = group
                .member(described.member_id.as_str())
                .expect("described member exists");
            for tp in assignment::iter(&m.assigned).chain(assignment::iter(&m.pending_revocation)) {
                assert!(seen.insert(tp), "step {step}: {tp:?} held twice");
            }
        }
        assert!(group.members_len() <= 4);
    }
    assert!(
        accepted > 1_000,
        "only {accepted} requests accepted: the test exercises little"
    );
}
