//! `kavka reassign-partitions`: Kafka's kafka-reassign-partitions.sh (--execute, --verify,
//! --cancel with a reassignment JSON file, and --list), over AlterPartitionReassignments and
//! ListPartitionReassignments (KIP-455).
//!
//! The JSON file is Kafka's: `{"version":1,"partitions":[{"topic":"t","partition":0,
//! "replicas":[1,2,3]}]}` (`log_dirs`, if present, must be "any" for every replica: kavka
//! does not move replicas between a broker's log dirs). --generate is not implemented.
//!
//! `--throttle <bytes/s>` with --execute sets the replication throttle (KIP-73) as Kafka's
//! tool does: both rates on every broker of a moving partition, and on each topic the
//! throttled replicas (leader side: the partition's current replicas; follower side: the
//! replicas being added). --verify removes them (unless --preserve-throttles): the topic
//! configs once no reassignment of the topic is pending, the broker rates once none at all is.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args};
use kavka_client::alter_configs::{incremental_alter_configs, ConfigTarget};
use kavka_client::reassignment::{
    alter_partition_reassignments, list_partition_reassignments, OngoingReassignment,
    ReassignmentTarget,
};
use kavka_client::{AlterConfigOp, ClientConfig, Cluster};
use serde_json::{json, Value};

/// Partitions one reassignment file may name: far more than any cluster has, small enough
/// to keep one request sane.
const MAX_PARTITIONS: usize = 100_000;

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("action").required(true).args(["execute", "verify", "cancel", "list"])
))]
pub struct ReassignPartitionsArgs {
    /// The broker(s) to connect to: host:port[,host:port...].
    #[arg(long, required = true)]
    pub bootstrap_server: String,
    /// The partitions and their new replicas, in Kafka's reassignment JSON format.
    #[arg(long, value_name = "FILE")]
    pub reassignment_json_file: Option<std::path::PathBuf>,
    /// Start the reassignment of every partition of the file.
    #[arg(long)]
    pub execute: bool,
    /// Report whether each reassignment of the file is complete.
    #[arg(long)]
    pub verify: bool,
    /// Cancel the reassignments of the file's partitions (they return to their replicas).
    #[arg(long)]
    pub cancel: bool,
    /// List every reassignment in progress.
    #[arg(long)]
    pub list: bool,
    /// With --execute: start even though other reassignments are in progress.
    #[arg(long)]
    pub additional: bool,
    /// With --execute: throttle the replication of the moving partitions to this many
    /// bytes/s (run --verify until the reassignment completes to remove the throttle).
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = clap::value_parser!(i64).range(0..))]
    pub throttle: Option<i64>,
    /// With --verify: keep the replication throttle in place.
    #[arg(long)]
    pub preserve_throttles: bool,
}

const LEADER_RATE: &str = "leader.replication.throttled.rate";
const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

pub async fn run(args: ReassignPartitionsArgs) -> Result<()> {
    let mut cluster = Cluster::connect(ClientConfig::new(&args.bootstrap_server)?).await?;
    let mut out = String::new();
    let result = if args.list {
        let ongoing = list_partition_reassignments(&mut cluster, None).await?;
        format_list(&ongoing, &mut out);
        Ok(())
    } else {
        let path = args
            .reassignment_json_file
            .as_ref()
            .ok_or_else(|| anyhow!("--reassignment-json-file is required with this action"))?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let plan = parse_reassignment_json(&text)?;
        if args.execute {
            execute(
                &mut cluster,
                &plan,
                args.additional,
                args.throttle,
                &mut out,
            )
            .await
        } else if args.verify {
            verify(&mut cluster, &plan, args.preserve_throttles, &mut out).await
        } else {
            cancel(&mut cluster, &plan, &mut out).await
        }
    };
    print!("{out}");
    result
}

/// One partition of a reassignment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// Parses and checks Kafka's reassignment JSON: version 1, each partition once, each with a
/// non-empty list of distinct broker ids.
pub fn parse_reassignment_json(text: &str) -> Result<Vec<PlannedReassignment>> {
    let doc: Value = serde_json::from_str(text).context("the reassignment file is not JSON")?;
    match doc.get("version").and_then(Value::as_i64) {
        Some(1) => {}
        Some(v) => bail!("Not supported version field value {v}"),
        None => bail!("The reassignment file has no \"version\" field"),
    }
    let parts = doc
        .get("partitions")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("The reassignment file has no \"partitions\" list"))?;
    if parts.is_empty() {
        bail!("Partition reassignment list cannot be empty");
    }
    if parts.len() > MAX_PARTITIONS {
        bail!("The reassignment file names more than {MAX_PARTITIONS} partitions");
    }
    let mut seen = HashSet::new();
    let mut plan = Vec::with_capacity(parts.len());
    for p in parts {
        let topic = p
            .get("topic")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("A partition entry has no \"topic\": {p}"))?;
        let partition = p
            .get("partition")
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| anyhow!("A partition entry has no valid \"partition\": {p}"))?;
        let replicas = p
            .get("replicas")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("Partition {topic}-{partition} has no \"replicas\" list"))?
            .iter()
            .map(|r| {
                r.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| anyhow!("Partition {topic}-{partition}: invalid broker id {r}"))
            })
            .collect::<Result<Vec<i32>>>()?;
        if replicas.is_empty() {
            bail!("Partition replica list cannot be empty ({topic}-{partition})");
        }
        let distinct: HashSet<i32> = replicas.iter().copied().collect();
        if distinct.len() != replicas.len() {
            bail!("Duplicate replica assignment found: {topic}-{partition} {replicas:?}");
        }
        if let Some(dirs) = p.get("log_dirs") {
            let dirs = dirs.as_array().ok_or_else(|| {
                anyhow!("Partition {topic}-{partition}: \"log_dirs\" is not a list")
            })?;
            if dirs.len() != replicas.len() {
                bail!("Size of replicas list {replicas:?} is different from size of log dirs list {dirs:?} for partition {topic}-{partition}");
            }
            if dirs.iter().any(|d| d.as_str() != Some("any")) {
                bail!("Partition {topic}-{partition}: moving replicas between log dirs is not supported (log_dirs must be \"any\")");
            }
        }
        if !seen.insert((topic.to_string(), partition)) {
            bail!("Duplicate reassignment of partition {topic}-{partition}");
        }
        plan.push(PlannedReassignment {
            topic: topic.to_string(),
            partition,
            replicas,
        });
    }
    Ok(plan)
}

/// Kafka's JSON for the given assignments (what --execute prints for a rollback).
pub fn reassignment_json(assignments: &[(String, i32, Vec<i32>)]) -> String {
    let partitions: Vec<Value> = assignments
        .iter()
        .map(|(topic, partition, replicas)| {
            json!({
                "topic": topic,
                "partition": partition,
                "replicas": replicas,
                "log_dirs": replicas.iter().map(|_| "any").collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"version": 1, "partitions": partitions}).to_string()
}

/// The current replicas of the plan's partitions; an unknown topic or partition is an error.
async fn current_replicas(
    cluster: &mut Cluster,
    plan: &[PlannedReassignment],
) -> Result<BTreeMap<(String, i32), Vec<i32>>> {
    let mut current = BTreeMap::new();
    let topics: Vec<&str> = plan
        .iter()
        .map(|p| p.topic.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for topic in topics {
        let md = cluster
            .topic(topic)
            .await
            .with_context(|| format!("Topic {topic} not found"))?;
        for p in &md.partitions {
            current.insert((topic.to_string(), p.partition), p.replicas.clone());
        }
    }
    for p in plan {
        if !current.contains_key(&(p.topic.clone(), p.partition)) {
            bail!("Unable to find partition: {}-{}", p.topic, p.partition);
        }
    }
    Ok(current)
}

/// The throttle of a plan, as Kafka's tool computes it: for each topic with a moving
/// partition (new replicas differ from the current), the leader-side throttled replicas (every
/// current replica of a moving partition) and the follower-side ones (the replicas being
/// added), as `partition:broker` lists; and the brokers whose rates are set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanThrottle {
    /// topic -> (leader.replication.throttled.replicas, follower.replication.throttled.replicas)
    pub topics: BTreeMap<String, (String, String)>,
    pub brokers: BTreeSet<i32>,
}

pub fn plan_throttle(
    plan: &[PlannedReassignment],
    current: &BTreeMap<(String, i32), Vec<i32>>,
) -> PlanThrottle {
    let mut leader: BTreeMap<String, BTreeSet<(i32, i32)>> = BTreeMap::new();
    let mut follower: BTreeMap<String, BTreeSet<(i32, i32)>> = BTreeMap::new();
    let mut brokers = BTreeSet::new();
    for p in plan {
        let Some(cur) = current.get(&(p.topic.clone(), p.partition)) else {
            continue;
        };
        if *cur == p.replicas {
            continue;
        }
        let l = leader.entry(p.topic.clone()).or_default();
        l.extend(cur.iter().map(|b| (p.partition, *b)));
        let f = follower.entry(p.topic.clone()).or_default();
        f.extend(
            p.replicas
                .iter()
                .filter(|b| !cur.contains(b))
                .map(|b| (p.partition, *b)),
        );
        brokers.extend(cur.iter().chain(&p.replicas).copied());
    }
    let list = |set: Option<&BTreeSet<(i32, i32)>>| {
        set.into_iter()
            .flatten()
            .map(|(p, b)| format!("{p}:{b}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let topics = leader
        .keys()
        .map(|t| (t.clone(), (list(leader.get(t)), list(follower.get(t)))))
        .collect();
    PlanThrottle { topics, brokers }
}

/// Sets the plan's throttle: the rates on its brokers, the throttled replicas on its topics.
async fn set_throttle(
    cluster: &mut Cluster,
    throttle: &PlanThrottle,
    rate: i64,
    out: &mut String,
) -> Result<()> {
    let rates = [
        AlterConfigOp::Set(LEADER_RATE.into(), rate.to_string()),
        AlterConfigOp::Set(FOLLOWER_RATE.into(), rate.to_string()),
    ];
    for id in &throttle.brokers {
        incremental_alter_configs(cluster, &ConfigTarget::Broker(*id), &rates)
            .await
            .with_context(|| format!("cannot set the replication throttle on broker {id}"))?;
    }
    for (topic, (leader, follower)) in &throttle.topics {
        let mut ops = vec![AlterConfigOp::Set(LEADER_REPLICAS.into(), leader.clone())];
        // An empty list would be refused; a move that only drops replicas adds none.
        if follower.is_empty() {
            ops.push(AlterConfigOp::Delete(FOLLOWER_REPLICAS.into()));
        } else {
            ops.push(AlterConfigOp::Set(
                FOLLOWER_REPLICAS.into(),
                follower.clone(),
            ));
        }
        incremental_alter_configs(cluster, &ConfigTarget::Topic(topic.clone()), &ops)
            .await
            .with_context(|| format!("cannot set the throttled replicas of topic {topic}"))?;
    }
    let _ = writeln!(
        out,
        "Warning: You must run --verify periodically, until the reassignment completes, to ensure the throttle is removed."
    );
    let _ = writeln!(out, "The inter-broker throttle limit was set to {rate} B/s");
    Ok(())
}

/// Removes the throttle of the plan's topics with no reassignment pending, and the brokers'
/// rates when no reassignment at all is pending (Kafka's `clearAllThrottles`).
async fn clear_throttles(
    cluster: &mut Cluster,
    plan: &[PlannedReassignment],
    out: &mut String,
) -> Result<()> {
    let ongoing = list_partition_reassignments(cluster, None).await?;
    let pending: BTreeSet<&str> = ongoing.iter().map(|o| o.topic.as_str()).collect();
    let topics: BTreeSet<&str> = plan.iter().map(|p| p.topic.as_str()).collect();
    let done: Vec<&str> = topics.difference(&pending).copied().collect();
    if pending.is_empty() {
        let brokers: Vec<i32> = cluster.brokers().map(|b| b.node_id).collect();
        let ops = [
            AlterConfigOp::Delete(LEADER_RATE.into()),
            AlterConfigOp::Delete(FOLLOWER_RATE.into()),
        ];
        for id in &brokers {
            incremental_alter_configs(cluster, &ConfigTarget::Broker(*id), &ops)
                .await
                .with_context(|| format!("cannot clear the replication throttle of broker {id}"))?;
        }
        let _ = writeln!(
            out,
            "Clearing broker-level throttles on brokers {}",
            join(&brokers)
        );
    }
    let ops = [
        AlterConfigOp::Delete(LEADER_REPLICAS.into()),
        AlterConfigOp::Delete(FOLLOWER_REPLICAS.into()),
    ];
    for topic in &done {
        incremental_alter_configs(cluster, &ConfigTarget::Topic(topic.to_string()), &ops)
            .await
            .with_context(|| format!("cannot clear the throttled replicas of topic {topic}"))?;
    }
    if !done.is_empty() {
        let _ = writeln!(
            out,
            "Clearing topic-level throttles on topics {}",
            done.join(",")
        );
    }
    Ok(())
}

async fn execute(
    cluster: &mut Cluster,
    plan: &[PlannedReassignment],
    additional: bool,
    throttle: Option<i64>,
    out: &mut String,
) -> Result<()> {
    if !additional
        && !list_partition_reassignments(cluster, None)
            .await?
            .is_empty()
    {
        bail!("Cannot execute because there is an existing partition assignment. Use --additional to override this and create a new partition assignment in addition to the existing one.");
    }
    let current = current_replicas(cluster, plan).await?;
    let rollback: Vec<(String, i32, Vec<i32>)> = plan
        .iter()
        .map(|p| {
            let key = (p.topic.clone(), p.partition);
            (
                p.topic.clone(),
                p.partition,
                current.get(&key).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let _ = writeln!(out, "Current partition replica assignment\n");
    let _ = writeln!(out, "{}\n", reassignment_json(&rollback));
    let _ = writeln!(
        out,
        "Save this to use as the --reassignment-json-file option during rollback"
    );
    if let Some(rate) = throttle {
        set_throttle(cluster, &plan_throttle(plan, &current), rate, out).await?;
    }
    let targets: Vec<ReassignmentTarget> = plan
        .iter()
        .map(|p| ReassignmentTarget {
            topic: p.topic.clone(),
            partition: p.partition,
            replicas: Some(p.replicas.clone()),
        })
        .collect();
    let outcomes = alter_partition_reassignments(cluster, &targets).await?;
    report(outcomes, "started", "reassignment", out)
}

async fn cancel(
    cluster: &mut Cluster,
    plan: &[PlannedReassignment],
    out: &mut String,
) -> Result<()> {
    let targets: Vec<ReassignmentTarget> = plan
        .iter()
        .map(|p| ReassignmentTarget {
            topic: p.topic.clone(),
            partition: p.partition,
            replicas: None,
        })
        .collect();
    let outcomes = alter_partition_reassignments(cluster, &targets).await?;
    report(outcomes, "cancelled", "cancellation", out)
}

/// "Successfully <verb> partition reassignments for: t-0,t-1" plus one line per failure;
/// an error when any failed.
fn report(
    outcomes: Vec<kavka_client::reassignment::PartitionOutcome>,
    verb: &str,
    noun: &str,
    out: &mut String,
) -> Result<()> {
    let mut done = Vec::new();
    let mut failed = 0usize;
    for (topic, partition, result) in outcomes {
        match result {
            Ok(()) => done.push(format!("{topic}-{partition}")),
            Err(e) => {
                failed += 1;
                let _ = writeln!(
                    out,
                    "Error in partition {noun} for {topic}-{partition}: {e}"
                );
            }
        }
    }
    if !done.is_empty() {
        let _ = writeln!(
            out,
            "Successfully {verb} partition reassignments for: {}",
            done.join(",")
        );
    }
    if failed > 0 {
        bail!("{failed} partition {noun}(s) failed");
    }
    Ok(())
}

/// The state of one planned partition, for --verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyState {
    Completed,
    InProgress,
    /// No reassignment, yet the replicas differ from the plan's.
    Differs(Vec<i32>),
}

async fn verify(
    cluster: &mut Cluster,
    plan: &[PlannedReassignment],
    preserve_throttles: bool,
    out: &mut String,
) -> Result<()> {
    let keys: Vec<(String, i32)> = plan
        .iter()
        .map(|p| (p.topic.clone(), p.partition))
        .collect();
    let ongoing = list_partition_reassignments(cluster, Some(&keys)).await?;
    for p in plan {
        cluster.invalidate(&p.topic);
    }
    let current = current_replicas(cluster, plan).await?;
    let moving: HashSet<(String, i32)> = ongoing
        .iter()
        .map(|o| (o.topic.clone(), o.partition))
        .collect();
    let _ = writeln!(out, "Status of partition reassignment:");
    for p in plan {
        let key = (p.topic.clone(), p.partition);
        let state = verify_state(p, moving.contains(&key), current.get(&key));
        format_verify(p, &state, out);
    }
    if !preserve_throttles {
        clear_throttles(cluster, plan, out).await?;
    }
    Ok(())
}

pub fn verify_state(
    p: &PlannedReassignment,
    in_progress: bool,
    current: Option<&Vec<i32>>,
) -> VerifyState {
    if in_progress {
        return VerifyState::InProgress;
    }
    match current {
        Some(r) if *r == p.replicas => VerifyState::Completed,
        Some(r) => VerifyState::Differs(r.clone()),
        None => VerifyState::Differs(Vec::new()),
    }
}

pub fn format_verify(p: &PlannedReassignment, state: &VerifyState, out: &mut String) {
    let name = format!("{}-{}", p.topic, p.partition);
    let _ = match state {
        VerifyState::Completed => writeln!(out, "Reassignment of partition {name} is completed."),
        VerifyState::InProgress => {
            writeln!(out, "Reassignment of partition {name} is still in progress.")
        }
        VerifyState::Differs(current) => writeln!(
            out,
            "There is no active reassignment of partition {name}, but replica set is {} rather than {}.",
            join(current),
            join(&p.replicas)
        ),
    };
}

/// Kafka's --list output.
pub fn format_list(ongoing: &[OngoingReassignment], out: &mut String) {
    if ongoing.is_empty() {
        let _ = writeln!(out, "No partition reassignments found.");
        return;
    }
    let _ = writeln!(out, "Current partition reassignments:");
    for o in ongoing {
        let _ = writeln!(
            out,
            "{}-{}: replicas: {}. adding: {}. removing: {}.",
            o.topic,
            o.partition,
            join(&o.replicas),
            join(&o.adding),
            join(&o.removing)
        );
    }
}

fn join(ids: &[i32]) -> String {
    super::join_ids(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_json() {
        let plan = parse_reassignment_json(
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[3,1],"log_dirs":["any","any"]},{"topic":"u","partition":2,"replicas":[2]}]}"#,
        )
        .unwrap();
        assert_eq!(
            plan,
            vec![
                PlannedReassignment {
                    topic: "t".into(),
                    partition: 0,
                    replicas: vec![3, 1]
                },
                PlannedReassignment {
                    topic: "u".into(),
                    partition: 2,
                    replicas: vec![2]
                },
            ]
        );
    }

    #[test]
    fn refuses_bad_files() {
        for bad in [
            "nope",
            r#"{"partitions":[]}"#,
            r#"{"version":2,"partitions":[{"topic":"t","partition":0,"replicas":[1]}]}"#,
            r#"{"version":1,"partitions":[]}"#,
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,1]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"t","partition":-1,"replicas":[1]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":["a"]}]}"#,
            r#"{"version":1,"partitions":[{"partition":0,"replicas":[1]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1]},{"topic":"t","partition":0,"replicas":[2]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1],"log_dirs":["/d"]}]}"#,
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2],"log_dirs":["any"]}]}"#,
        ] {
            assert!(parse_reassignment_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rollback_json_round_trips() {
        let json = reassignment_json(&[("t".into(), 0, vec![1, 2])]);
        assert_eq!(
            json,
            r#"{"partitions":[{"log_dirs":["any","any"],"partition":0,"replicas":[1,2],"topic":"t"}],"version":1}"#
        );
        let plan = parse_reassignment_json(&json).unwrap();
        assert_eq!(plan[0].replicas, vec![1, 2]);
    }

    #[test]
    fn verify_and_list_layout() {
        let p = PlannedReassignment {
            topic: "t".into(),
            partition: 0,
            replicas: vec![2, 3],
        };
        let mut out = String::new();
        for (moving, current) in [(false, vec![2, 3]), (true, vec![2, 3, 1]), (false, vec![1])] {
            format_verify(&p, &verify_state(&p, moving, Some(&current)), &mut out);
        }
        assert_eq!(
            out,
            "Reassignment of partition t-0 is completed.\n\
             Reassignment of partition t-0 is still in progress.\n\
             There is no active reassignment of partition t-0, but replica set is 1 rather than 2,3.\n"
        );
        let mut out = String::new();
        format_list(&[], &mut out);
        assert_eq!(out, "No partition reassignments found.\n");
        let mut out = String::new();
        format_list(
            &[OngoingReassignment {
                topic: "t".into(),
                partition: 0,
                replicas: vec![2, 3, 1],
                adding: vec![2, 3],
                removing: vec![1],
            }],
            &mut out,
        );
        assert_eq!(
            out,
            "Current partition reassignments:\nt-0: replicas: 2,3,1. adding: 2,3. removing: 1.\n"
        );
    }

    #[test]
    fn throttles_the_current_replicas_as_leaders_and_the_added_ones_as_followers() {
        let plan = parse_reassignment_json(
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[2,3]},{"topic":"t","partition":1,"replicas":[1]},{"topic":"u","partition":0,"replicas":[1,2]}]}"#,
        )
        .unwrap();
        let current = BTreeMap::from([
            (("t".to_string(), 0), vec![1, 2]),
            (("t".to_string(), 1), vec![1, 4]),
            (("u".to_string(), 0), vec![1, 2]),
        ]);
        let t = plan_throttle(&plan, &current);
        assert_eq!(
            t.topics,
            BTreeMap::from([(
                "t".to_string(),
                ("0:1,0:2,1:1,1:4".to_string(), "0:3".to_string())
            )]),
            "u does not move"
        );
        assert_eq!(t.brokers, BTreeSet::from([1, 2, 3, 4]));
    }

    #[test]
    fn parses_flags() {
        let a: ReassignPartitionsArgs = crate::cli::parse_args(&[
            "--bootstrap-server",
            "h:1",
            "--reassignment-json-file",
            "f.json",
            "--execute",
        ])
        .unwrap();
        assert!(a.execute && !a.verify);
        assert_eq!(a.throttle, None);
        let throttled = |rate: &str| {
            crate::cli::parse_args::<ReassignPartitionsArgs>(&[
                "--bootstrap-server",
                "h:1",
                "--reassignment-json-file",
                "f.json",
                "--execute",
                "--throttle",
                rate,
            ])
            .map(|a| a.throttle)
        };
        assert_eq!(throttled("1000").ok(), Some(Some(1000)));
        assert!(throttled("-1").is_err());
        let a: ReassignPartitionsArgs =
            crate::cli::parse_args(&["--bootstrap-server", "h:1", "--list"]).unwrap();
        assert!(a.list);
        // One action, exactly.
        assert!(
            crate::cli::parse_args::<ReassignPartitionsArgs>(&["--bootstrap-server", "h:1"])
                .is_err()
        );
        assert!(crate::cli::parse_args::<ReassignPartitionsArgs>(&[
            "--bootstrap-server",
            "h:1",
            "--list",
            "--execute"
        ])
        .is_err());
    }
}
