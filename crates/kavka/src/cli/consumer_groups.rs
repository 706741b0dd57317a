//! `kavka consumer-groups`: Kafka's kafka-consumer-groups.sh — list, describe, reset the
//! offsets of, delete, and delete offsets of consumer groups.

mod describe;
mod reset;
mod table;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args};
use kavka_client::coordinator::group_codes::GROUP_ID_NOT_FOUND;
use kavka_client::group_admin::{canonical_state, GROUP_STATES};
use kavka_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, GroupDescription, OffsetAndMetadata, OffsetSpec,
    TopicPartition,
};

use describe::DescribeMode;
use reset::{PartitionOffsets, ResetSpec};

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("action")
        .required(true)
        .args(["list", "describe", "reset_offsets", "delete", "delete_offsets"])
))]
pub struct ConsumerGroupsArgs {
    /// The broker(s) to connect to: host:port[,host:port...].
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// List all consumer groups.
    #[arg(long)]
    pub list: bool,
    /// Describe the group(s): offsets and lag (default), --members or --state.
    #[arg(long)]
    pub describe: bool,
    /// Reset the group's committed offsets (the group must be inactive).
    #[arg(long)]
    pub reset_offsets: bool,
    /// Delete the group(s) and their offsets.
    #[arg(long)]
    pub delete: bool,
    /// Delete the group's offsets of --topic.
    #[arg(long)]
    pub delete_offsets: bool,
    /// The group to act on (repeatable).
    #[arg(long)]
    pub group: Vec<String>,
    /// Act on every group.
    #[arg(long)]
    pub all_groups: bool,
    /// With --describe: the members of the group.
    #[arg(long)]
    pub members: bool,
    /// With --describe: offsets and lag per partition (the default).
    #[arg(long)]
    pub offsets: bool,
    /// With --describe: the group's state. With --list: show states, or only groups in
    /// these comma-separated states.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "STATES")]
    pub state: Option<String>,
    /// With --describe --members: each member's assignment too.
    #[arg(long)]
    pub verbose: bool,
    /// The topic(s) to reset or delete offsets of: TOPIC or TOPIC:0,1,2 (repeatable).
    #[arg(long)]
    pub topic: Vec<String>,
    /// With --reset-offsets: every topic the group has offsets for.
    #[arg(long)]
    pub all_topics: bool,
    /// Reset to the log start.
    #[arg(long)]
    pub to_earliest: bool,
    /// Reset to the log end.
    #[arg(long)]
    pub to_latest: bool,
    /// Reset to this offset.
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    pub to_offset: Option<i64>,
    /// Reset to the first offset at or after YYYY-MM-DDTHH:mm:SS.sss (UTC unless it ends
    /// in Z or an offset such as +01:00).
    #[arg(long, value_name = "DATETIME")]
    pub to_datetime: Option<String>,
    /// Reset to the first offset at or after now minus this ISO-8601 duration
    /// (PnDTnHnMnS, e.g. PT1H).
    #[arg(long, value_name = "DURATION")]
    pub by_duration: Option<String>,
    /// Move the committed offset by N (negative: back).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// Reset to the committed offset (the log end where there is none).
    #[arg(long)]
    pub to_current: bool,
    /// Show the new offsets without committing them.
    #[arg(long)]
    pub dry_run: bool,
    /// Commit the new offsets.
    #[arg(long)]
    pub execute: bool,
}

pub async fn run(args: ConsumerGroupsArgs) -> Result<()> {
    validate(&args)?;
    let config = ClientConfig::new(&args.bootstrap_server)?;
    let mut tool = Tool {
        admin: Admin::connect(config.clone()).await?,
        consumer: None,
        config,
    };
    if args.list {
        tool.list(&args).await
    } else if args.describe {
        tool.describe(&args).await
    } else if args.reset_offsets {
        tool.reset_offsets(&args).await
    } else if args.delete {
        tool.delete(&args).await
    } else {
        tool.delete_offsets(&args).await
    }
}

/// The flag combinations kafka-consumer-groups.sh rejects.
fn validate(args: &ConsumerGroupsArgs) -> Result<()> {
    let selects_groups = !args.group.is_empty() || args.all_groups;
    if !args.group.is_empty() && args.all_groups {
        bail!("--group and --all-groups cannot be used together");
    }
    if (args.describe || args.delete || args.reset_offsets) && !selects_groups {
        bail!("--group or --all-groups is required with --describe, --delete and --reset-offsets");
    }
    if args.delete_offsets {
        if args.group.len() != 1 || args.all_groups {
            bail!("--delete-offsets takes exactly one --group");
        }
        if args.topic.is_empty() {
            bail!("--topic is required with --delete-offsets");
        }
    }
    if args.list && selects_groups {
        bail!("--group and --all-groups cannot be used with --list");
    }
    let views = [
        args.members,
        args.offsets,
        args.state.is_some() && args.describe,
    ];
    if views.iter().filter(|v| **v).count() > 1 {
        bail!("--members, --offsets and --state cannot be used together");
    }
    if (args.members || args.offsets) && !args.describe {
        bail!("--members and --offsets can only be used with --describe");
    }
    if args.state.is_some() && !(args.describe || args.list) {
        bail!("--state can only be used with --describe or --list");
    }
    if args.state.as_deref().is_some_and(|s| !s.is_empty()) && args.describe {
        bail!("--state takes no value with --describe");
    }
    if args.verbose && !(args.describe && args.members) {
        bail!("--verbose can only be used with --describe --members");
    }
    let specs = reset_specs(args)?;
    if args.reset_offsets {
        if specs.len() != 1 {
            bail!("--reset-offsets needs exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime, --by-duration, --shift-by, --to-current");
        }
        if usize::from(!args.topic.is_empty()) + usize::from(args.all_topics) != 1 {
            bail!("--reset-offsets needs one scope: --topic or --all-topics");
        }
        if args.dry_run && args.execute {
            bail!("--dry-run and --execute cannot be used together");
        }
    } else {
        if !specs.is_empty() || args.dry_run || args.execute || args.all_topics {
            bail!("reset options (--to-*, --shift-by, --all-topics, --dry-run, --execute) can only be used with --reset-offsets");
        }
        if !args.topic.is_empty() && !args.delete_offsets {
            bail!("--topic can only be used with --reset-offsets or --delete-offsets");
        }
    }
    for t in &args.topic {
        reset::parse_topic_spec(t)?;
    }
    list_states(args)?;
    Ok(())
}

fn reset_specs(args: &ConsumerGroupsArgs) -> Result<Vec<ResetSpec>> {
    let mut specs = Vec::new();
    if args.to_earliest {
        specs.push(ResetSpec::Earliest);
    }
    if args.to_latest {
        specs.push(ResetSpec::Latest);
    }
    if let Some(n) = args.to_offset {
        specs.push(ResetSpec::Offset(n));
    }
    if let Some(d) = &args.to_datetime {
        specs.push(ResetSpec::Datetime(reset::parse_datetime(d)?));
    }
    if let Some(d) = &args.by_duration {
        let back = reset::parse_duration(d)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        specs.push(ResetSpec::Datetime(now.saturating_sub(back).max(0)));
    }
    if let Some(n) = args.shift_by {
        specs.push(ResetSpec::ShiftBy(n));
    }
    if args.to_current {
        specs.push(ResetSpec::Current);
    }
    Ok(specs)
}

/// The states of `--list --state A,B`, in Kafka's spelling.
fn list_states(args: &ConsumerGroupsArgs) -> Result<Vec<String>> {
    let Some(states) = args.state.as_deref().filter(|_| args.list) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for s in states.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let canonical = canonical_state(s);
        if !GROUP_STATES.contains(&canonical.as_str()) {
            bail!(
                "invalid state '{s}'; valid states are: {}",
                GROUP_STATES.join(", ")
            );
        }
        out.push(canonical);
    }
    Ok(out)
}

fn is_group_not_found(e: &kavka_client::ClientError) -> bool {
    e.code() == Some(GROUP_ID_NOT_FOUND)
}

struct Tool {
    admin: Admin,
    /// For ListOffsets; connected on first use.
    consumer: Option<Consumer>,
    config: ClientConfig,
}

impl Tool {
    async fn consumer(&mut self) -> Result<&mut Consumer> {
        let consumer = match self.consumer.take() {
            Some(c) => c,
            None => Consumer::connect(self.config.clone(), ConsumerConfig::default()).await?,
        };
        Ok(self.consumer.insert(consumer))
    }

    /// The log end offset of every partition `group`'s offsets table shows; a deleted
    /// topic's partitions have none (their committed offsets stay listed).
    async fn log_end_offsets(
        &mut self,
        group: &GroupDescription,
        committed: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> BTreeMap<TopicPartition, i64> {
        let mut log_end = BTreeMap::new();
        for (topic, parts) in describe::partitions_needing_log_end(group, committed) {
            match self.offsets(&topic, &parts, OffsetSpec::Latest).await {
                Ok(ends) => log_end.extend(ends.into_iter().map(|(p, o)| ((topic.clone(), p), o))),
                Err(e) => tracing::debug!("log end offsets of '{topic}': {e}"),
            }
        }
        log_end
    }

    /// `topic` partitions resolved to offsets by `spec`; a topic that cannot be read
    /// (deleted since) has none.
    async fn offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<i32, i64>> {
        let consumer = self.consumer().await?;
        Ok(consumer
            .list_offsets(topic, partitions, spec)
            .await?
            .into_iter()
            .collect())
    }

    async fn group_ids(&mut self, args: &ConsumerGroupsArgs) -> Result<Vec<String>> {
        if args.all_groups {
            Ok(self
                .admin
                .list_groups(&[], &[])
                .await?
                .into_iter()
                .map(|g| g.group_id)
                .collect())
        } else {
            Ok(args.group.clone())
        }
    }

    /// The group, or `None` when it does not exist (state Dead or GROUP_ID_NOT_FOUND).
    async fn describe_group(&mut self, group: &str) -> Result<Option<GroupDescription>> {
        match self.admin.describe_group(group).await {
            Ok(d) if d.state == "Dead" => Ok(None),
            Ok(d) => Ok(Some(d)),
            Err(e) if is_group_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&mut self, args: &ConsumerGroupsArgs) -> Result<()> {
        let states = list_states(args)?;
        let state_refs: Vec<&str> = states.iter().map(String::as_str).collect();
        let groups = self.admin.list_groups(&state_refs, &[]).await?;
        let mut out = String::new();
        if args.state.is_some() {
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| vec![g.group_id.clone(), table::or_dash(g.state.clone())])
                .collect();
            out = table::render(&["GROUP", "STATE"], &rows, &[15, 0]);
        } else {
            for g in groups {
                let _ = writeln!(out, "{}", g.group_id);
            }
        }
        print!("{out}");
        Ok(())
    }

    async fn describe(&mut self, args: &ConsumerGroupsArgs) -> Result<()> {
        let mode = if args.members {
            DescribeMode::Members {
                verbose: args.verbose,
            }
        } else if args.state.is_some() {
            DescribeMode::State
        } else {
            DescribeMode::Offsets
        };
        let mut missing = Vec::new();
        for group in self.group_ids(args).await? {
            let Some(d) = self.describe_group(&group).await? else {
                missing.push(group);
                continue;
            };
            let out = match mode {
                DescribeMode::State => describe::format_state(&d),
                DescribeMode::Members { verbose } => {
                    if let Some(notice) = describe::state_notice(&group, &d.state) {
                        eprintln!("{notice}");
                    }
                    if d.members.is_empty() {
                        continue;
                    }
                    describe::format_members(&d, verbose)
                }
                DescribeMode::Offsets => {
                    if let Some(notice) = describe::state_notice(&group, &d.state) {
                        eprintln!("{notice}");
                    }
                    let committed = self.admin.list_group_offsets(&group).await?;
                    let log_end = self.log_end_offsets(&d, &committed).await;
                    let rows = describe::offset_rows(&d, &committed, &log_end);
                    if rows.is_empty() {
                        continue;
                    }
                    describe::format_offsets(&group, &rows)
                }
            };
            print!("{out}");
        }
        match missing.as_slice() {
            [] => Ok(()),
            [one] => bail!("Consumer group '{one}' does not exist."),
            many => bail!("Consumer groups {} do not exist.", quoted(many)),
        }
    }

    /// The partitions `--topic` / `--all-topics` select for `group`.
    async fn reset_scope(
        &mut self,
        args: &ConsumerGroupsArgs,
        committed: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<BTreeMap<String, Vec<i32>>> {
        let mut scope: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        if args.all_topics {
            for (t, p) in committed.keys() {
                scope.entry(t.clone()).or_default().push(*p);
            }
            return Ok(scope);
        }
        for spec in &args.topic {
            let (topic, partitions) = reset::parse_topic_spec(spec)?;
            let known = self.consumer().await?.partitions_for(&topic).await?;
            let partitions = match partitions {
                Some(ps) => {
                    if let Some(p) = ps.iter().find(|p| !known.contains(p)) {
                        bail!("partition {topic}-{p} does not exist");
                    }
                    ps
                }
                None => known,
            };
            let entry = scope.entry(topic).or_default();
            entry.extend(partitions);
            entry.sort_unstable();
            entry.dedup();
        }
        Ok(scope)
    }

    /// The offsets `spec` resets `topic`'s `parts` to, warning on stderr where Kafka does.
    async fn reset_topic(
        &mut self,
        spec: ResetSpec,
        topic: &str,
        parts: &[i32],
        committed: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<Vec<(i32, i64)>> {
        let starts = self.offsets(topic, parts, OffsetSpec::Earliest).await?;
        let ends = self.offsets(topic, parts, OffsetSpec::Latest).await?;
        let by_time = match spec {
            ResetSpec::Datetime(ts) => {
                self.offsets(topic, parts, OffsetSpec::Timestamp(ts))
                    .await?
            }
            _ => BTreeMap::new(),
        };
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            let known = PartitionOffsets {
                committed: committed.get(&(topic.to_string(), *p)).map(|o| o.offset),
                log_start: *starts
                    .get(p)
                    .with_context(|| format!("no log start offset for {topic}-{p}"))?,
                log_end: *ends
                    .get(p)
                    .with_context(|| format!("no log end offset for {topic}-{p}"))?,
                by_time: by_time.get(p).copied(),
            };
            let (offset, warning) = reset::new_offset(spec, topic, *p, &known)?;
            if let Some(w) = warning {
                eprintln!("WARN: {w}");
            }
            out.push((*p, offset));
        }
        Ok(out)
    }

    async fn reset_offsets(&mut self, args: &ConsumerGroupsArgs) -> Result<()> {
        let spec = *reset_specs(args)?
            .first()
            .ok_or_else(|| anyhow!("no reset option given"))?;
        if !args.dry_run && !args.execute {
            eprintln!("WARN: No action will be performed as the --execute option is missing. Add --dry-run to keep this behaviour without the warning.");
        }
        let mut out = String::new();
        for group in self.group_ids(args).await? {
            if let Some(d) = self.describe_group(&group).await? {
                if d.state != "Empty" {
                    bail!(
                        "Assignments can only be reset if the group '{group}' is inactive, but the current state is {}.",
                        d.state
                    );
                }
            }
            let committed = match self.admin.list_group_offsets(&group).await {
                Ok(c) => c,
                Err(e) if is_group_not_found(&e) => BTreeMap::new(),
                Err(e) => return Err(e.into()),
            };
            let scope = self.reset_scope(args, &committed).await?;
            let mut new_offsets: BTreeMap<TopicPartition, OffsetAndMetadata> = BTreeMap::new();
            for (topic, parts) in &scope {
                for (p, offset) in self.reset_topic(spec, topic, parts, &committed).await? {
                    new_offsets.insert((topic.clone(), p), OffsetAndMetadata::new(offset));
                }
            }
            if args.execute && !new_offsets.is_empty() {
                let results = self.admin.alter_group_offsets(&group, &new_offsets).await?;
                if let Some(((t, p), Err(e))) = results.into_iter().find(|(_, r)| r.is_err()) {
                    bail!("could not reset the offset of {t}-{p} for group '{group}': {e}");
                }
            }
            let rows: Vec<Vec<String>> = new_offsets
                .iter()
                .map(|((t, p), o)| {
                    vec![
                        group.clone(),
                        t.clone(),
                        p.to_string(),
                        o.offset.to_string(),
                    ]
                })
                .collect();
            let _ = write!(
                out,
                "\n{}",
                table::render(
                    &["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"],
                    &rows,
                    &[30, 30, 10, 0]
                )
            );
        }
        print!("{out}");
        Ok(())
    }

    async fn delete(&mut self, args: &ConsumerGroupsArgs) -> Result<()> {
        let groups = self.group_ids(args).await?;
        let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        let results = self.admin.delete_groups(&refs).await?;
        let mut deleted = Vec::new();
        let mut failed = Vec::new();
        for (group, result) in groups.iter().zip(results) {
            match result {
                Ok(()) => deleted.push(group.clone()),
                Err(e) => failed.push((group.clone(), e)),
            }
        }
        if failed.is_empty() {
            println!(
                "Deletion of requested consumer groups ({}) was successful.",
                quoted(&deleted)
            );
            return Ok(());
        }
        for (group, e) in &failed {
            println!("* Group '{group}' could not be deleted due to: {e}");
        }
        if !deleted.is_empty() {
            println!(
                "\nThese consumer groups were deleted successfully: {}",
                quoted(&deleted)
            );
        }
        bail!("Deletion of some consumer groups failed.")
    }

    async fn delete_offsets(&mut self, args: &ConsumerGroupsArgs) -> Result<()> {
        let group = args
            .group
            .first()
            .ok_or_else(|| anyhow!("--group is required"))?
            .clone();
        let mut partitions: Vec<TopicPartition> = Vec::new();
        for spec in &args.topic {
            let (topic, parts) = reset::parse_topic_spec(spec)?;
            let parts = match parts {
                Some(ps) => ps,
                None => self.consumer().await?.partitions_for(&topic).await?,
            };
            partitions.extend(parts.into_iter().map(|p| (topic.clone(), p)));
        }
        let results = self.admin.delete_group_offsets(&group, &partitions).await?;
        let failures = results.iter().filter(|(_, r)| r.is_err()).count();
        let topics: Vec<String> = args
            .topic
            .iter()
            .filter_map(|t| reset::parse_topic_spec(t).ok().map(|(t, _)| t))
            .collect();
        if failures == 0 {
            println!(
                "Request succeed for deleting offsets with topic {} group {group}",
                topics.join(", ")
            );
        }
        let mut sorted = results;
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let rows: Vec<Vec<String>> = sorted
            .iter()
            .map(|((t, p), r)| {
                let status = match r {
                    Ok(()) => "Successful".to_string(),
                    Err(e) => format!("Error: {e}"),
                };
                vec![t.clone(), p.to_string(), status]
            })
            .collect();
        print!(
            "\n{}",
            table::render(&["TOPIC", "PARTITION", "STATUS"], &rows, &[30, 15, 0])
        );
        if failures > 0 {
            bail!("could not delete the offsets of {failures} partition(s) of group '{group}'");
        }
        Ok(())
    }
}

/// `'a', 'b'`.
fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<ConsumerGroupsArgs> {
        let args: ConsumerGroupsArgs = crate::cli::parse_args(argv)?;
        validate(&args)?;
        Ok(args)
    }

    #[test]
    fn parses_kafka_flags() {
        let a = parse(&["--list"]).unwrap();
        assert_eq!(a.bootstrap_server, "localhost:9092");
        assert!(a.state.is_none());
        let a = parse(&["--list", "--state"]).unwrap();
        assert_eq!(a.state.as_deref(), Some(""));
        let a = parse(&["--list", "--state", "stable,EMPTY"]).unwrap();
        assert_eq!(list_states(&a).unwrap(), ["Stable", "Empty"]);
        assert!(parse(&["--list", "--state", "sleepy"]).is_err());

        let a = parse(&["--describe", "--group", "g", "--group", "h"]).unwrap();
        assert_eq!(a.group, ["g", "h"]);
        let a = parse(&["--describe", "--state", "--group", "g"]).unwrap();
        assert_eq!(a.state.as_deref(), Some(""));
        assert!(parse(&["--describe", "--all-groups", "--members", "--verbose"]).is_ok());

        let a = parse(&[
            "--reset-offsets",
            "--group",
            "g",
            "--topic",
            "t:0,1",
            "--shift-by",
            "-5",
            "--execute",
        ])
        .unwrap();
        assert_eq!(reset_specs(&a).unwrap(), [ResetSpec::ShiftBy(-5)]);
        let a = parse(&[
            "--reset-offsets",
            "--group",
            "g",
            "--all-topics",
            "--to-datetime",
            "1970-01-01T00:00:01.000",
            "--dry-run",
        ])
        .unwrap();
        assert_eq!(reset_specs(&a).unwrap(), [ResetSpec::Datetime(1000)]);
        let a = parse(&[
            "--reset-offsets",
            "--group",
            "g",
            "--topic",
            "t",
            "--by-duration",
            "PT1H",
        ])
        .unwrap();
        assert!(
            matches!(reset_specs(&a).unwrap()[..], [ResetSpec::Datetime(ts)] if ts > 1_600_000_000_000)
        );
        assert!(parse(&["--delete", "--group", "a", "--group", "b"]).is_ok());
        assert!(parse(&["--delete-offsets", "--group", "g", "--topic", "t:1"]).is_ok());
    }

    #[test]
    fn rejects_what_kafka_rejects() {
        assert!(parse(&[]).is_err(), "an action is required");
        assert!(parse(&["--list", "--describe"]).is_err(), "one action only");
        assert!(parse(&["--describe"]).is_err(), "--group required");
        assert!(parse(&["--describe", "--group", "g", "--all-groups"]).is_err());
        assert!(parse(&["--describe", "--group", "g", "--members", "--offsets"]).is_err());
        assert!(parse(&["--describe", "--group", "g", "--state", "Stable"]).is_err());
        assert!(parse(&["--list", "--members"]).is_err());
        let reset = ["--reset-offsets", "--group", "g"];
        let with = |extra: &[&str]| {
            let mut v = reset.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        assert!(with(&["--topic", "t"]).is_err(), "no spec");
        assert!(with(&["--to-earliest"]).is_err(), "no scope");
        assert!(with(&["--topic", "t", "--all-topics", "--to-earliest"]).is_err());
        assert!(with(&["--topic", "t", "--to-earliest", "--to-latest"]).is_err());
        assert!(with(&["--topic", "t", "--to-earliest", "--dry-run", "--execute"]).is_err());
        assert!(with(&["--topic", "t", "--to-datetime", "yesterday"]).is_err());
        assert!(with(&["--topic", "t:x", "--to-earliest"]).is_err());
        assert!(with(&["--topic", "t", "--to-earliest"]).is_ok());
        assert!(parse(&["--describe", "--group", "g", "--to-earliest"]).is_err());
        assert!(
            parse(&["--delete-offsets", "--group", "g"]).is_err(),
            "--topic"
        );
        assert!(parse(&["--delete-offsets", "--all-groups", "--topic", "t"]).is_err());
        assert!(parse(&["--delete", "--group", "g", "--topic", "t"]).is_err());
    }

    #[test]
    fn quotes_group_lists() {
        assert_eq!(quoted(&["a".into(), "b".into()]), "'a', 'b'");
    }
}
