//! Tests of consumer group snapshots: a restored group behaves as the original did (same
//! responses to the same heartbeats), `take_dirty` follows every durable change, and corrupt
//! snapshots are refused without panics.

use std::collections::BTreeSet;

use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::assignment::{self, Assignment};
use super::snapshot::{checksum, decode_unchecked};
use super::test_support::{beat, join, s, Topics};
use super::*;

const NOW: i64 = 1_000_000;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn restore(g: &ConsumerGroup, now: i64) -> ConsumerGroup {
    ConsumerGroup::from_snapshot(
        g.group_id().to_string(),
        g.config.clone(),
        &g.to_snapshot(),
        now,
    )
    .unwrap_or_else(|e| panic!("snapshot refused: {e}\n{g:#?}"))
}

/// Everything a member holds: what it may own and what it has yet to give back.
fn held(m: &ConsumerGroupMember) -> Assignment {
    let mut all = m.assigned.clone();
    for (t, p) in assignment::iter(&m.pending_revocation) {
        assignment::insert(&mut all, t, p);
    }
    all
}

/// The heartbeat an honest client of `m` sends: its epoch and what it owns (all it holds, or
/// only its assigned partitions once it has revoked). A static member that is away comes back.
fn next_beat(m: &ConsumerGroupMember, revoked: bool) -> ConsumerGroupHeartbeatRequest {
    if m.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        let names: Vec<&str> = m
            .subscribed_topic_names
            .iter()
            .map(String::as_str)
            .collect();
        return join(&m.member_id, &names)
            .with_instance_id(m.instance_id.as_deref().map(s))
            .with_subscribed_topic_regex(m.subscribed_topic_regex.as_deref().map(s));
    }
    let owned = if revoked { m.assigned.clone() } else { held(m) };
    beat(&m.member_id, m.member_epoch, Some(&owned))
        .with_instance_id(m.instance_id.as_deref().map(s))
}

fn respond(
    g: &mut ConsumerGroup,
    req: &ConsumerGroupHeartbeatRequest,
    topics: &Topics,
    now: i64,
) -> Result<ConsumerGroupHeartbeatResponse, ConsumerGroupError> {
    g.heartbeat(req, "client", "/127.0.0.1", topics, now)
}

/// Restores `original` from its snapshot, then drives both with the same heartbeats of every
/// member (several kinds each, on fresh copies, then all in one sequence) and compares the
/// responses, the descriptions and the resulting snapshots.
fn assert_restores_behaviour(original: &ConsumerGroup, topics: &Topics, now: i64, what: &str) {
    let restored = restore(original, now);
    assert_eq!(
        restored.to_snapshot(),
        original.to_snapshot(),
        "{what}: re-encoding differs"
    );
    assert_eq!(restored.state(), original.state(), "{what}");
    assert_eq!(
        restored.describe(topics),
        original.describe(topics),
        "{what}"
    );
    for m in original.members.values() {
        let (before, after) = (original.member(&m.member_id), restored.member(&m.member_id));
        assert!(
            before
                .zip(after)
                .is_some_and(|(b, a)| b.same_durable_state(a)),
            "{what}: member {} differs",
            m.member_id
        );
        let mut requests = vec![
            next_beat(m, false),
            next_beat(m, true),
            beat(&m.member_id, m.member_epoch, None)
                .with_instance_id(m.instance_id.as_deref().map(s)),
            beat(&m.member_id, m.previous_member_epoch, Some(&m.assigned))
                .with_instance_id(m.instance_id.as_deref().map(s)),
            beat(&m.member_id, m.member_epoch + 1, None),
            beat(&m.member_id, LEAVE_GROUP_MEMBER_EPOCH, None),
        ];
        if let Some(instance) = &m.instance_id {
            requests.push(
                beat(&m.member_id, LEAVE_GROUP_STATIC_MEMBER_EPOCH, None)
                    .with_instance_id(Some(s(instance))),
            );
            requests.push(join("newcomer", &["a"]).with_instance_id(Some(s(instance))));
        }
        for req in &requests {
            let (mut o, mut r) = (original.clone(), restored.clone());
            let expected = respond(&mut o, req, topics, now);
            let got = respond(&mut r, req, topics, now);
            assert_eq!(got, expected, "{what}: {req:?}");
            assert_eq!(r.to_snapshot(), o.to_snapshot(), "{what}: after {req:?}");
        }
    }
    let newcomer = join("newcomer", &["a", "b"]);
    let (mut o, mut r) = (original.clone(), restored.clone());
    assert_eq!(
        respond(&mut r, &newcomer, topics, now),
        respond(&mut o, &newcomer, topics, now),
        "{what}: a new member"
    );

    let (mut o, mut r) = (original.clone(), restored);
    for round in 0..3 {
        let ids: Vec<String> = o.members.keys().cloned().collect();
        for id in ids {
            let Some(m) = o.member(&id).cloned() else {
                continue;
            };
            let req = next_beat(&m, round > 0);
            let expected = respond(&mut o, &req, topics, now);
            let got = respond(&mut r, &req, topics, now);
            assert_eq!(got, expected, "{what}: round {round}, {req:?}");
        }
        assert_eq!(r.to_snapshot(), o.to_snapshot(), "{what}: round {round}");
    }
}

/// A random subscription: names, a regex, or both, sometimes with an assignor.
fn subscribe(req: ConsumerGroupHeartbeatRequest, rng: &mut Rng) -> ConsumerGroupHeartbeatRequest {
    let req = match rng.below(4) {
        0 => req
            .with_subscribed_topic_names(None)
            .with_subscribed_topic_regex(Some(s("[ab]"))),
        1 => req.with_subscribed_topic_regex(Some(s("c|d"))),
        2 => req.with_subscribed_topic_names(Some(vec![
            kafka_protocol::messages::TopicName(s("b")),
            kafka_protocol::messages::TopicName(s("d")),
        ])),
        _ => req,
    };
    match rng.below(4) {
        0 => req.with_server_assignor(Some(s("range"))),
        1 => req.with_server_assignor(Some(s("uniform"))),
        _ => req,
    }
}

/// Random joins, heartbeats (honest, revoking or not), subscription changes, leaves, static
/// departures and returns, crashes and topic changes. After every step: a snapshot that
/// changed implies `take_dirty`, and every few steps the restored group behaves the same.
fn run(seed: u64, steps: usize, check_every: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut topics = Topics::new(&[("a", 4), ("b", 3), ("c", 5)]);
    let config = ConsumerGroupConfig {
        assignors: if seed.is_multiple_of(3) {
            vec![ServerAssignor::Range, ServerAssignor::Uniform]
        } else {
            vec![ServerAssignor::Uniform, ServerAssignor::Range]
        },
        ..ConsumerGroupConfig::default()
    };
    let mut g = ConsumerGroup::new("g".into(), config);
    let mut crashed: BTreeSet<String> = BTreeSet::new();
    let mut joined = 0;
    let mut now = NOW;
    for step in 0..steps {
        now += 100;
        let what = format!("seed {seed} step {step}");
        let before = g.to_snapshot();
        g.take_dirty();
        let live: Vec<ConsumerGroupMember> = g
            .members
            .values()
            .filter(|m| !crashed.contains(&m.member_id))
            .cloned()
            .collect();
        let pick = |rng: &mut Rng| live.get(rng.below(live.len() as u64) as usize).cloned();
        let roll = rng.below(100);
        if roll < 8 && g.members_len() < 8 {
            joined += 1;
            let mut req = subscribe(join(&format!("m{joined}"), &["a", "c"]), &mut rng);
            if rng.chance(40) {
                req = req.with_instance_id(Some(s(&format!("i{}", joined % 5))));
            }
            let _ = respond(&mut g, &req, &topics, now);
        } else if roll < 10 {
            if let Some(m) = pick(&mut rng) {
                let epoch = if m.instance_id.is_some() && rng.chance(60) {
                    LEAVE_GROUP_STATIC_MEMBER_EPOCH
                } else {
                    LEAVE_GROUP_MEMBER_EPOCH
                };
                let req = beat(&m.member_id, epoch, None)
                    .with_instance_id(m.instance_id.as_deref().map(s));
                assert!(respond(&mut g, &req, &topics, now).is_ok(), "{what}");
            }
        } else if roll < 12 {
            if let Some(m) = pick(&mut rng) {
                let req = subscribe(
                    next_beat(&m, true).with_rebalance_timeout_ms(30_000),
                    &mut rng,
                );
                let _ = respond(&mut g, &req, &topics, now);
            }
        } else if roll < 13 {
            if let Some(m) = pick(&mut rng) {
                crashed.insert(m.member_id);
            }
        } else if roll < 14 {
            // Time passes: the live members heartbeat (having revoked), the crashed expire.
            now += i64::from(g.config.session_timeout_ms);
            for m in g.members.clone().values() {
                if !crashed.contains(&m.member_id) {
                    let _ = respond(&mut g, &next_beat(m, true), &topics, now);
                }
            }
            g.expire(now, &topics);
            crashed.clear();
        } else if roll < 15 {
            let a = topics.0["a"].partitions;
            topics.set_partitions("a", a + 1);
            g.on_metadata_change(&topics);
        } else if roll < 16 {
            if topics.0.contains_key("d") {
                topics.delete("d");
            } else {
                topics.create("d", 2);
            }
            g.on_metadata_change(&topics);
        } else if let Some(m) = pick(&mut rng) {
            let req = next_beat(&m, rng.chance(60));
            let _ = respond(&mut g, &req, &topics, now);
        }
        let dirty = g.take_dirty();
        assert!(
            dirty || g.to_snapshot() == before,
            "{what}: the snapshot changed but the group is not dirty"
        );
        assert!(!g.take_dirty(), "{what}: take_dirty clears the flag");
        if step % check_every == 0 {
            assert_restores_behaviour(&g, &topics, now, &what);
        }
    }
    assert_restores_behaviour(&g, &topics, now, &format!("seed {seed} end"));
}

#[test]
fn restored_groups_answer_as_the_originals_in_random_runs() {
    for seed in 1..=12 {
        run(seed, 250, 5);
    }
}

#[test]
fn restored_groups_answer_as_the_originals_in_long_runs() {
    for seed in 100..104 {
        run(seed, 1_500, 50);
    }
}

/// Joins `n` members to topics a and b and heartbeats (revoking promptly) until stable.
fn stable_group(members: usize, topics: &Topics) -> ConsumerGroup {
    let mut g = ConsumerGroup::new("g".into(), ConsumerGroupConfig::default());
    for i in 0..members {
        let req = join(&format!("member-{i:04}-{}", "x".repeat(20)), &["a", "b"])
            .with_instance_id((i % 3 == 0).then(|| s(&format!("instance-{i}"))))
            .with_rack_id(Some(s("rack-1")));
        respond(&mut g, &req, topics, NOW).expect("join");
    }
    for _ in 0..10 {
        let members: Vec<ConsumerGroupMember> = g.members.values().cloned().collect();
        for m in &members {
            respond(&mut g, &next_beat(m, true), topics, NOW).expect("beat");
        }
        if g.state() == ConsumerGroupState::Stable {
            break;
        }
    }
    assert_eq!(g.state(), ConsumerGroupState::Stable);
    g
}

#[test]
fn a_large_stable_group_round_trips_in_a_small_snapshot() {
    let topics = Topics::new(&[("a", 100), ("b", 100)]);
    let g = stable_group(100, &topics);
    let snapshot = g.to_snapshot();
    eprintln!(
        "snapshot of 100 members / 200 partitions: {} bytes",
        snapshot.len()
    );
    // About 240 bytes per member: ids and strings, and its assigned and target partitions
    // (16 bytes per topic id, 4 per partition).
    assert!(snapshot.len() < 32 * 1024, "{} bytes", snapshot.len());
    assert_restores_behaviour(&g, &topics, NOW + 1, "100 members");
}

#[test]
fn an_empty_group_keeps_its_epoch() {
    let topics = Topics::new(&[("a", 2), ("b", 1)]);
    let mut g = stable_group(2, &topics);
    let ids: Vec<String> = g.members.keys().cloned().collect();
    for id in ids {
        respond(
            &mut g,
            &beat(&id, LEAVE_GROUP_MEMBER_EPOCH, None),
            &topics,
            NOW,
        )
        .expect("leave");
    }
    assert_eq!(g.state(), ConsumerGroupState::Empty);
    let restored = restore(&g, NOW);
    assert_eq!(restored.group_epoch(), g.group_epoch());
    assert_restores_behaviour(&g, &topics, NOW, "empty group");
}

#[test]
fn restored_deadlines_restart_at_load() {
    let topics = Topics::new(&[("a", 4), ("b", 0)]);
    let mut g = ConsumerGroup::new("g".into(), ConsumerGroupConfig::default());
    respond(&mut g, &join("x", &["a"]), &topics, NOW).expect("x joins");
    respond(&mut g, &join("y", &["a"]), &topics, NOW).expect("y joins");
    let x = g.member("x").cloned().expect("x");
    respond(&mut g, &next_beat(&x, false), &topics, NOW).expect("x told to revoke");
    // x still holds the partitions y is to get: x is revoking.
    assert_eq!(
        g.member("x").map(|m| m.state),
        Some(MemberState::UnrevokedPartitions)
    );
    let later = NOW + 1_000_000;
    let restored = restore(&g, later);
    let x = restored.member("x").expect("x");
    assert_eq!(x.session_deadline_ms, later + 45_000);
    assert_eq!(x.revocation_deadline_ms, Some(later + 30_000));
    assert_eq!(
        restored.member("y").map(|m| m.revocation_deadline_ms),
        Some(None)
    );
    assert_eq!(restored.next_deadline(), Some(later + 30_000));
}

#[test]
fn take_dirty_follows_durable_changes_only() {
    let mut topics = Topics::new(&[("a", 4), ("b", 2)]);
    let mut g = ConsumerGroup::new("g".into(), ConsumerGroupConfig::default());
    assert!(!g.take_dirty(), "a new group has nothing to write");

    respond(&mut g, &join("x", &["a"]), &topics, NOW).expect("x joins");
    assert!(g.take_dirty(), "join");
    assert!(!g.take_dirty(), "cleared");

    let x = g.member("x").cloned().expect("x");
    respond(&mut g, &next_beat(&x, false), &topics, NOW + 1_000).expect("no-op beat");
    assert!(
        !g.take_dirty(),
        "a heartbeat that changes nothing but the session"
    );
    respond(
        &mut g,
        &beat("x", x.member_epoch, None),
        &topics,
        NOW + 2_000,
    )
    .expect("beat");
    assert!(!g.take_dirty(), "a heartbeat without owned partitions");
    // Past the metadata refresh interval, with the same metadata.
    respond(
        &mut g,
        &beat("x", x.member_epoch, None),
        &topics,
        NOW + 60_000,
    )
    .expect("beat");
    assert!(!g.take_dirty(), "a metadata refresh that finds nothing new");
    g.on_metadata_change(&topics);
    assert!(!g.take_dirty(), "unrelated metadata");
    assert!(g.expire(NOW + 60_001, &topics).is_empty());
    assert!(!g.take_dirty(), "nothing expired");

    respond(&mut g, &join("y", &["a"]), &topics, NOW + 61_000).expect("y joins");
    assert!(g.take_dirty(), "second join");
    let x = g.member("x").cloned().expect("x");
    respond(&mut g, &next_beat(&x, false), &topics, NOW + 61_000).expect("x told to revoke");
    assert!(g.take_dirty(), "x moves to revoking");
    let x = g.member("x").cloned().expect("x");
    respond(&mut g, &next_beat(&x, false), &topics, NOW + 61_100).expect("x still revoking");
    assert!(!g.take_dirty(), "x still owns what it must give back");
    respond(&mut g, &next_beat(&x, true), &topics, NOW + 61_200).expect("x revoked");
    assert!(g.take_dirty(), "x revoked: a reconciliation step");
    let y = g.member("y").cloned().expect("y");
    respond(&mut g, &next_beat(&y, false), &topics, NOW + 61_300).expect("y gets its share");
    assert!(g.take_dirty(), "y's partitions are released to it");

    topics.set_partitions("a", 6);
    g.on_metadata_change(&topics);
    assert!(g.take_dirty(), "a subscribed topic grew");

    let static_join = join("z", &["b"]).with_instance_id(Some(s("zi")));
    respond(&mut g, &static_join, &topics, NOW + 62_000).expect("z joins");
    assert!(g.take_dirty(), "static join");
    let away = beat("z", LEAVE_GROUP_STATIC_MEMBER_EPOCH, None).with_instance_id(Some(s("zi")));
    respond(&mut g, &away, &topics, NOW + 62_100).expect("z away");
    assert!(g.take_dirty(), "static member away");
    respond(&mut g, &away, &topics, NOW + 62_200).expect("z away again");
    assert!(!g.take_dirty(), "already away");
    let back = join("z2", &["b"]).with_instance_id(Some(s("zi")));
    respond(&mut g, &back, &topics, NOW + 62_300).expect("z back as z2");
    assert!(g.take_dirty(), "static member replaced");

    respond(
        &mut g,
        &beat("y", LEAVE_GROUP_MEMBER_EPOCH, None),
        &topics,
        NOW + 63_000,
    )
    .expect("y leaves");
    assert!(g.take_dirty(), "leave");
    assert!(!g.expire(NOW + 10_000_000, &topics).is_empty());
    assert!(g.take_dirty(), "expiry");
}

/// A group with static members, regexes, a revoking and an unreleased member.
fn rich_group() -> (ConsumerGroup, Topics) {
    let topics = Topics::new(&[("a", 3), ("b", 2), ("c", 4)]);
    let mut g = ConsumerGroup::new("g".into(), ConsumerGroupConfig::default());
    respond(
        &mut g,
        &join("x", &["a", "b"]).with_rack_id(Some(s("r1"))),
        &topics,
        NOW,
    )
    .expect("x");
    let regex = join("y", &[])
        .with_subscribed_topic_names(None)
        .with_subscribed_topic_regex(Some(s("[ab]")))
        .with_instance_id(Some(s("yi")))
        .with_server_assignor(Some(s("range")));
    respond(&mut g, &regex, &topics, NOW).expect("y");
    respond(&mut g, &join("z", &["c"]), &topics, NOW).expect("z");
    let x = g.member("x").cloned().expect("x");
    respond(&mut g, &next_beat(&x, false), &topics, NOW).expect("x revoking");
    let y = g.member("y").cloned().expect("y");
    respond(&mut g, &next_beat(&y, false), &topics, NOW).expect("y waiting");
    (g, topics)
}

#[test]
fn the_rich_group_has_every_member_state() {
    let (g, topics) = rich_group();
    let states: BTreeSet<&str> = g.members.values().map(|m| m.state.name()).collect();
    assert_eq!(
        states,
        BTreeSet::from(["STABLE", "UNREVOKED_PARTITIONS", "UNRELEASED_PARTITIONS"])
    );
    assert_restores_behaviour(&g, &topics, NOW, "rich group");
}

#[test]
fn every_truncation_is_refused() {
    let (g, _) = rich_group();
    let snapshot = g.to_snapshot();
    for cut in 0..snapshot.len() {
        let r = ConsumerGroup::from_snapshot("g".into(), g.config.clone(), &snapshot[..cut], NOW);
        assert!(r.is_err(), "cut at {cut} of {}", snapshot.len());
        // And without the checksum to stop it, the decoder itself notices.
        if cut >= 6 {
            let body = &snapshot[6..cut];
            assert!(
                decode_unchecked("g".into(), g.config.clone(), body, NOW).is_err(),
                "body cut at {cut}"
            );
        }
    }
    let mut longer = snapshot.to_vec();
    longer.push(0);
    let crc = checksum(&longer[6..]).to_be_bytes();
    longer[2..6].copy_from_slice(&crc);
    assert_eq!(
        ConsumerGroup::from_snapshot("g".into(), g.config.clone(), &longer, NOW).map(|_| ()),
        Err(SnapshotError::TrailingBytes(1))
    );
}

#[test]
fn every_bit_flip_is_refused_or_decodes_to_a_consistent_group() {
    let (g, topics) = rich_group();
    let snapshot = g.to_snapshot();
    let mut decoded = 0;
    for byte in 0..snapshot.len() {
        for bit in 0..8 {
            let mut flipped = snapshot.to_vec();
            flipped[byte] ^= 1 << bit;
            let r = ConsumerGroup::from_snapshot("g".into(), g.config.clone(), &flipped, NOW);
            assert!(
                r.is_err(),
                "flip of bit {bit} in byte {byte} went unnoticed"
            );
            // Past the checksum: the decoder must not panic, and whatever it accepts is a
            // group that works.
            if byte >= 6 {
                if let Ok(mut group) =
                    decode_unchecked("g".into(), g.config.clone(), &flipped[6..], NOW)
                {
                    decoded += 1;
                    assert!(group.holders_are_consistent());
                    let members: Vec<ConsumerGroupMember> =
                        group.members.values().cloned().collect();
                    for m in &members {
                        let _ = respond(&mut group, &next_beat(m, false), &topics, NOW);
                    }
                    let _ = group.to_snapshot();
                }
            }
        }
    }
    // Flips in partition numbers, epochs, timeouts and strings still decode: the test above
    // did look at some accepted groups.
    assert!(decoded > 0);
}

#[test]
fn broken_invariants_are_refused() {
    let (g, _) = rich_group();
    let config = g.config.clone();
    let refused = |mutate: &dyn Fn(&mut ConsumerGroup)| {
        let mut bad = g.clone();
        mutate(&mut bad);
        let r = ConsumerGroup::from_snapshot("g".into(), config.clone(), &bad.to_snapshot(), NOW);
        match r {
            Err(SnapshotError::Inconsistent(_) | SnapshotError::Invalid(_)) => {}
            other => panic!("accepted or wrong error: {:?}", other.map(|_| ())),
        }
    };
    // A partition held by two members.
    refused(&|g| {
        let (t, p) = assignment::iter(&g.members["x"].assigned)
            .next()
            .expect("x holds one");
        assignment::insert(&mut g.members.get_mut("z").expect("z").assigned, t, p);
    });
    // A static member that does not exist.
    refused(&|g| {
        g.static_members.insert("ghost".into(), "nobody".into());
    });
    // An instance id pointing at a member that claims another.
    refused(&|g| {
        g.static_members.insert("yi".into(), "x".into());
    });
    // A target for a member that does not exist.
    refused(&|g| {
        g.target.insert("nobody".into(), Assignment::new());
    });
    // One partition targeted at two members.
    refused(&|g| {
        let (t, p) = assignment::iter(&g.target["x"])
            .next()
            .expect("x targets one");
        assignment::insert(g.target.get_mut("z").expect("z"), t, p);
    });
    // A member epoch from the future.
    refused(&|g| {
        g.members.get_mut("z").expect("z").member_epoch = g.group_epoch + 1;
    });
    // The assignment epoch behind the group epoch.
    refused(&|g| g.assignment_epoch -= 1);
    // Revoking with nothing to revoke.
    refused(&|g| {
        let x = g.members.get_mut("x").expect("x");
        x.pending_revocation.clear();
    });
    // A regex no member uses.
    refused(&|g| {
        let resolved = g.regexes.values().next().cloned().expect("y's regex");
        g.regexes.insert("zz".into(), resolved);
    });
    // An empty partition set (Assignment's invariant).
    refused(&|g| {
        g.members
            .get_mut("z")
            .expect("z")
            .assigned
            .insert(uuid::Uuid::nil(), BTreeSet::new());
    });
    // A negative partition.
    refused(&|g| {
        assignment::insert(
            &mut g.members.get_mut("z").expect("z").assigned,
            uuid::Uuid::nil(),
            -1,
        );
    });
}

#[test]
fn hostile_headers_and_counts_are_refused_before_allocating() {
    let config = ConsumerGroupConfig::default();
    let decode = |bytes: &[u8]| {
        ConsumerGroup::from_snapshot("g".into(), config.clone(), bytes, NOW).map(|_| ())
    };
    assert_eq!(decode(&[]), Err(SnapshotError::Truncated("version")));
    assert_eq!(
        decode(&[0, 1, 0, 0, 0, 0]),
        Err(SnapshotError::UnknownVersion(1))
    );
    assert_eq!(decode(&[0, 0, 0, 0, 0, 0, 1]), Err(SnapshotError::Checksum));
    // Epochs, assignor "uniform", then four billion subscribed topics in a few bytes.
    let mut body = vec![0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
    body.extend_from_slice(b"uniform");
    body.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
    assert_eq!(
        decode_unchecked("g".into(), config.clone(), &body, NOW).map(|_| ()),
        Err(SnapshotError::Truncated("subscribed topics"))
    );
    // A string claiming four gigabytes.
    let body = [0, 0, 0, 1, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, b'u'];
    assert_eq!(
        decode_unchecked("g".into(), config.clone(), &body, NOW).map(|_| ()),
        Err(SnapshotError::Truncated("group assignor"))
    );
}
