//! State machine tests for the classic group, driven by hand with explicit time.

use super::*;

const NO_DELAY: ClassicLimits = ClassicLimits {
    initial_rebalance_delay_ms: 0,
    max_size: 10,
};

fn req(member_id: &str, protocols: &[(&str, &'static [u8])]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|(n, m)| (n.to_string(), Bytes::from_static(m)))
            .collect(),
        require_known_member_id: true,
    }
}

fn range(member_id: &str) -> JoinRequest {
    req(member_id, &[("range", b"meta")])
}

fn done<T>(o: Outcome<T>) -> T {
    match o {
        Outcome::Done(r) => r,
        Outcome::Wait(_) => panic!("expected an immediate answer"),
    }
}

fn parked<T>(o: Outcome<T>) -> oneshot::Receiver<T> {
    match o {
        Outcome::Done(_) => panic!("expected a parked request"),
        Outcome::Wait(rx) => rx,
    }
}

fn answered<T>(rx: &mut oneshot::Receiver<T>) -> T {
    rx.try_recv().expect("the parked request was answered")
}

/// Joins a new dynamic member (two round trips, KIP-394) and returns its id and parked join.
fn join_new(g: &mut ClassicGroup, n: usize, now: i64) -> (String, oneshot::Receiver<JoinResult>) {
    let first = done(g.join(range(""), format!("m{n}"), NO_DELAY, now));
    assert_eq!(first.error, Some(ErrorCode::MemberIdRequired));
    let id = first.member_id;
    let rx = parked(g.join(range(&id), "unused".into(), NO_DELAY, now));
    (id, rx)
}

fn sync(
    g: &mut ClassicGroup,
    id: &str,
    generation: i32,
    assign: &[(&str, &str)],
) -> Outcome<SyncResult> {
    g.sync(
        SyncRequest {
            member_id: id.into(),
            group_instance_id: None,
            generation_id: generation,
            protocol_type: None,
            protocol_name: None,
            assignments: assign
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
                .collect(),
        },
        0,
    )
}

/// One member: join, become leader, sync, stable; the stored record is requested.
#[test]
fn single_member_reaches_stable() {
    let mut g = ClassicGroup::new("g".into(), 0);
    let (id, mut join) = join_new(&mut g, 1, 0);
    let r = answered(&mut join);
    assert_eq!(r.error, None);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader, id);
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(g.state(), ClassicState::CompletingRebalance);

    let mut s = parked(sync(&mut g, &id, 1, &[(&id, "A")]));
    assert_eq!(g.state(), ClassicState::Stable);
    assert!(g.take_needs_store());
    assert!(
        s.try_recv().is_err(),
        "no answer before the record is stored"
    );
    g.on_stored();
    assert_eq!(answered(&mut s).assignment, Bytes::from("A"));
    assert_eq!(g.heartbeat(&id, None, 1, 1), Ok(()));
    assert_eq!(g.to_stored().members.len(), 1);
}

/// A second member triggers a rebalance; the first learns it from its heartbeat, rejoins,
/// and both land in generation 2 with the first still leader.
#[test]
fn second_member_rebalances_the_group() {
    let mut g = ClassicGroup::new("g".into(), 0);
    let (a, mut ja) = join_new(&mut g, 1, 0);
    answered(&mut ja);
    drop(parked(sync(&mut g, &a, 1, &[(&a, "A")])));
    g.on_stored();

    let (b, mut jb) = join_new(&mut g, 2, 10);
    assert_eq!(g.state(), ClassicState::PreparingRebalance);
    assert!(jb.try_recv().is_err(), "waits for the existing member");
    assert_eq!(
        g.heartbeat(&a, None, 1, 10),
        Err(ErrorCode::RebalanceInProgress)
    );
    let mut ja = parked(g.join(range(&a), "x".into(), NO_DELAY, 20));
    let ra = answered(&mut ja);
    let rb = answered(&mut jb);
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(ra.leader, a);
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty(), "only the leader gets the members");

    // The follower syncs first and waits for the leader's assignment.
    let mut sb = parked(sync(&mut g, &b, 2, &[]));
    let mut sa = parked(sync(&mut g, &a, 2, &[(&a, "A"), (&b, "B")]));
    assert!(g.take_needs_store());
    g.on_stored();
    assert_eq!(answered(&mut sa).assignment, Bytes::from("A"));
    assert_eq!(answered(&mut sb).assignment, Bytes::from("B"));
    assert_eq!(done(sync(&mut g, &b, 2, &[])).assignment, Bytes::from("B"));
}

/// A member that stops heartbeating is removed after its session timeout; the survivor is
/// told to rejoin and ends up alone in the next generation.
#[test]
fn expired_member_is_removed_and_the_rest_rebalance() {
    let mut g = ClassicGroup::new("g".into(), 0);
    let (a, mut ja) = join_new(&mut g, 1, 0);
    let (b, mut jb) = join_new(&mut g, 2, 0);
    // a completed generation 1 alone; b's join opened generation 2's join phase.
    let _ = answered(&mut ja);
    assert!(jb.try_recv().is_err());
    let mut ja = parked(g.join(range(&a), "x".into(), NO_DELAY, 1));
    answered(&mut ja);
    answered(&mut jb);
    drop(parked(sync(&mut g, &a, 2, &[(&a, "A"), (&b, "B")])));
    g.take_needs_store();
    g.on_stored();
    // Only a heartbeats.
    for t in [3_000, 6_000, 9_000, 12_000] {
        assert_eq!(g.heartbeat(&a, None, 2, t), Ok(()));
        let removed = g.tick(NO_DELAY, t);
        if t < 10_000 {
            assert!(removed.is_empty());
        } else {
            assert_eq!(removed, vec![b.clone()]);
        }
    }
    assert_eq!(g.state(), ClassicState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&b, None, 2, 12_001),
        Err(ErrorCode::UnknownMemberId)
    );
    let mut ja = parked(g.join(range(&a), "x".into(), NO_DELAY, 12_001));
    let r = answered(&mut ja);
    assert_eq!((r.generation_id, r.members.len()), (3, 1));
}

/// A member that does not rejoin before the rebalance timeout is dropped from the new
/// generation; the one that did rejoin is answered at the deadline.
#[test]
fn join_phase_ends_at_the_rebalance_timeout() {
    let mut g = ClassicGroup::new("g".into(), 0);
    let (a, mut ja) = join_new(&mut g, 1, 0);
    answered(&mut ja);
    drop(parked(sync(&mut g, &a, 1, &[])));
    g.on_stored();
    let (b, mut jb) = join_new(&mut g, 2, 100);
    // a keeps heartbeating but never rejoins.
    for t in (1_000..30_100).step_by(1_000) {
        let _ = g.heartbeat(&a, None, 1, t);
        g.tick(NO_DELAY, t);
        assert!(jb.try_recv().is_err(), "still waiting at {t}");
    }
    g.tick(NO_DELAY, 30_100);
    let r = answered(&mut jb);
    assert_eq!(r.error, None);
    assert_eq!(r.leader, b, "the leader left: leadership moved");
    assert_eq!(r.members.len(), 1);
    assert!(!g.has_member(&a));
}

#[test]
fn initial_rebalance_delay_holds_the_first_generation() {
    let limits = ClassicLimits {
        initial_rebalance_delay_ms: 3_000,
        max_size: 10,
    };
    let mut g = ClassicGroup::new("g".into(), 0);
    let id = done(g.join(range(""), "m1".into(), limits, 0)).member_id;
    let mut j1 = parked(g.join(range(&id), "x".into(), limits, 0));
    g.tick(limits, 2_999);
    assert!(j1.try_recv().is_err());
    // A second member arrives within the delay: the delay is extended once more.
    let id2 = done(g.join(range(""), "m2".into(), limits, 2_000)).member_id;
    let mut j2 = parked(g.join(range(&id2), "x".into(), limits, 2_000));
    g.tick(limits, 3_000);
    assert!(j1.try_recv().is_err());
    g.tick(limits, 6_000);
    assert_eq!(answered(&mut j1).members.len(), 2);
    assert_eq!(answered(&mut j2).generation_id, 1);
}

/// A static member restarting within its session keeps its assignment without a rebalance;
/// its old member id is fenced.
#[test]
fn static_member_rejoins_without_rebalance() {
    let mut g = ClassicGroup::new("g".into(), 0);
    let mut r = range("");
    r.group_instance_id = Some("instance-1".into());
    let mut j = parked(g.join(r.clone(), "instance-1-a".into(), NO_DELAY, 0));
    let first = answered(&mut j);
    assert_eq!(first.member_id, "instance-1-a");
    drop(parked(sync(
        &mut g,
        "instance-1-a",
        1,
        &[("instance-1-a", "A")],
    )));
    g.take_needs_store();
    g.on_stored();

    let again = done(g.join(r.clone(), "instance-1-b".into(), NO_DELAY, 5_000));
    assert_eq!(again.error, None);
    assert_eq!(again.generation_id, 1, "no new generation");
    assert_eq!(again.member_id, "instance-1-b");
    assert!(again.skip_assignment, "the static leader must not reassign");
    assert_eq!(g.state(), ClassicState::Stable);
    assert!(g.take_needs_store(), "the new member id is stored");
    assert_eq!(
        g.heartbeat("instance-1-a", Some("instance-1"), 1, 5_001),
        Err(ErrorCode::FencedInstanceId)
    );
    assert_eq!(
        g.heartbeat("instance-1-b", Some("instance-1"), 1, 5_001),
        Ok(())
    );
    assert_eq!(
        done(sync(&mut g, "instance-1-b", 1, &[])).assignment,
        Bytes::from("A")
    );
}

#[test]
fn request_errors_match_kafka() {
    let mut g = ClassicGroup::new("g".into(), 0);
    let (a, mut ja) = join_new(&mut g, 1, 0);
    answered(&mut ja);
    // Another protocol type, or no protocol in common.
    let mut other = range("");
    other.protocol_type = "connect".into();
    assert_eq!(
        done(g.join(other, "z".into(), NO_DELAY, 1)).error,
        Some(ErrorCode::InconsistentGroupProtocol)
    );
    assert_eq!(
        done(g.join(req("", &[("roundrobin", b"")]), "z".into(), NO_DELAY, 1)).error,
        Some(ErrorCode::InconsistentGroupProtocol)
    );
    assert_eq!(
        done(g.join(req("", &[]), "z".into(), NO_DELAY, 1)).error,
        Some(ErrorCode::InconsistentGroupProtocol)
    );
    assert_eq!(
        done(g.join(range("nobody"), "z".into(), NO_DELAY, 1)).error,
        Some(ErrorCode::UnknownMemberId)
    );
    assert_eq!(
        done(sync(&mut g, &a, 7, &[])).error,
        Some(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        g.heartbeat(&a, None, 7, 1),
        Err(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        g.heartbeat("nobody", None, 1, 1),
        Err(ErrorCode::UnknownMemberId)
    );
    assert_eq!(
        g.leave("nobody", None, NO_DELAY, 1),
        Err(ErrorCode::UnknownMemberId)
    );
    // The group is full.
    let tiny = ClassicLimits {
        initial_rebalance_delay_ms: 0,
        max_size: 1,
    };
    assert_eq!(
        done(g.join(range(""), "z".into(), tiny, 1)).error,
        Some(ErrorCode::GroupMaxSizeReached)
    );
}

/// The last member leaving empties the group: a new generation with no members, stored.
#[test]
fn last_leave_empties_the_group() {
    let mut g = ClassicGroup::new("g".into(), 0);
    let (a, mut ja) = join_new(&mut g, 1, 0);
    answered(&mut ja);
    drop(parked(sync(&mut g, &a, 1, &[])));
    g.take_needs_store();
    g.on_stored();
    assert_eq!(g.leave(&a, None, NO_DELAY, 50), Ok(()));
    assert_eq!(g.state(), ClassicState::Empty);
    assert_eq!(g.generation(), 2);
    assert!(g.take_needs_store());
    assert!(g.to_stored().members.is_empty());
    assert_eq!(g.state_timestamp(), 50);
}

/// A stored group comes back Stable with its members, and they carry on heartbeating.
#[test]
fn stored_group_round_trips() {
    let mut g = ClassicGroup::new("g".into(), 0);
    let (a, mut ja) = join_new(&mut g, 1, 0);
    answered(&mut ja);
    drop(parked(sync(&mut g, &a, 1, &[(&a, "A")])));
    g.on_stored();
    let back = ClassicGroup::from_stored("g".into(), g.to_stored(), 1_000);
    let mut back = back;
    assert_eq!(back.state(), ClassicState::Stable);
    assert_eq!(back.heartbeat(&a, None, 1, 1_001), Ok(()));
    assert_eq!(
        done(sync(&mut back, &a, 1, &[])).assignment,
        Bytes::from("A")
    );
}

/// Randomised: members join, heartbeat, leave and go silent in random order. Whatever
/// happens, the generation only grows, a Stable group's members all hold the generation's
/// assignment, and every parked request is eventually answered once the group settles.
#[test]
fn random_membership_churn_keeps_invariants() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut g = ClassicGroup::new("g".into(), 0);
    let mut members: Vec<String> = Vec::new();
    let mut last_generation = 0;
    let mut now = 0;
    for step in 0..2_000 {
        now += 100;
        match rand(6) {
            0 if members.len() < 8 => {
                let id = done(g.join(range(""), format!("m{step}"), NO_DELAY, now)).member_id;
                let _ = g.join(range(&id), "x".into(), NO_DELAY, now);
                members.push(id);
            }
            1 if !members.is_empty() => {
                let i = rand(members.len() as u64) as usize;
                let id = members.swap_remove(i);
                let _ = g.leave(&id, None, NO_DELAY, now);
            }
            _ => {
                // Everyone still here behaves: heartbeats, rejoins when told, syncs.
                for id in members.clone() {
                    let generation = g.generation();
                    match g.heartbeat(&id, None, generation, now) {
                        Err(ErrorCode::RebalanceInProgress) => {
                            let _ = g.join(range(&id), "x".into(), NO_DELAY, now);
                        }
                        Err(ErrorCode::UnknownMemberId) => {
                            members.retain(|m| m != &id);
                        }
                        _ => {}
                    }
                    if g.state() == ClassicState::CompletingRebalance {
                        let assign: Vec<(String, String)> = members
                            .iter()
                            .map(|m| (m.clone(), format!("{m}@{}", g.generation())))
                            .collect();
                        let refs: Vec<(&str, &str)> = assign
                            .iter()
                            .map(|(a, b)| (a.as_str(), b.as_str()))
                            .collect();
                        let generation = g.generation();
                        let _ = sync(&mut g, &id, generation, &refs);
                        if g.take_needs_store() {
                            g.on_stored();
                        }
                    }
                }
            }
        }
        g.tick(NO_DELAY, now);
        if g.take_needs_store() {
            g.on_stored();
        }
        assert!(g.generation() >= last_generation);
        last_generation = g.generation();
        if g.state() == ClassicState::Stable {
            let expect = format!("@{}", g.generation());
            for m in g.to_stored().members {
                let a = String::from_utf8_lossy(&m.assignment).to_string();
                assert!(
                    a.ends_with(&expect) || a.is_empty(),
                    "{a} in generation {expect}"
                );
            }
        }
        assert!(g.members_len() <= 10);
    }
    assert!(last_generation > 5, "the churn produced rebalances");
}

/// A member whose parked JoinGroup was abandoned (client killed) no longer counts as
/// joined: its session expires and the others complete the rebalance without it.
#[test]
fn abandoned_join_lets_the_session_expire() {
    let mut g = ClassicGroup::new("g".into(), 0);
    let (a, mut ja) = join_new(&mut g, 1, 0);
    answered(&mut ja);
    let (b, mut jb) = join_new(&mut g, 2, 0);
    let mut ja = parked(g.join(range(&a), "x".into(), NO_DELAY, 0));
    answered(&mut ja);
    answered(&mut jb);
    drop(parked(sync(&mut g, &a, 2, &[])));
    g.on_stored();
    assert_eq!(g.state(), ClassicState::Stable);

    // c arrives; b rejoins and its client dies while parked; a goes silent.
    let c = done(g.join(range(""), "m3".into(), NO_DELAY, 1_000)).member_id;
    let mut jc = parked(g.join(range(&c), "x".into(), NO_DELAY, 1_000));
    drop(parked(g.join(range(&b), "x".into(), NO_DELAY, 1_000)));
    g.tick(NO_DELAY, 5_000);
    assert!(jc.try_recv().is_err());
    // Both sessions (10 s) are over long before the 30 s rebalance timeout: c is alone.
    g.tick(NO_DELAY, 12_000);
    assert!(!g.has_member(&a));
    assert!(
        !g.has_member(&b),
        "an abandoned join does not keep a member alive"
    );
    let r = answered(&mut jc);
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.leader, c);
}
