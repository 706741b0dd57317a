//! `kavka cluster describe`: the cluster id, its nodes, the active controller, and the
//! partitions that are under-replicated (ISR smaller than the replica set) or offline (no
//! leader), in the vocabulary of kafka-cluster.sh, kafka-metadata-quorum.sh and
//! kafka-topics.sh --under-replicated-partitions / --unavailable-partitions.

use std::fmt::Write as _;

use anyhow::Result;
use clap::{Args, Subcommand};
use kavka_client::describe_cluster::{describe_cluster, ClusterDescription, PartitionHealth};
use kavka_client::{ClientConfig, Cluster};

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the cluster id, the nodes, the active controller and unhealthy partitions.
    Describe(DescribeArgs),
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// The broker(s) to connect to: host:port[,host:port...].
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    match args.command {
        ClusterCommand::Describe(a) => {
            let mut cluster = Cluster::connect(ClientConfig::new(&a.bootstrap_server)?).await?;
            let description = describe_cluster(&mut cluster).await?;
            let mut out = String::new();
            format_description(&description, &mut out);
            print!("{out}");
            Ok(())
        }
    }
}

/// The report: a header of key: value lines, then one tab-separated line per node and per
/// unhealthy partition (kafka-topics.sh's partition layout), so scripts can grep it.
pub fn format_description(d: &ClusterDescription, out: &mut String) {
    let _ = writeln!(
        out,
        "Cluster ID: {}",
        d.cluster_id.as_deref().unwrap_or("none")
    );
    let controller = match d.node(d.controller_id) {
        Some(n) => format!("{} ({})", n.node_id, n.addr()),
        None if d.controller_id >= 0 => d.controller_id.to_string(),
        None => "none".to_string(),
    };
    let _ = writeln!(out, "Controller: {controller}");
    let _ = writeln!(out, "Nodes: {}", d.nodes.len());
    for n in &d.nodes {
        let _ = write!(
            out,
            "\tId: {}\tHost: {}\tRack: {}",
            n.node_id,
            n.addr(),
            n.rack.as_deref().unwrap_or("none")
        );
        if n.node_id == d.controller_id {
            out.push_str("\tController");
        }
        if n.fenced {
            out.push_str("\tFenced");
        }
        out.push('\n');
    }
    let under: Vec<&PartitionHealth> = d.under_replicated().collect();
    let offline: Vec<&PartitionHealth> = d.offline().collect();
    let _ = writeln!(
        out,
        "Under-replicated partitions: {} of {}",
        under.len(),
        d.partition_count
    );
    for p in under {
        format_partition(p, out);
    }
    let _ = writeln!(
        out,
        "Offline partitions: {} of {}",
        offline.len(),
        d.partition_count
    );
    for p in offline {
        format_partition(p, out);
    }
}

fn format_partition(p: &PartitionHealth, out: &mut String) {
    super::write_partition_line(
        out,
        &super::PartitionLine {
            topic: &p.topic,
            partition: p.partition,
            leader: p.leader,
            replicas: &p.replicas,
            isr: &p.isr,
            offline: &p.offline_replicas,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use kavka_client::describe_cluster::NodeDescription;

    fn node(id: i32) -> NodeDescription {
        NodeDescription {
            node_id: id,
            host: "127.0.0.1".into(),
            port: id * 10000 + 9092,
            rack: None,
            fenced: false,
        }
    }

    #[test]
    fn parses_describe() {
        let a: ClusterArgs =
            crate::cli::parse_args(&["describe", "--bootstrap-server", "h:1"]).unwrap();
        let ClusterCommand::Describe(d) = a.command;
        assert_eq!(d.bootstrap_server, "h:1");
        assert!(crate::cli::parse_args::<ClusterArgs>(&[]).is_err());
        assert!(crate::cli::parse_args::<ClusterArgs>(&["describe", "--bogus"]).is_err());
    }

    #[test]
    fn describe_layout() {
        let d = ClusterDescription {
            cluster_id: Some("abc".into()),
            controller_id: 2,
            nodes: vec![
                node(1),
                node(2),
                NodeDescription {
                    fenced: true,
                    ..node(3)
                },
            ],
            unhealthy_partitions: vec![
                PartitionHealth {
                    topic: "t".into(),
                    partition: 0,
                    leader: 1,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2],
                    offline_replicas: vec![3],
                },
                PartitionHealth {
                    topic: "u".into(),
                    partition: 4,
                    leader: -1,
                    replicas: vec![3],
                    isr: vec![3],
                    offline_replicas: vec![3],
                },
            ],
            topic_count: 2,
            partition_count: 6,
        };
        let mut out = String::new();
        format_description(&d, &mut out);
        assert_eq!(
            out,
            "Cluster ID: abc\n\
             Controller: 2 (127.0.0.1:29092)\n\
             Nodes: 3\n\
             \tId: 1\tHost: 127.0.0.1:19092\tRack: none\n\
             \tId: 2\tHost: 127.0.0.1:29092\tRack: none\tController\n\
             \tId: 3\tHost: 127.0.0.1:39092\tRack: none\tFenced\n\
             Under-replicated partitions: 1 of 6\n\
             \tTopic: t\tPartition: 0\tLeader: 1\tReplicas: 1,2,3\tIsr: 1,2\tOffline: 3\n\
             Offline partitions: 1 of 6\n\
             \tTopic: u\tPartition: 4\tLeader: none\tReplicas: 3\tIsr: 3\tOffline: 3\n"
        );
    }

    #[test]
    fn unknown_controller_is_said() {
        let d = ClusterDescription {
            cluster_id: None,
            controller_id: -1,
            nodes: vec![node(1)],
            unhealthy_partitions: vec![],
            topic_count: 0,
            partition_count: 0,
        };
        let mut out = String::new();
        format_description(&d, &mut out);
        assert!(out.starts_with("Cluster ID: none\nController: none\nNodes: 1\n"));
        assert!(out.contains("Under-replicated partitions: 0 of 0\n"));
    }
}
