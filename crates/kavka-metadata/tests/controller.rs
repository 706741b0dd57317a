//! Controller behaviour through its public API: validation codes, durability across restart,
//! listeners and snapshots.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kavka_metadata::{
    ConfigChange, ConfigOp, ConfigResource, Controller, ControllerError, ControllerOptions,
    CreateTopicSpec, ImageListener, MetadataImage, TopicDefaults, TopicRef,
};
use uuid::Uuid;

const DEFAULTS: TopicDefaults = TopicDefaults {
    num_partitions: 3,
    replication_factor: 1,
};

fn open(dir: &Path) -> Controller {
    let c = Controller::open(dir, 1, None).expect("open controller");
    c.register_broker(1, "localhost", 9092, None)
        .expect("register broker");
    c
}

fn spec(name: &str, partitions: i32, rf: i16) -> CreateTopicSpec {
    CreateTopicSpec {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: rf,
        ..Default::default()
    }
}

fn create(
    c: &Controller,
    s: CreateTopicSpec,
) -> Result<Arc<kavka_metadata::TopicImage>, ControllerError> {
    c.create_topics(vec![s], false, &DEFAULTS)
        .pop()
        .expect("one result")
}

fn code<T>(r: Result<T, ControllerError>) -> i16 {
    match r {
        Ok(_) => 0,
        Err(e) => e.code(),
    }
}

fn set(resource: ConfigResource, name: &str, value: &str) -> ConfigChange {
    ConfigChange {
        resource,
        name: name.into(),
        op: ConfigOp::Set(value.into()),
    }
}

fn topic(name: &str) -> ConfigResource {
    ConfigResource::Topic(name.into())
}

#[test]
fn cluster_id_is_generated_once_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = open(dir.path()).cluster_id();
    assert_eq!(id.len(), 22);
    assert!(!id.starts_with('-'));
    assert_eq!(open(dir.path()).cluster_id(), id);
    assert_eq!(
        Controller::open(dir.path(), 1, Some(id.clone()))
            .expect("same id")
            .cluster_id(),
        id
    );
    let err = Controller::open(dir.path(), 1, Some("other".into())).expect_err("mismatch");
    assert_eq!(err.code(), 104);

    let fresh = tempfile::tempdir().expect("tempdir");
    let c = Controller::open(fresh.path(), 1, Some("MkU3OEVBNTcwNTJENDM2Qk".into())).expect("open");
    assert_eq!(c.cluster_id(), "MkU3OEVBNTcwNTJENDM2Qk");
}

#[test]
fn create_topic_uses_defaults_and_assigns_leaders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    let mut s = spec("orders", -1, -1);
    s.configs.insert("cleanup.policy".into(), "compact".into());
    let t = create(&c, s).expect("created");
    assert_eq!(t.partitions.len(), 3);
    assert!(!t.topic_id.is_nil());
    for (i, p) in &t.partitions {
        assert_eq!(p.partition, *i);
        assert_eq!(
            (p.replicas.as_slice(), p.isr.as_slice(), p.leader),
            (&[1][..], &[1][..], 1)
        );
    }
    assert_eq!(
        t.configs.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );
    let image = c.image();
    assert!(Arc::ptr_eq(image.topic("orders").expect("in image"), &t));
    assert_eq!(
        image.topic_by_id(&t.topic_id).map(|t| t.name.as_str()),
        Some("orders")
    );
}

#[test]
fn create_topic_validation_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    create(&c, spec("a.b", 1, 1)).expect("created");
    let cases: Vec<(CreateTopicSpec, i16)> = vec![
        (spec("a.b", 1, 1), 36),
        (spec("a_b", 1, 1), 17),
        (spec("", 1, 1), 17),
        (spec("..", 1, 1), 17),
        (spec("bad name", 1, 1), 17),
        (spec(&"x".repeat(250), 1, 1), 17),
        (spec("p0", 0, 1), 37),
        (spec("pneg", -5, 1), 37),
        (spec("rf0", 1, 0), 38),
        (spec("rf2", 1, 2), 38),
        (spec("huge", 20_000, 1), 44),
        (
            CreateTopicSpec {
                configs: BTreeMap::from([("retention.ms".into(), "soon".into())]),
                ..spec("cfg", 1, 1)
            },
            40,
        ),
        (
            CreateTopicSpec {
                configs: BTreeMap::from([("no.such".into(), "1".into())]),
                ..spec("cfg2", 1, 1)
            },
            40,
        ),
        (
            CreateTopicSpec {
                assignments: vec![(0, vec![1])],
                ..spec("manual-with-count", 1, -1)
            },
            42,
        ),
        (
            CreateTopicSpec {
                assignments: vec![(0, vec![7])],
                ..spec("unknown-broker", -1, -1)
            },
            39,
        ),
        (
            CreateTopicSpec {
                assignments: vec![(0, vec![1, 1])],
                ..spec("dup-broker", -1, -1)
            },
            39,
        ),
        (
            CreateTopicSpec {
                assignments: vec![(0, vec![1]), (2, vec![1])],
                ..spec("gap", -1, -1)
            },
            39,
        ),
        (
            CreateTopicSpec {
                assignments: vec![(0, vec![])],
                ..spec("empty", -1, -1)
            },
            39,
        ),
    ];
    for (s, expected) in cases {
        let name = s.name.clone();
        assert_eq!(code(create(&c, s)), expected, "topic {name:?}");
    }
    // Nothing but the first topic was created.
    assert_eq!(c.image().topics.len(), 1);

    let manual = CreateTopicSpec {
        assignments: vec![(1, vec![1]), (0, vec![1])],
        ..spec("manual", -1, -1)
    };
    assert_eq!(create(&c, manual).expect("manual").partitions.len(), 2);

    let dup = c.create_topics(vec![spec("d", 1, 1), spec("d", 1, 1)], false, &DEFAULTS);
    assert_eq!(
        dup.iter().map(|r| code(r.clone())).collect::<Vec<_>>(),
        vec![42, 42]
    );
}

#[test]
fn validate_only_commits_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    let before = c.image();
    let r = c.create_topics(vec![spec("t", 4, 1)], true, &DEFAULTS);
    assert_eq!(
        r.first()
            .and_then(|r| r.as_ref().ok())
            .map(|t| t.partitions.len()),
        Some(4)
    );
    assert_eq!(*c.image(), *before);
    create(&c, spec("t", 1, 1)).expect("created");
    assert_eq!(code(c.create_partitions("t", 3, None, true)), 0);
    c.alter_configs(vec![set(topic("t"), "retention.ms", "5")], true)
        .expect("validate alter");
    let t = c.image().topic("t").cloned().expect("t");
    assert_eq!(t.partitions.len(), 1);
    assert!(t.configs.is_empty());
}

#[test]
fn delete_topics_by_name_and_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    let a = create(&c, spec("a", 1, 1)).expect("a");
    create(&c, spec("b", 1, 1)).expect("b");
    let results = c.delete_topics(vec![
        TopicRef::Name("b".into()),
        TopicRef::Id(a.topic_id),
        TopicRef::Name("missing".into()),
        TopicRef::Id(Uuid::new_v4()),
    ]);
    let codes: Vec<i16> = results.iter().map(|r| code(r.clone())).collect();
    assert_eq!(codes, vec![0, 0, 3, 100]);
    assert_eq!(
        results.first().cloned().map(|r| r.map(|(n, _)| n)),
        Some(Ok("b".to_string()))
    );
    assert!(c.image().topics.is_empty());
    assert!(c.image().topic_ids.is_empty());
    // A new topic with the old name gets a new id.
    let again = create(&c, spec("a", 1, 1)).expect("recreate");
    assert_ne!(again.topic_id, a.topic_id);
}

#[test]
fn create_partitions_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    create(&c, spec("t", 2, 1)).expect("t");
    assert_eq!(code(c.create_partitions("t", 1, None, false)), 37);
    assert_eq!(code(c.create_partitions("t", 2, None, false)), 37);
    assert_eq!(code(c.create_partitions("nope", 5, None, false)), 3);
    assert_eq!(
        code(c.create_partitions("t", 4, Some(vec![vec![1]]), false)),
        39
    );
    assert_eq!(
        code(c.create_partitions("t", 3, Some(vec![vec![9]]), false)),
        39
    );
    assert_eq!(
        code(c.create_partitions("t", 3, Some(vec![vec![1]]), false)),
        0
    );
    assert_eq!(code(c.create_partitions("t", 5, None, false)), 0);
    let t = c.image().topic("t").cloned().expect("t");
    assert_eq!(
        t.partitions.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(t
        .partitions
        .values()
        .all(|p| p.leader == 1 && p.isr == vec![1]));
}

#[test]
fn incremental_and_full_config_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    create(&c, spec("t", 1, 1)).expect("t");
    let configs = |c: &Controller| {
        c.image()
            .topic("t")
            .map(|t| t.configs.clone())
            .unwrap_or_default()
    };

    c.alter_configs(
        vec![
            set(topic("t"), "retention.ms", "1000"),
            ConfigChange {
                resource: topic("t"),
                name: "cleanup.policy".into(),
                op: ConfigOp::Append("compact".into()),
            },
        ],
        false,
    )
    .expect("alter");
    let got = configs(&c);
    assert_eq!(got.get("retention.ms").map(String::as_str), Some("1000"));
    assert_eq!(
        got.get("cleanup.policy").map(String::as_str),
        Some("delete,compact")
    );

    c.alter_configs(
        vec![
            ConfigChange {
                resource: topic("t"),
                name: "cleanup.policy".into(),
                op: ConfigOp::Subtract("delete".into()),
            },
            ConfigChange {
                resource: topic("t"),
                name: "retention.ms".into(),
                op: ConfigOp::Delete,
            },
        ],
        false,
    )
    .expect("alter");
    assert_eq!(
        configs(&c),
        BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())])
    );

    let append_long = ConfigChange {
        resource: topic("t"),
        name: "retention.ms".into(),
        op: ConfigOp::Append("1".into()),
    };
    assert_eq!(code(c.alter_configs(vec![append_long], false)), 40);
    assert_eq!(
        code(c.alter_configs(vec![set(topic("nope"), "retention.ms", "1")], false)),
        3
    );
    assert_eq!(
        code(c.alter_configs(vec![set(topic("t"), "retention.ms", "x")], false)),
        40
    );
    assert_eq!(
        code(c.alter_configs(
            vec![
                set(topic("t"), "retention.ms", "1"),
                set(topic("t"), "retention.ms", "2")
            ],
            false
        )),
        42
    );
    // All or nothing: a bad change leaves the good one uncommitted.
    assert_eq!(
        code(c.alter_configs(
            vec![
                set(topic("t"), "segment.ms", "10"),
                set(topic("t"), "flush.ms", "-5")
            ],
            false
        )),
        40
    );
    assert!(!configs(&c).contains_key("segment.ms"));

    // AlterConfigs replaces the whole set.
    c.replace_configs(
        topic("t"),
        BTreeMap::from([("segment.ms".into(), "60000".into())]),
        false,
    )
    .expect("replace");
    assert_eq!(
        configs(&c),
        BTreeMap::from([("segment.ms".to_string(), "60000".to_string())])
    );
    assert_eq!(
        code(c.replace_configs(topic("missing"), BTreeMap::new(), false)),
        3
    );

    // Dynamic broker configs: the log.* defaults are accepted, others refused.
    c.alter_configs(
        vec![set(ConfigResource::Broker(1), "log.retention.ms", "5000")],
        false,
    )
    .expect("broker config");
    c.alter_configs(
        vec![set(ConfigResource::Broker(-1), "log.retention.hours", "1")],
        false,
    )
    .expect("cluster default");
    assert_eq!(
        code(c.alter_configs(
            vec![set(ConfigResource::Broker(1), "log.dirs", "/x")],
            false
        )),
        42
    );
    assert_eq!(
        code(c.alter_configs(
            vec![set(ConfigResource::Broker(1), "log.retention.ms", "x")],
            false
        )),
        40
    );
    assert_eq!(
        code(c.alter_configs(
            vec![set(ConfigResource::Broker(42), "log.retention.ms", "1")],
            false
        )),
        42
    );
    let image = c.image();
    assert_eq!(
        image
            .broker_configs
            .get(&1)
            .and_then(|m| m.get("log.retention.ms"))
            .map(String::as_str),
        Some("5000")
    );
    assert_eq!(image.broker_configs.len(), 2);
}

fn populate(c: &Controller) {
    for i in 0..6 {
        let mut s = spec(&format!("topic-{i}"), i + 1, 1);
        s.configs
            .insert("retention.ms".into(), format!("{}", 1000 * (i + 1)));
        create(c, s).expect("create");
    }
    c.create_partitions("topic-0", 4, None, false)
        .expect("partitions");
    c.alter_configs(
        vec![set(topic("topic-1"), "cleanup.policy", "compact")],
        false,
    )
    .expect("alter");
    c.alter_configs(
        vec![set(
            ConfigResource::Broker(1),
            "log.segment.bytes",
            "1048576",
        )],
        false,
    )
    .expect("broker alter");
    c.delete_topics(vec![TopicRef::Name("topic-2".into())])
        .pop()
        .expect("one")
        .expect("deleted");
    c.register_broker(1, "127.0.0.1", 19092, Some("rack-a".into()))
        .expect("re-register");
}

#[test]
fn restart_restores_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let c = open(dir.path());
        populate(&c);
        c.image()
    };
    let c = Controller::open(dir.path(), 1, None).expect("reopen");
    assert_eq!(*c.image(), *before);
    assert_eq!(c.image().brokers.get(&1).map(|b| b.port), Some(19092));
    // Re-registering unchanged is a no-op: the log does not grow.
    let offset = c.image().offset;
    c.register_broker(1, "127.0.0.1", 19092, Some("rack-a".into()))
        .expect("register");
    assert_eq!(c.image().offset, offset);
}

#[test]
fn snapshot_then_reopen_equals_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ControllerOptions {
        snapshot_after_records: 5,
    };
    let before = {
        let c = Controller::open_with_options(dir.path(), 1, None, options.clone()).expect("open");
        c.register_broker(1, "localhost", 9092, None)
            .expect("register");
        populate(&c);
        c.image()
    };
    let log_dir = dir.path().join("__cluster_metadata-0");
    let names: Vec<String> = std::fs::read_dir(&log_dir)
        .expect("log dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".checkpoint")),
        "{names:?}"
    );
    assert!(
        !names.contains(&"00000000000000000000.log".to_string()),
        "the first segment was compacted away: {names:?}"
    );
    let c = Controller::open_with_options(dir.path(), 1, None, options).expect("reopen");
    assert_eq!(*c.image(), *before);
}

struct Recorder(Mutex<Vec<(i64, i64, usize, usize)>>);

impl ImageListener for Recorder {
    fn on_image(&self, old: &MetadataImage, new: &MetadataImage) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push((old.offset, new.offset, old.topics.len(), new.topics.len()));
        }
    }
}

#[test]
fn listeners_see_old_and_new_before_the_call_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    c.subscribe(recorder.clone());
    create(&c, spec("t", 1, 1)).expect("create");
    {
        let seen = recorder.0.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        let (old_off, new_off, old_n, new_n) = seen[0];
        assert_eq!((old_n, new_n), (0, 1));
        assert!(new_off > old_off);
        assert_eq!(new_off, c.image().offset);
    }
    c.delete_topics(vec![TopicRef::Name("t".into())]);
    // A rejected change notifies nobody.
    let _ = create(&c, spec("bad name", 1, 1));
    let seen = recorder.0.lock().expect("lock");
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[1].2, seen[1].3), (1, 0));
    assert_eq!(seen[1].0, seen[0].1, "listeners see consecutive images");
}

#[test]
fn concurrent_creates_all_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Arc::new(open(dir.path()));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                for i in 0..5 {
                    create(&c, spec(&format!("t{t}-{i}"), 1, 1)).expect("create");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(c.image().topics.len(), 20);
    drop(c);
    let c = Controller::open(dir.path(), 1, None).expect("reopen");
    assert_eq!(c.image().topics.len(), 20);
}

#[test]
fn no_registered_broker_means_invalid_replication_factor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Controller::open(dir.path(), 1, None).expect("open");
    assert_eq!(code(create(&c, spec("t", 1, 1))), 38);
    assert_eq!(code(c.register_broker(-3, "h", 1, None)), 42);
}

#[test]
fn partitions_over_the_request_cap_fail_the_whole_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    let results = c.create_topics(
        vec![
            spec("small", 1, 1),
            spec("big-1", 6000, 1),
            spec("big-2", 6000, 1),
        ],
        false,
        &DEFAULTS,
    );
    let codes: Vec<i16> = results.into_iter().map(code).collect();
    assert_eq!(codes, vec![44, 44, 44]);
    assert!(c.image().topics.is_empty());
    // Just under the cap is fine and lands in one durable batch.
    let t = create(
        &c,
        spec("wide", kavka_metadata::MAX_PARTITIONS_PER_BATCH as i32, 1),
    )
    .expect("wide");
    assert_eq!(t.partitions.len(), kavka_metadata::MAX_PARTITIONS_PER_BATCH);
    drop(c);
    let c = Controller::open(dir.path(), 1, None).expect("reopen");
    assert_eq!(
        c.image().topic("wide").map(|t| t.partitions.len()),
        Some(10_000)
    );
}

#[test]
fn producer_id_blocks_never_repeat_across_restarts_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ControllerOptions {
        snapshot_after_records: 2,
    };
    let mut seen = Vec::new();
    for _ in 0..3 {
        let c = Controller::open_with_options(dir.path(), 1, None, opts.clone()).unwrap();
        for _ in 0..3 {
            let block = c.allocate_producer_ids(1, 10).unwrap();
            assert_eq!(block.end - block.start, 10);
            seen.push(block);
        }
        assert!(c.allocate_producer_ids(1, 0).is_err());
    }
    for pair in seen.windows(2) {
        assert_eq!(
            pair[0].end, pair[1].start,
            "blocks are consecutive and disjoint"
        );
    }
    assert_eq!(seen[0].start, 0);
}
