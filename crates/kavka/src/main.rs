//! The `kavka` command line: one binary for the broker and its tools.

mod cli;
mod server;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kavka",
    version,
    about = "A Kafka-compatible streaming platform in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a broker (single-node cluster with defaults when no properties file is given).
    Server(server::ServerArgs),
    /// Create, list, describe, alter and delete topics.
    Topics(cli::topics::TopicsArgs),
    /// Read lines from stdin and produce them to a topic.
    ConsoleProducer(cli::console_producer::ConsoleProducerArgs),
    /// Print records of a topic to stdout.
    ConsoleConsumer(cli::console_consumer::ConsoleConsumerArgs),
    /// List, describe, reset the offsets of, and delete consumer groups.
    ConsumerGroups(cli::consumer_groups::ConsumerGroupsArgs),
    /// Describe a cluster: its id, nodes, active controller and unhealthy partitions.
    Cluster(cli::cluster::ClusterArgs),
    /// Move partition replicas between brokers (start, verify, cancel, list reassignments).
    ReassignPartitions(cli::reassign_partitions::ReassignPartitionsArgs),
    /// Elect partition leaders: back to the preferred replica, or unclean for offline ones.
    LeaderElection(cli::leader_election::LeaderElectionArgs),
    /// List and describe transactions (also: list, describe, describe-producers subcommands).
    Transactions(cli::transactions::TransactionsArgs),
    /// Show the active (idempotent and transactional) producers of a partition.
    DescribeProducers(cli::transactions::DescribeProducersCommandArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Topics(args) => cli::run(cli::topics::run(args)),
        Command::ConsoleProducer(args) => cli::run(cli::console_producer::run(args)),
        Command::ConsoleConsumer(args) => cli::run(cli::console_consumer::run(args)),
        Command::ConsumerGroups(args) => cli::run(cli::consumer_groups::run(args)),
        Command::Cluster(args) => cli::run(cli::cluster::run(args)),
        Command::ReassignPartitions(args) => cli::run(cli::reassign_partitions::run(args)),
        Command::LeaderElection(args) => cli::run(cli::leader_election::run(args)),
        Command::Transactions(args) => cli::run(cli::transactions::run(args)),
        Command::DescribeProducers(args) => {
            cli::run(cli::transactions::run_describe_producers(args))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
