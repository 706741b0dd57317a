//! `kavka topics`: Kafka's kafka-topics.sh, flag for flag.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use clap::{ArgGroup, Args};
use kavka_client::error::codes;
use kavka_client::{Admin, AlterConfigOp, ClientConfig, NewTopic, TopicDescription};
use kavka_metadata::uuid_to_kafka_string;

use super::props;

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("action").required(true).args(["create", "list", "describe", "delete", "alter"])
))]
pub struct TopicsArgs {
    /// The broker(s) to connect to: host:port[,host:port...].
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// Create a new topic.
    #[arg(long)]
    pub create: bool,
    /// List all topics.
    #[arg(long)]
    pub list: bool,
    /// Describe the topic (every topic when --topic is not given).
    #[arg(long)]
    pub describe: bool,
    /// Delete the topic.
    #[arg(long)]
    pub delete: bool,
    /// Grow the topic's partitions (--partitions) or change its configs (--config).
    #[arg(long)]
    pub alter: bool,
    /// The topic to act on.
    #[arg(long)]
    pub topic: Option<String>,
    /// Number of partitions (create) or the new total (alter).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor for a new topic.
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// A topic config override key=value (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub configs: Vec<String>,
    /// Remove a topic config override (with --alter; repeatable).
    #[arg(long = "delete-config", value_name = "KEY")]
    pub delete_configs: Vec<String>,
    /// With --alter, --delete or --describe: do nothing when the topic does not exist.
    #[arg(long)]
    pub if_exists: bool,
    /// With --create: do nothing when the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
    /// With --list or --describe: leave out internal topics.
    #[arg(long)]
    pub exclude_internal: bool,
}

pub async fn run(args: TopicsArgs) -> Result<()> {
    validate(&args)?;
    let mut admin = Admin::connect(ClientConfig::new(&args.bootstrap_server)?).await?;
    let mut out = String::new();
    if args.create {
        create(&mut admin, &args, &mut out).await?;
    } else if args.list {
        for name in admin.list_topics(!args.exclude_internal).await? {
            let _ = writeln!(out, "{name}");
        }
    } else if args.describe {
        describe(&mut admin, &args, &mut out).await?;
    } else if args.delete {
        let topic = required_topic(&args)?;
        if let Err(e) = admin.delete_topic(topic).await {
            if !(args.if_exists && is_unknown_topic(&e)) {
                return Err(e.into());
            }
        }
    } else if args.alter {
        alter(&mut admin, &args).await?;
    }
    print!("{out}");
    Ok(())
}

/// The flag combinations kafka-topics.sh rejects.
fn validate(args: &TopicsArgs) -> Result<()> {
    if (args.create || args.delete || args.alter) && args.topic.is_none() {
        bail!("--topic is required with --create, --delete and --alter");
    }
    if args.replication_factor.is_some() && !args.create {
        bail!("--replication-factor can only be used with --create");
    }
    if args.partitions.is_some() && !(args.create || args.alter) {
        bail!("--partitions can only be used with --create or --alter");
    }
    let takes_configs = args.create || args.alter;
    if !args.configs.is_empty() && !takes_configs {
        bail!("--config can only be used with --create or --alter");
    }
    if !args.delete_configs.is_empty() && !args.alter {
        bail!("--delete-config can only be used with --alter");
    }
    if args.if_not_exists && !args.create {
        bail!("--if-not-exists can only be used with --create");
    }
    if args.if_exists && !(args.alter || args.delete || args.describe) {
        bail!("--if-exists can only be used with --alter, --delete or --describe");
    }
    if args.alter
        && args.partitions.is_none()
        && args.configs.is_empty()
        && args.delete_configs.is_empty()
    {
        bail!("--alter needs --partitions, --config or --delete-config");
    }
    if let Some(p) = args.partitions {
        if p < 1 {
            bail!("--partitions must be at least 1");
        }
    }
    if let Some(rf) = args.replication_factor {
        if rf < 1 {
            bail!("--replication-factor must be at least 1");
        }
    }
    props::parse_all(&args.configs)?;
    Ok(())
}

fn required_topic(args: &TopicsArgs) -> Result<&str> {
    match args.topic.as_deref() {
        Some(t) if !t.is_empty() => Ok(t),
        _ => bail!("--topic is required"),
    }
}

fn is_unknown_topic(e: &kavka_client::ClientError) -> bool {
    matches!(
        e.code(),
        Some(codes::UNKNOWN_TOPIC_OR_PARTITION) | Some(codes::UNKNOWN_TOPIC_ID)
    )
}

async fn create(admin: &mut Admin, args: &TopicsArgs, out: &mut String) -> Result<()> {
    let topic = required_topic(args)?;
    let new = NewTopic {
        name: topic.to_string(),
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        configs: props::parse_all(&args.configs)?,
    };
    match admin.create_topic(new).await {
        Ok(()) => {
            let _ = writeln!(out, "Created topic {topic}.");
            Ok(())
        }
        Err(e) if args.if_not_exists && e.code() == Some(codes::TOPIC_ALREADY_EXISTS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn describe(admin: &mut Admin, args: &TopicsArgs, out: &mut String) -> Result<()> {
    let names: Vec<String> = match &args.topic {
        Some(t) => vec![t.clone()],
        None => admin.list_topics(!args.exclude_internal).await?,
    };
    for name in &names {
        match admin.describe_topics(&[name.as_str()]).await {
            Ok(descriptions) => {
                for d in descriptions {
                    if args.exclude_internal && d.is_internal {
                        continue;
                    }
                    format_description(&d, out);
                }
            }
            // Listed a moment ago but deleted since: nothing to describe.
            Err(e) if (args.if_exists || args.topic.is_none()) && is_unknown_topic(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn alter(admin: &mut Admin, args: &TopicsArgs) -> Result<()> {
    let topic = required_topic(args)?;
    let result = async {
        if let Some(partitions) = args.partitions {
            admin.create_partitions(topic, partitions).await?;
        }
        let mut ops: Vec<AlterConfigOp> = props::parse_all(&args.configs)?
            .into_iter()
            .map(|(k, v)| AlterConfigOp::Set(k, v))
            .collect();
        ops.extend(
            args.delete_configs
                .iter()
                .map(|k| AlterConfigOp::Delete(k.clone())),
        );
        if !ops.is_empty() {
            admin.incremental_alter_configs(topic, &ops).await?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    match result {
        Err(e)
            if args.if_exists
                && e.downcast_ref::<kavka_client::ClientError>()
                    .is_some_and(is_unknown_topic) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// kafka-topics.sh's --describe layout.
pub fn format_description(d: &TopicDescription, out: &mut String) {
    let replication_factor = d.partitions.first().map_or(0, |p| p.replicas.len());
    let configs: Vec<String> = d
        .configs
        .iter()
        .filter(|c| !c.is_default())
        .map(|c| format!("{}={}", c.name, c.value.as_deref().unwrap_or("null")))
        .collect();
    let _ = writeln!(
        out,
        "Topic: {}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {}\tConfigs: {}",
        d.name,
        uuid_to_kafka_string(d.topic_id),
        d.partitions.len(),
        replication_factor,
        configs.join(",")
    );
    for p in &d.partitions {
        super::write_partition_line(
            out,
            &super::PartitionLine {
                topic: &d.name,
                partition: p.partition,
                leader: p.leader,
                replicas: &p.replicas,
                isr: &p.isr,
                offline: &p.offline_replicas,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kavka_client::{ConfigEntry, PartitionMetadata};

    fn parse(argv: &[&str]) -> Result<TopicsArgs> {
        let args: TopicsArgs = crate::cli::parse_args(argv)?;
        validate(&args)?;
        Ok(args)
    }

    #[test]
    fn parses_kafka_flags() {
        let a = parse(&[
            "--create",
            "--topic",
            "t",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=1000",
            "--config",
            "cleanup.policy=compact",
        ])
        .unwrap();
        assert_eq!(a.bootstrap_server, "localhost:9092");
        assert_eq!(a.partitions, Some(3));
        assert_eq!(a.configs.len(), 2);
        assert!(parse(&["--list", "--bootstrap-server", "h:1"]).is_ok());
        assert!(parse(&["--describe"]).is_ok());
        assert!(parse(&["--alter", "--topic", "t", "--partitions", "4"]).is_ok());
        assert!(parse(&["--delete", "--topic", "t", "--if-exists"]).is_ok());
    }

    #[test]
    fn rejects_what_kafka_rejects() {
        assert!(parse(&[]).is_err(), "an action is required");
        assert!(parse(&["--create", "--list"]).is_err(), "one action only");
        assert!(parse(&["--create"]).is_err(), "--topic required");
        assert!(parse(&["--list", "--partitions", "3"]).is_err());
        assert!(parse(&["--alter", "--topic", "t"]).is_err());
        assert!(parse(&["--alter", "--topic", "t", "--replication-factor", "2"]).is_err());
        assert!(parse(&["--create", "--topic", "t", "--config", "nokey"]).is_err());
        assert!(parse(&["--create", "--topic", "t", "--partitions", "0"]).is_err());
        assert!(parse(&["--list", "--if-not-exists"]).is_err());
    }

    #[test]
    fn describe_layout() {
        let p = |i, leader| PartitionMetadata {
            partition: i,
            error_code: 0,
            leader,
            leader_epoch: 0,
            replicas: vec![1, 2],
            isr: vec![1],
            offline_replicas: vec![],
        };
        let d = TopicDescription {
            name: "x".into(),
            // Kafka: new Uuid(0x0123456789abcdef, 0xfedcba9876543210) is "ASNFZ4mrze_-3LqYdlQyEA".
            topic_id: "01234567-89ab-cdef-fedc-ba9876543210".parse().unwrap(),
            is_internal: false,
            partitions: vec![p(0, 1), p(1, -1)],
            configs: vec![
                ConfigEntry {
                    name: "cleanup.policy".into(),
                    value: Some("compact".into()),
                    source: 1,
                    read_only: false,
                    is_sensitive: false,
                },
                ConfigEntry {
                    name: "retention.ms".into(),
                    value: Some("604800000".into()),
                    source: 5,
                    read_only: false,
                    is_sensitive: false,
                },
            ],
        };
        let mut out = String::new();
        format_description(&d, &mut out);
        assert_eq!(
            out,
            "Topic: x\tTopicId: ASNFZ4mrze_-3LqYdlQyEA\tPartitionCount: 2\tReplicationFactor: 2\tConfigs: cleanup.policy=compact\n\
             \tTopic: x\tPartition: 0\tLeader: 1\tReplicas: 1,2\tIsr: 1\n\
             \tTopic: x\tPartition: 1\tLeader: none\tReplicas: 1,2\tIsr: 1\n"
        );
    }
}
