//! `kavka leader-election`: Kafka's kafka-leader-election.sh over ElectLeaders (KIP-460):
//! a preferred or unclean election for one partition, the partitions of a JSON file, or
//! every partition.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args, ValueEnum};
use kavka_client::error::ClientError;
use kavka_client::reassignment::{elect_leaders, ElectionType, PartitionOutcome};
use kavka_client::{ClientConfig, Cluster};
use serde_json::Value;

/// Partitions one JSON file may name.
const MAX_PARTITIONS: usize = 100_000;
/// ELECTION_NOT_NEEDED: the right leader already leads.
const ELECTION_NOT_NEEDED: i16 = 84;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum ElectionTypeArg {
    #[value(alias = "preferred")]
    Preferred,
    #[value(alias = "unclean")]
    Unclean,
}

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("scope").required(true).args(["topic", "all_topic_partitions", "path_to_json_file"])
))]
pub struct LeaderElectionArgs {
    /// The broker(s) to connect to: host:port[,host:port...].
    #[arg(long, required = true)]
    pub bootstrap_server: String,
    /// PREFERRED (the first replica leads again) or UNCLEAN (an offline partition gets an
    /// out-of-sync leader: records may be lost).
    #[arg(long, value_enum, ignore_case = true)]
    pub election_type: ElectionTypeArg,
    /// The topic of the partition to elect a leader for (with --partition).
    #[arg(long, requires = "partition")]
    pub topic: Option<String>,
    /// The partition to elect a leader for (with --topic).
    #[arg(long, requires = "topic")]
    pub partition: Option<i32>,
    /// Elect leaders for every partition.
    #[arg(long)]
    pub all_topic_partitions: bool,
    /// A JSON file of partitions: {"partitions":[{"topic":"t","partition":0}]}.
    #[arg(long, value_name = "FILE")]
    pub path_to_json_file: Option<std::path::PathBuf>,
}

pub async fn run(args: LeaderElectionArgs) -> Result<()> {
    let partitions: Option<Vec<(String, i32)>> = if args.all_topic_partitions {
        None
    } else if let Some(path) = &args.path_to_json_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Some(parse_partitions_json(&text)?)
    } else {
        let topic = args
            .topic
            .clone()
            .ok_or_else(|| anyhow!("--topic is required"))?;
        let partition = args
            .partition
            .ok_or_else(|| anyhow!("--partition is required with --topic"))?;
        Some(vec![(topic, partition)])
    };
    let (election, label) = match args.election_type {
        ElectionTypeArg::Preferred => (ElectionType::Preferred, "PREFERRED"),
        ElectionTypeArg::Unclean => (ElectionType::Unclean, "UNCLEAN"),
    };
    let mut cluster = Cluster::connect(ClientConfig::new(&args.bootstrap_server)?).await?;
    let outcomes = elect_leaders(&mut cluster, election, partitions.as_deref()).await?;
    let mut out = String::new();
    let failed = format_outcomes(label, &outcomes, &mut out);
    print!("{out}");
    if failed > 0 {
        bail!("{failed} replica(s) could not be elected");
    }
    Ok(())
}

/// Kafka's report: the partitions elected, those whose leader was already right, and one
/// line per failure. Returns the number of failures.
pub fn format_outcomes(label: &str, outcomes: &[PartitionOutcome], out: &mut String) -> usize {
    let mut elected = Vec::new();
    let mut not_needed = Vec::new();
    let mut failures: Vec<(String, &ClientError)> = Vec::new();
    for (topic, partition, result) in outcomes {
        let name = format!("{topic}-{partition}");
        match result {
            Ok(()) => elected.push(name),
            Err(e) if e.code() == Some(ELECTION_NOT_NEEDED) => not_needed.push(name),
            Err(e) => failures.push((name, e)),
        }
    }
    if !elected.is_empty() {
        let _ = writeln!(
            out,
            "Successfully completed leader election ({label}) for partitions {}",
            elected.join(", ")
        );
    }
    if !not_needed.is_empty() {
        let _ = writeln!(
            out,
            "Valid replica already elected for partitions {}",
            not_needed.join(", ")
        );
    }
    if elected.is_empty() && not_needed.is_empty() && failures.is_empty() {
        let _ = writeln!(out, "No partition needed a leader election ({label})");
    }
    for (name, e) in &failures {
        let _ = writeln!(
            out,
            "Error completing leader election ({label}) for partition: {name}: {e}"
        );
    }
    failures.len()
}

/// Kafka's election JSON: `{"partitions":[{"topic":"t","partition":0}]}`.
pub fn parse_partitions_json(text: &str) -> Result<Vec<(String, i32)>> {
    let doc: Value = serde_json::from_str(text).context("the partitions file is not JSON")?;
    let parts = doc
        .get("partitions")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("The file has no \"partitions\" list"))?;
    if parts.len() > MAX_PARTITIONS {
        bail!("The file names more than {MAX_PARTITIONS} partitions");
    }
    let mut out: Vec<(String, i32)> = Vec::with_capacity(parts.len());
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
        let entry = (topic.to_string(), partition);
        if out.contains(&entry) {
            bail!("Duplicate partition {topic}-{partition} in the file");
        }
        out.push(entry);
    }
    if out.is_empty() {
        bail!("The file names no partition");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let a: LeaderElectionArgs = crate::cli::parse_args(&[
            "--bootstrap-server",
            "h:1",
            "--election-type",
            "preferred",
            "--topic",
            "t",
            "--partition",
            "2",
        ])
        .unwrap();
        assert_eq!(
            (a.election_type, a.topic.as_deref(), a.partition),
            (ElectionTypeArg::Preferred, Some("t"), Some(2))
        );
        let a: LeaderElectionArgs = crate::cli::parse_args(&[
            "--bootstrap-server",
            "h:1",
            "--election-type",
            "UNCLEAN",
            "--all-topic-partitions",
        ])
        .unwrap();
        assert!(a.all_topic_partitions && a.election_type == ElectionTypeArg::Unclean);
        let base = ["--bootstrap-server", "h:1", "--election-type", "PREFERRED"];
        for extra in [
            &[][..],
            &["--topic", "t"][..],
            &["--partition", "0"][..],
            &["--topic", "t", "--partition", "0", "--all-topic-partitions"][..],
        ] {
            let argv: Vec<&str> = base.iter().chain(extra).copied().collect();
            assert!(
                crate::cli::parse_args::<LeaderElectionArgs>(&argv).is_err(),
                "{argv:?}"
            );
        }
        assert!(crate::cli::parse_args::<LeaderElectionArgs>(&[
            "--bootstrap-server",
            "h:1",
            "--election-type",
            "sideways",
            "--all-topic-partitions"
        ])
        .is_err());
    }

    #[test]
    fn report_layout() {
        let outcomes: Vec<PartitionOutcome> = vec![
            ("t".into(), 0, Ok(())),
            ("t".into(), 1, Ok(())),
            (
                "t".into(),
                2,
                Err(ClientError::kafka(84, "partition t-2", None)),
            ),
            (
                "t".into(),
                3,
                Err(ClientError::kafka(
                    80,
                    "partition t-3",
                    Some("not available"),
                )),
            ),
        ];
        let mut out = String::new();
        assert_eq!(format_outcomes("PREFERRED", &outcomes, &mut out), 1);
        assert_eq!(
            out,
            "Successfully completed leader election (PREFERRED) for partitions t-0, t-1\n\
             Valid replica already elected for partitions t-2\n\
             Error completing leader election (PREFERRED) for partition: t-3: partition t-3: not available (PREFERRED_LEADER_NOT_AVAILABLE)\n"
        );
        let mut out = String::new();
        assert_eq!(format_outcomes("UNCLEAN", &[], &mut out), 0);
        assert_eq!(out, "No partition needed a leader election (UNCLEAN)\n");
    }

    #[test]
    fn parses_partitions_json() {
        assert_eq!(
            parse_partitions_json(r#"{"partitions":[{"topic":"t","partition":1}]}"#).unwrap(),
            vec![("t".to_string(), 1)]
        );
        for bad in [
            "x",
            r#"{"partitions":[]}"#,
            r#"{"partitions":[{"topic":"t"}]}"#,
            r#"{"partitions":[{"topic":"t","partition":0},{"topic":"t","partition":0}]}"#,
        ] {
            assert!(parse_partitions_json(bad).is_err(), "{bad}");
        }
    }
}
