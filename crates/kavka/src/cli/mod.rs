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
