//! `kavka reassign-partitions`: Kafka's kafka-reassign-partitions.sh (--execute, --verify,
//! --cancel with a reassignment JSON file, and --list), over AlterPartitionReassignments and
//! ListPartitionReassignments (KIP-455).
//!
//! The JSON file is Kafka's: `{"version":1,"partitions":[{"topic":"t","partition":0,
//! "replicas":[1,2,3]}]}` (`log_dirs`, if present, must be "any" for every replica: kavka
//! does not move replicas between a broker's log dirs). The replication throttle
//! (--throttle) and --generate are not implemented.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args};
use kavka_client::reassignment::{
    alter_partition_reassignments, list_partition_reassignments, OngoingReassignment,
    ReassignmentTarget,
};
use kavka_client::{ClientConfig, Cluster};
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
}

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
            execute(&mut cluster, &plan, args.additional, &mut out).await
        } else if args.verify {
            verify(&mut cluster, &plan, &mut out).await
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

async fn execute(
    cluster: &mut Cluster,
    plan: &[PlannedReassignment],
    additional: bool,
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
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
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
