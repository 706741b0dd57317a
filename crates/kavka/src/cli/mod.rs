//! Kafka-style command-line tools. Each speaks the Kafka protocol through `kavka-client`,
//! so it works against any Kafka-compatible broker.

pub mod cluster;
pub mod console_consumer;
pub mod console_producer;
pub mod consumer_groups;
pub mod leader_election;
pub mod props;
pub mod reassign_partitions;
pub mod topics;
pub mod transactions;

/// One partition line as `kafka-topics --describe` prints it (also used by `cluster describe`).
pub(crate) struct PartitionLine<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub leader: i32,
    pub replicas: &'a [i32],
    pub isr: &'a [i32],
    pub offline: &'a [i32],
}

pub(crate) fn write_partition_line(out: &mut String, p: &PartitionLine<'_>) {
    use std::fmt::Write as _;
    let leader = if p.leader < 0 {
        "none".to_string()
    } else {
        p.leader.to_string()
    };
    let _ = write!(
        out,
        "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
        p.topic,
        p.partition,
        leader,
        join_ids(p.replicas),
        join_ids(p.isr)
    );
    if !p.offline.is_empty() {
        let _ = write!(out, "\tOffline: {}", join_ids(p.offline));
    }
    out.push('\n');
}

/// Broker ids as a comma-separated list.
pub(crate) fn join_ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Runs a tool's future on a small runtime.
pub fn run<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Parses a tool's flags alone, as `kavka <tool> <argv>` would.
#[cfg(test)]
pub(crate) fn parse_args<A: clap::Args>(argv: &[&str]) -> Result<A, clap::Error> {
    let matches = A::augment_args(clap::Command::new("kavka"))
        .try_get_matches_from(std::iter::once("kavka").chain(argv.iter().copied()))?;
    A::from_arg_matches(&matches)
}
