//! Scenario tests of `ConsumerGroup`: joins, rebalances, leaves, expiry, static membership,
//! metadata changes, describe and every refusal.

use std::collections::BTreeSet;

use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;

use super::assignment::{partition_count, Assignment};
use super::test_support::{beat, join, response_assignment, s, Topics};
use super::*;

const NOW: i64 = 1_000_000;

fn group() -> ConsumerGroup {
    ConsumerGroup::new("g".into(), ConsumerGroupConfig::default())
}

fn hb(
    g: &mut ConsumerGroup,
    req: &ConsumerGroupHeartbeatRequest,
    topics: &Topics,
) -> kafka_protocol::messages::ConsumerGroupHeartbeatResponse {
    g.heartbeat(req, "client", "/127.0.0.1", topics, NOW)
        .expect("heartbeat accepted")
}

fn err(g: &mut ConsumerGroup, req: &ConsumerGroupHeartbeatRequest, topics: &Topics) -> i16 {
    g.heartbeat(req, "client", "/127.0.0.1", topics, NOW)
        .expect_err("heartbeat refused")
        .code()
        .code()
}

fn parts(a: &Assignment, topics: &Topics, name: &str) -> Vec<i32> {
    a.get(&topics.id(name))
        .map(|ps| ps.iter().copied().collect())
        .unwrap_or_default()
}

#[test]
fn first_member_gets_everything() {
    let topics = Topics::new(&[("t", 3)]);
    let mut g = group();
    assert_eq!(g.state(), ConsumerGroupState::Empty);
    let r = hb(&mut g, &join("a", &["t"]), &topics);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.member_id.as_deref(), Some("a"));
    assert_eq!(r.member_epoch, 1);
    assert_eq!(r.heartbeat_interval_ms, 5_000);
    assert_eq!(
        parts(&response_assignment(&r).unwrap(), &topics, "t"),
        vec![0, 1, 2]
    );
    assert_eq!(g.group_epoch(), 1);
    assert_eq!(g.state(), ConsumerGroupState::Stable);
    assert_eq!(g.members_len(), 1);
}

#[test]
fn second_member_waits_for_the_first_to_revoke() {
    let topics = Topics::new(&[("t", 4)]);
    let mut g = group();
    let a_all = response_assignment(&hb(&mut g, &join("a", &["t"]), &topics)).unwrap();

    // b joins: epoch 2, but its partitions are still a's.
    let r = hb(&mut g, &join("b", &["t"]), &topics);
    assert_eq!(r.member_epoch, 2);
    assert_eq!(response_assignment(&r).unwrap(), Assignment::new());
    assert_eq!(
        g.member("b").unwrap().state,
        MemberState::UnreleasedPartitions
    );
    assert_eq!(g.state(), ConsumerGroupState::Reconciling);

    // a is told to give two up, at its old epoch.
    let r = hb(&mut g, &beat("a", 1, Some(&a_all)), &topics);
    assert_eq!(r.member_epoch, 1);
    let a_kept = response_assignment(&r).unwrap();
    assert_eq!(partition_count(&a_kept), 2);
    assert_eq!(
        g.member("a").unwrap().state,
        MemberState::UnrevokedPartitions
    );

    // Still owning them: nothing moves, and no assignment is repeated.
    let r = hb(&mut g, &beat("a", 1, Some(&a_all)), &topics);
    assert_eq!(r.member_epoch, 1);
    assert!(r.assignment.is_none());
    let r = hb(&mut g, &beat("b", 2, Some(&Assignment::new())), &topics);
    assert!(r.assignment.is_none());

    // a lets go: epoch 2; then b gets them.
    let r = hb(&mut g, &beat("a", 1, Some(&a_kept)), &topics);
    assert_eq!(r.member_epoch, 2);
    let r = hb(&mut g, &beat("b", 2, None), &topics);
    let b_got = response_assignment(&r).unwrap();
    assert_eq!(partition_count(&b_got), 2);
    let a_set: BTreeSet<i32> = parts(&a_kept, &topics, "t").into_iter().collect();
    assert!(parts(&b_got, &topics, "t")
        .iter()
        .all(|p| !a_set.contains(p)));
    assert_eq!(g.state(), ConsumerGroupState::Stable);
}

#[test]
fn leaving_hands_partitions_to_the_others() {
    let topics = Topics::new(&[("t", 2)]);
    let mut g = group();
    hb(&mut g, &join("a", &["t"]), &topics);
    hb(&mut g, &join("b", &["t"]), &topics);
    let r = g
        .heartbeat(&beat("a", -1, None), "c", "h", &topics, NOW)
        .unwrap();
    assert_eq!(r.member_epoch, -1);
    assert_eq!(g.members_len(), 1);
    let r = hb(&mut g, &beat("b", 2, Some(&Assignment::new())), &topics);
    assert_eq!(r.member_epoch, 3);
    assert_eq!(
        parts(&response_assignment(&r).unwrap(), &topics, "t"),
        vec![0, 1]
    );
    // Leaving twice: unknown.
    assert_eq!(err(&mut g, &beat("a", -1, None), &topics), 25);
}

#[test]
fn expired_sessions_and_stuck_revocations_are_removed() {
    let topics = Topics::new(&[("t", 2)]);
    let mut g = group();
    let a_all = response_assignment(&hb(&mut g, &join("a", &["t"]), &topics)).unwrap();
    hb(&mut g, &join("b", &["t"]), &topics);
    let r = hb(&mut g, &beat("a", 1, Some(&a_all)), &topics);
    assert_eq!(
        g.member("a").unwrap().state,
        MemberState::UnrevokedPartitions
    );
    assert_eq!(r.member_epoch, 1);
    // a's revocation deadline: NOW + 30 s rebalance timeout, before the 45 s sessions.
    assert_eq!(g.next_deadline(), Some(NOW + 30_000));
    assert!(g.expire(NOW + 29_999, &topics).is_empty());
    assert_eq!(g.expire(NOW + 30_000, &topics), vec!["a".to_string()]);
    let r = hb(&mut g, &beat("b", 2, None), &topics);
    assert_eq!(
        parts(&response_assignment(&r).unwrap(), &topics, "t"),
        vec![0, 1]
    );
    assert_eq!(g.next_deadline(), Some(NOW + 45_000));
    assert_eq!(g.expire(NOW + 45_000, &topics), vec!["b".to_string()]);
    assert!(g.is_empty());
    assert_eq!(g.state(), ConsumerGroupState::Empty);
    assert_eq!(g.next_deadline(), None);
}

#[test]
fn epoch_checks() {
    let topics = Topics::new(&[("t", 2)]);
    let mut g = group();
    let all = response_assignment(&hb(&mut g, &join("a", &["t"]), &topics)).unwrap();
    assert_eq!(err(&mut g, &beat("zz", 1, None), &topics), 25); // unknown member
    assert_eq!(err(&mut g, &beat("a", 2, None), &topics), 110); // ahead
    hb(&mut g, &join("b", &["t"]), &topics);
    let r = hb(&mut g, &beat("a", 1, Some(&all)), &topics);
    let kept = response_assignment(&r).unwrap();
    hb(&mut g, &beat("a", 1, Some(&kept)), &topics); // a moves to epoch 2
    assert_eq!(g.member("a").unwrap().member_epoch, 2);
    // The previous epoch is fine while a owns no more than it is assigned (lost response) ...
    let r = hb(&mut g, &beat("a", 1, Some(&kept)), &topics);
    assert_eq!(r.member_epoch, 2);
    // ... not with partitions it no longer has, nor without owned partitions, nor older.
    assert_eq!(err(&mut g, &beat("a", 1, Some(&all)), &topics), 110);
    assert_eq!(err(&mut g, &beat("a", 1, None), &topics), 110);
    assert_eq!(err(&mut g, &beat("a", 0, None), &topics), 42); // epoch 0 needs a full request
}

#[test]
fn a_fenced_member_rejoins_with_its_id_and_epoch_zero() {
    let topics = Topics::new(&[("t", 2)]);
    let mut g = group();
    hb(&mut g, &join("a", &["t"]), &topics);
    hb(&mut g, &join("a", &["t"]), &topics); // still epoch 1, same partitions
    let r = hb(&mut g, &join("a", &["t"]), &topics);
    assert_eq!(r.member_epoch, 1);
    assert_eq!(
        parts(&response_assignment(&r).unwrap(), &topics, "t"),
        vec![0, 1]
    );
    assert_eq!(g.group_epoch(), 1);
}

#[test]
fn invalid_requests() {
    let topics = Topics::new(&[("t", 2)]);
    let mut g = group();
    let cases: Vec<ConsumerGroupHeartbeatRequest> = vec![
        join("a", &["t"]).with_group_id(s("").into()),
        join("a", &["t"]).with_rebalance_timeout_ms(-1),
        join("a", &["t"]).with_rebalance_timeout_ms(-5),
        join("a", &["t"]).with_topic_partitions(None),
        join("a", &["t"]).with_topic_partitions(Some(test_support::owned_list(&Assignment::from(
            [(topics.id("t"), BTreeSet::from([0]))],
        )))),
        join("a", &["t"]).with_subscribed_topic_names(None),
        join("a", &["t"]).with_instance_id(Some(s(""))),
        join("a", &["t"]).with_rack_id(Some(s(""))),
        join(&"m".repeat(256), &["t"]),
        join("a", &[""]),
        join("a", &[&"x".repeat(250)]),
        beat("", 3, None),
        beat("a", -3, None),
        beat("a", -2, None),
    ];
    for (i, req) in cases.iter().enumerate() {
        assert_eq!(err(&mut g, req, &topics), 42, "case {i}");
    }
    assert!(g.is_empty());
    assert_eq!(g.group_epoch(), 0);

    let mut small = ConsumerGroup::new(
        "g".into(),
        ConsumerGroupConfig {
            max_subscribed_topics: 2,
            ..ConsumerGroupConfig::default()
        },
    );
    assert_eq!(err(&mut small, &join("a", &["t", "u", "v"]), &topics), 42);
}

#[test]
fn regex_subscriptions() {
    let mut topics = Topics::new(&[("orders-eu", 2), ("orders-us", 1), ("payments", 1)]);
    let mut g = group();
    let bad = join("a", &[])
        .with_subscribed_topic_names(None)
        .with_subscribed_topic_regex(Some(s("orders-(")));
    assert_eq!(err(&mut g, &bad, &topics), 128);

    let req = join("a", &[])
        .with_subscribed_topic_names(None)
        .with_subscribed_topic_regex(Some(s("orders-.*")));
    let r = hb(&mut g, &req, &topics);
    let got = response_assignment(&r).unwrap();
    assert_eq!(parts(&got, &topics, "orders-eu"), vec![0, 1]);
    assert_eq!(parts(&got, &topics, "orders-us"), vec![0]);
    assert!(parts(&got, &topics, "payments").is_empty());
    assert_eq!(
        g.describe(&topics).members[0]
            .subscribed_topic_regex
            .as_deref(),
        Some("orders-.*")
    );

    // A new matching topic joins the subscription; a non-matching one does not.
    let epoch = g.group_epoch();
    topics.create("orders-apac", 1);
    g.on_metadata_change(&topics);
    assert_eq!(g.group_epoch(), epoch + 1);
    topics.create("refunds", 1);
    g.on_metadata_change(&topics);
    assert_eq!(g.group_epoch(), epoch + 1);
    let r = hb(&mut g, &beat("a", epoch, Some(&got)), &topics);
    assert_eq!(
        parts(&response_assignment(&r).unwrap(), &topics, "orders-apac"),
        vec![0]
    );

    // Names and regex together; then the regex cleared with "".
    let req = beat("a", epoch + 1, None)
        .with_subscribed_topic_names(Some(vec![TopicName(s("payments"))]))
        .with_subscribed_topic_regex(Some(s("")));
    hb(&mut g, &req, &topics);
    assert_eq!(g.member("a").unwrap().subscribed_topic_regex, None);
    let only: Vec<_> = g.target_assignment("a").unwrap().keys().copied().collect();
    assert_eq!(only, vec![topics.id("payments")]);
}

#[test]
fn assignors() {
    let topics = Topics::new(&[("t", 5)]);
    let mut g = group();
    assert_eq!(
        err(
            &mut g,
            &join("a", &["t"]).with_server_assignor(Some(s("sticky"))),
            &topics
        ),
        112
    );
    let only_uniform = ConsumerGroupConfig {
        assignors: vec![ServerAssignor::Uniform],
        ..Default::default()
    };
    let mut u = ConsumerGroup::new("g".into(), only_uniform);
    assert_eq!(
        err(
            &mut u,
            &join("a", &["t"]).with_server_assignor(Some(s("range"))),
            &topics
        ),
        112
    );

    // Range: b (joined first) and a split by member id: a gets 0..=2, b 3..=4.
    hb(
        &mut g,
        &join("b", &["t"]).with_server_assignor(Some(s("range"))),
        &topics,
    );
    hb(
        &mut g,
        &join("a", &["t"]).with_server_assignor(Some(s("range"))),
        &topics,
    );
    assert_eq!(g.assignor(), ServerAssignor::Range);
    assert_eq!(
        parts(g.target_assignment("a").unwrap(), &topics, "t"),
        vec![0, 1, 2]
    );
    assert_eq!(
        parts(g.target_assignment("b").unwrap(), &topics, "t"),
        vec![3, 4]
    );
    assert_eq!(g.describe(&topics).assignor_name.as_str(), "range");
}

#[test]
fn group_max_size() {
    let topics = Topics::new(&[("t", 2)]);
    let mut g = ConsumerGroup::new(
        "g".into(),
        ConsumerGroupConfig {
            max_size: 1,
            ..Default::default()
        },
    );
    hb(&mut g, &join("a", &["t"]), &topics);
    assert_eq!(err(&mut g, &join("b", &["t"]), &topics), 81);
    // The member itself may still rejoin.
    assert_eq!(hb(&mut g, &join("a", &["t"]), &topics).member_epoch, 1);
}

#[test]
fn static_member_leaves_and_comes_back_under_a_new_member_id() {
    let topics = Topics::new(&[("t", 4)]);
    let mut g = group();
    let a = join("a", &["t"]).with_instance_id(Some(s("i1")));
    hb(&mut g, &a, &topics);
    hb(&mut g, &join("b", &["t"]), &topics);
    let r = hb(&mut g, &beat("a", 1, None), &topics);
    let kept = response_assignment(&r).unwrap();
    hb(&mut g, &beat("a", 1, Some(&kept)), &topics);
    hb(&mut g, &beat("b", 2, None), &topics);
    assert_eq!(g.state(), ConsumerGroupState::Stable);
    let a_target = g.target_assignment("a").unwrap().clone();
    let epoch = g.group_epoch();

    // Another process with the same instance id cannot join while a is there.
    assert_eq!(
        err(
            &mut g,
            &join("a2", &["t"]).with_instance_id(Some(s("i1"))),
            &topics
        ),
        111
    );
    // A heartbeat for i1 from a2 is fenced; for an unknown instance id, unknown.
    assert_eq!(
        err(
            &mut g,
            &beat("a2", 2, None).with_instance_id(Some(s("i1"))),
            &topics
        ),
        82
    );
    assert_eq!(
        err(
            &mut g,
            &beat("a", 2, None).with_instance_id(Some(s("i9"))),
            &topics
        ),
        25
    );

    // a leaves for now: epoch -2, assignment kept, no rebalance.
    let r = g
        .heartbeat(
            &beat("a", -2, None).with_instance_id(Some(s("i1"))),
            "c",
            "h",
            &topics,
            NOW,
        )
        .unwrap();
    assert_eq!(r.member_epoch, -2);
    assert_eq!(g.group_epoch(), epoch);
    assert_eq!(g.members_len(), 2);

    // The restarted process takes a's place and its partitions, at once.
    let r = hb(
        &mut g,
        &join("a2", &["t"]).with_instance_id(Some(s("i1"))),
        &topics,
    );
    assert_eq!(r.member_epoch, epoch);
    assert_eq!(response_assignment(&r).unwrap(), a_target);
    assert!(g.member("a").is_none());
    assert_eq!(g.group_epoch(), epoch);
    assert_eq!(g.state(), ConsumerGroupState::Stable);

    // Leaving for now and never coming back: removed when the session expires.
    // (The temporary leave restarts the session: a full session timeout to come back.)
    g.heartbeat(
        &beat("a2", -2, None).with_instance_id(Some(s("i1"))),
        "c",
        "h",
        &topics,
        NOW + 1_000,
    )
    .unwrap();
    g.heartbeat(&beat("b", epoch, None), "c", "h", &topics, NOW + 10_000)
        .unwrap();
    assert!(g.expire(NOW + 45_999, &topics).is_empty());
    assert_eq!(g.expire(NOW + 46_000, &topics), vec!["a2".to_string()]);
    assert_eq!(g.group_epoch(), epoch + 1);
}

#[test]
fn metadata_changes_move_the_group_epoch() {
    let mut topics = Topics::new(&[("t", 2)]);
    let mut g = group();
    // Subscribing to a topic that does not exist yet.
    let r = hb(&mut g, &join("a", &["t", "later"]), &topics);
    assert_eq!(partition_count(&response_assignment(&r).unwrap()), 2);
    let epoch = g.group_epoch();

    g.on_metadata_change(&topics); // nothing changed
    assert_eq!(g.group_epoch(), epoch);

    topics.set_partitions("t", 3);
    topics.create("later", 1);
    topics.create("unrelated", 1);
    g.on_metadata_change(&topics);
    assert_eq!(g.group_epoch(), epoch + 1);
    let r = hb(&mut g, &beat("a", epoch, None), &topics);
    let got = response_assignment(&r).unwrap();
    assert_eq!(parts(&got, &topics, "t"), vec![0, 1, 2]);
    assert_eq!(parts(&got, &topics, "later"), vec![0]);

    // Deleted topic: revoked.
    let id = topics.id("later");
    topics.delete("later");
    g.on_metadata_change(&topics);
    let r = hb(&mut g, &beat("a", epoch + 1, Some(&got)), &topics);
    assert!(!response_assignment(&r).unwrap().contains_key(&id));
    assert_eq!(
        g.member("a").unwrap().state,
        MemberState::UnrevokedPartitions
    );
}

#[test]
fn changing_the_subscription_rebalances() {
    let topics = Topics::new(&[("t", 2), ("u", 2)]);
    let mut g = group();
    let all = response_assignment(&hb(&mut g, &join("a", &["t"]), &topics)).unwrap();
    let req = beat("a", 1, Some(&all)).with_subscribed_topic_names(Some(vec![TopicName(s("u"))]));
    let r = hb(&mut g, &req, &topics);
    assert_eq!(g.group_epoch(), 2);
    assert_eq!(r.member_epoch, 1); // revoking t first
    assert_eq!(response_assignment(&r).unwrap(), Assignment::new());
    let r = hb(&mut g, &beat("a", 1, Some(&Assignment::new())), &topics);
    assert_eq!(r.member_epoch, 2);
    assert_eq!(
        parts(&response_assignment(&r).unwrap(), &topics, "u"),
        vec![0, 1]
    );
}

use kafka_protocol::messages::TopicName;

#[test]
fn full_requests_always_get_the_assignment() {
    let topics = Topics::new(&[("t", 2)]);
    let mut g = group();
    let all = response_assignment(&hb(&mut g, &join("a", &["t"]), &topics)).unwrap();
    assert!(hb(&mut g, &beat("a", 1, Some(&all)), &topics)
        .assignment
        .is_none());
    let full = beat("a", 1, Some(&all))
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]));
    assert_eq!(
        response_assignment(&hb(&mut g, &full, &topics)).unwrap(),
        all
    );
}

#[test]
fn describe_shows_members_and_assignments() {
    let topics = Topics::new(&[("t", 2)]);
    let mut g = group();
    let req = join("a", &["t"])
        .with_instance_id(Some(s("i")))
        .with_rack_id(Some(s("r1")));
    g.heartbeat(&req, "cid", "/10.0.0.1", &topics, NOW).unwrap();
    let d = g.describe(&topics);
    assert_eq!(d.group_id.as_str(), "g");
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.group_epoch, 1);
    assert_eq!(d.assignment_epoch, 1);
    assert_eq!(d.assignor_name.as_str(), "uniform");
    let m = &d.members[0];
    assert_eq!(m.member_id.as_str(), "a");
    assert_eq!(m.instance_id.as_deref(), Some("i"));
    assert_eq!(m.rack_id.as_deref(), Some("r1"));
    assert_eq!(m.client_id.as_str(), "cid");
    assert_eq!(m.client_host.as_str(), "/10.0.0.1");
    assert_eq!(m.member_epoch, 1);
    assert_eq!(m.subscribed_topic_names[0].as_str(), "t");
    assert_eq!(m.assignment.topic_partitions[0].topic_name.as_str(), "t");
    assert_eq!(m.assignment.topic_partitions[0].partitions, vec![0, 1]);
    assert_eq!(m.target_assignment, m.assignment);
    assert_eq!(m.member_type, 1);
}

#[test]
fn offset_request_validation() {
    let topics = Topics::new(&[("t", 2)]);
    let mut g = group();
    assert!(g.validate_offset_commit("", -1).is_ok()); // admin commit on an empty group
    assert!(g.validate_offset_fetch("", -1).is_ok());
    hb(&mut g, &join("a", &["t"]), &topics);
    assert!(g.validate_offset_commit("a", 1).is_ok());
    assert!(g.validate_offset_fetch("a", 1).is_ok());
    assert_eq!(
        g.validate_offset_commit("a", 0).unwrap_err().code().code(),
        113
    );
    assert_eq!(
        g.validate_offset_fetch("a", 2).unwrap_err().code().code(),
        113
    );
    assert_eq!(
        g.validate_offset_commit("x", 1).unwrap_err().code().code(),
        25
    );
    assert_eq!(
        g.validate_offset_commit("", -1).unwrap_err().code().code(),
        25
    );
    assert!(g.validate_offset_fetch("", -1).is_ok());
}

#[test]
fn v0_join_without_member_id_gets_one() {
    let topics = Topics::new(&[("t", 1)]);
    let mut g = group();
    let r = hb(&mut g, &join("", &["t"]), &topics);
    let id = r.member_id.unwrap();
    assert!(!id.is_empty());
    assert!(g.member(&id).is_some());
}
