//! `kavka transactions` and `kavka describe-producers`: Kafka's kafka-transactions.sh.
//!
//! Both spellings work: the flag form of the issue (`transactions --list`,
//! `transactions --describe --transactional-id ID`, `describe-producers --topic T
//! --partition N`) and kafka-transactions.sh's subcommands (`transactions list`,
//! `transactions describe --transactional-id ID`, `transactions describe-producers ...`).
//! Tables use Kafka's headers and layout (each column as wide as its widest cell, a tab
//! after it), so output from either tool reads the same.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use kavka_client::transactions_admin::{canonical_transaction_state, TRANSACTION_STATES};
use kavka_client::{
    Admin, ClientConfig, ListTransactionsFilter, ProducerStateDescription, TransactionDescription,
    TransactionListing,
};

#[derive(Args, Debug)]
pub struct TransactionsArgs {
    /// The broker(s) to connect to: host:port[,host:port...].
    #[arg(long, default_value = "localhost:9092", global = true)]
    pub bootstrap_server: String,
    /// List the transactions every broker coordinates.
    #[arg(long)]
    pub list: bool,
    /// Describe the transaction of --transactional-id at its coordinator.
    #[arg(long)]
    pub describe: bool,
    #[command(flatten)]
    pub filters: ListFilterArgs,
    #[command(flatten)]
    pub id: TransactionalIdArgs,
    #[command(subcommand)]
    pub command: Option<TransactionsCommand>,
}

/// kafka-transactions.sh's subcommands.
#[derive(Subcommand, Debug)]
pub enum TransactionsCommand {
    /// List the transactions every broker coordinates (same as --list).
    List(ListFilterArgs),
    /// Describe one transaction at its coordinator (same as --describe).
    Describe(TransactionalIdArgs),
    /// Show the active producers of a partition (same as `kavka describe-producers`).
    DescribeProducers(DescribeProducersArgs),
}

#[derive(Args, Debug, Default)]
pub struct ListFilterArgs {
    /// With --list: only transactions in these comma-separated states (Empty, Ongoing,
    /// PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, Dead, PrepareEpochFence).
    #[arg(long, value_name = "STATES")]
    pub state: Option<String>,
    /// With --list: only transactions of this producer id (repeatable).
    #[arg(long, value_name = "PRODUCER_ID", allow_negative_numbers = true)]
    pub producer_id: Vec<i64>,
    /// With --list: only transactions running longer than this many milliseconds.
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub duration_filter: Option<i64>,
    /// With --list: only transactional ids matching this regular expression (brokers
    /// with ListTransactions v2).
    #[arg(long, value_name = "REGEX")]
    pub transactional_id_pattern: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct TransactionalIdArgs {
    /// The transactional id to describe.
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct DescribeProducersArgs {
    /// The topic of the partition.
    #[arg(long)]
    pub topic: String,
    /// The partition.
    #[arg(long, allow_negative_numbers = true)]
    pub partition: i32,
    /// Ask this replica instead of the partition's leader.
    #[arg(long, value_name = "ID")]
    pub broker_id: Option<i32>,
}

/// `kavka describe-producers`: the standalone spelling of `transactions describe-producers`.
#[derive(Args, Debug)]
pub struct DescribeProducersCommandArgs {
    /// The broker(s) to connect to: host:port[,host:port...].
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    #[command(flatten)]
    pub producers: DescribeProducersArgs,
}

/// What one invocation asks for, whichever spelling it used.
#[derive(Debug, PartialEq)]
enum Action {
    List(ListTransactionsFilter),
    Describe(String),
    DescribeProducers {
        topic: String,
        partition: i32,
        broker_id: Option<i32>,
    },
}

pub async fn run(args: TransactionsArgs) -> Result<()> {
    let action = action(&args)?;
    let mut admin = Admin::connect(ClientConfig::new(&args.bootstrap_server)?).await?;
    let out = perform(&mut admin, action).await?;
    print!("{out}");
    Ok(())
}

pub async fn run_describe_producers(args: DescribeProducersCommandArgs) -> Result<()> {
    let action = producers_action(&args.producers)?;
    let mut admin = Admin::connect(ClientConfig::new(&args.bootstrap_server)?).await?;
    let out = perform(&mut admin, action).await?;
    print!("{out}");
    Ok(())
}

async fn perform(admin: &mut Admin, action: Action) -> Result<String> {
    Ok(match action {
        Action::List(filter) => format_list(&admin.list_transactions(&filter).await?),
        Action::Describe(id) => format_describe(&admin.describe_transaction(&id).await?, now_ms()),
        Action::DescribeProducers {
            topic,
            partition,
            broker_id,
        } => format_producers(
            &admin
                .describe_producers(&topic, partition, broker_id)
                .await?,
        ),
    })
}

/// The action of `args`, refusing the combinations that make no sense.
fn action(args: &TransactionsArgs) -> Result<Action> {
    let flags_used = args.list
        || args.describe
        || args.id.transactional_id.is_some()
        || has_filters(&args.filters);
    match &args.command {
        Some(_) if flags_used => {
            bail!("--list, --describe and their options cannot be used with a subcommand")
        }
        Some(TransactionsCommand::List(f)) => Ok(Action::List(list_filter(f)?)),
        Some(TransactionsCommand::Describe(id)) => Ok(Action::Describe(transactional_id(id)?)),
        Some(TransactionsCommand::DescribeProducers(p)) => producers_action(p),
        None => match (args.list, args.describe) {
            (true, true) => bail!("--list and --describe cannot be used together"),
            (false, false) => bail!(
                "one of --list, --describe or a subcommand (list, describe, describe-producers) is required"
            ),
            (true, false) => {
                if args.id.transactional_id.is_some() {
                    bail!("--transactional-id can only be used with --describe");
                }
                Ok(Action::List(list_filter(&args.filters)?))
            }
            (false, true) => {
                if has_filters(&args.filters) {
                    bail!("--state, --producer-id, --duration-filter and --transactional-id-pattern can only be used with --list");
                }
                Ok(Action::Describe(transactional_id(&args.id)?))
            }
        },
    }
}

fn has_filters(f: &ListFilterArgs) -> bool {
    f.state.is_some()
        || !f.producer_id.is_empty()
        || f.duration_filter.is_some()
        || f.transactional_id_pattern.is_some()
}

fn transactional_id(args: &TransactionalIdArgs) -> Result<String> {
    match args.transactional_id.as_deref() {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        Some(_) => bail!("--transactional-id must not be empty"),
        None => bail!("--transactional-id is required with --describe"),
    }
}

/// The filter of `--list`, states in Kafka's spelling.
fn list_filter(f: &ListFilterArgs) -> Result<ListTransactionsFilter> {
    let mut states = Vec::new();
    if let Some(list) = &f.state {
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match canonical_transaction_state(s) {
                Some(c) => states.push(c.to_string()),
                None => bail!(
                    "invalid state '{s}'; valid states are: {}",
                    TRANSACTION_STATES.join(", ")
                ),
            }
        }
        if states.is_empty() {
            bail!("--state needs at least one state");
        }
    }
    if let Some(ms) = f.duration_filter {
        if ms < 0 {
            bail!("--duration-filter must not be negative");
        }
    }
    if f.producer_id.iter().any(|p| *p < 0) {
        bail!("--producer-id must not be negative");
    }
    Ok(ListTransactionsFilter {
        states,
        producer_ids: f.producer_id.clone(),
        min_duration_ms: f.duration_filter,
        transactional_id_pattern: f.transactional_id_pattern.clone(),
    })
}

fn producers_action(p: &DescribeProducersArgs) -> Result<Action> {
    if p.topic.is_empty() {
        bail!("--topic must not be empty");
    }
    if p.partition < 0 {
        bail!("--partition must not be negative");
    }
    Ok(Action::DescribeProducers {
        topic: p.topic.clone(),
        partition: p.partition,
        broker_id: p.broker_id,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Kafka's `ToolsUtils.prettyPrintTable`: every column as wide as its header or widest
/// cell, then a tab; lines carry no trailing blanks.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(c, h)| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        debug_assert_eq!(row.len(), widths.len());
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(cell.chars().count()),
            ));
            line.push('\t');
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `--list`: TransactionalId, Coordinator, ProducerId, TransactionState.
fn format_list(rows: &[TransactionListing]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|t| {
            vec![
                t.transactional_id.clone(),
                t.coordinator_id.to_string(),
                t.producer_id.to_string(),
                t.state.clone(),
            ]
        })
        .collect();
    render(
        &[
            "TransactionalId",
            "Coordinator",
            "ProducerId",
            "TransactionState",
        ],
        &rows,
    )
}

/// `--describe`: one row; start time and duration are `None` outside a transaction, the
/// partitions `topic-partition` joined by commas (as Kafka prints them).
fn format_describe(d: &TransactionDescription, now_ms: i64) -> String {
    let (start, duration) = match d.transaction_start_time_ms {
        Some(start) => (
            start.to_string(),
            now_ms.saturating_sub(start).max(0).to_string(),
        ),
        None => ("None".to_string(), "None".to_string()),
    };
    let partitions: Vec<String> = d
        .topic_partitions
        .iter()
        .map(|(t, p)| format!("{t}-{p}"))
        .collect();
    let row = vec![
        d.coordinator_id.to_string(),
        d.transactional_id.clone(),
        d.producer_id.to_string(),
        d.producer_epoch.to_string(),
        d.state.clone(),
        d.transaction_timeout_ms.to_string(),
        start,
        duration,
        partitions.join(","),
    ];
    render(
        &[
            "CoordinatorId",
            "TransactionalId",
            "ProducerId",
            "ProducerEpoch",
            "TransactionState",
            "TransactionTimeoutMs",
            "CurrentTransactionStartTimeMs",
            "TransactionDurationMs",
            "TopicPartitions",
        ],
        &[row],
    )
}

/// `describe-producers`: Kafka prints -1 for an unknown coordinator epoch and `None` for
/// a producer with no open transaction.
fn format_producers(rows: &[ProducerStateDescription]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|p| {
            vec![
                p.producer_id.to_string(),
                p.producer_epoch.to_string(),
                p.coordinator_epoch.unwrap_or(-1).to_string(),
                p.last_sequence.to_string(),
                p.last_timestamp.to_string(),
                p.current_txn_start_offset
                    .map_or_else(|| "None".to_string(), |o| o.to_string()),
            ]
        })
        .collect();
    render(
        &[
            "ProducerId",
            "ProducerEpoch",
            "LatestCoordinatorEpoch",
            "LastSequence",
            "LastTimestamp",
            "CurrentTransactionStartOffset",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_args;

    fn parse(argv: &[&str]) -> Result<Action> {
        action(&parse_args::<TransactionsArgs>(argv)?)
    }

    #[test]
    fn flag_and_subcommand_spellings_agree() {
        let flags = parse(&[
            "--bootstrap-server",
            "h:1",
            "--list",
            "--state",
            "ongoing,PrepareCommit",
            "--producer-id",
            "7",
        ])
        .unwrap();
        let sub = parse(&[
            "--bootstrap-server",
            "h:1",
            "list",
            "--state",
            "ongoing,PrepareCommit",
            "--producer-id",
            "7",
        ])
        .unwrap();
        let expected = Action::List(ListTransactionsFilter {
            states: vec!["Ongoing".into(), "PrepareCommit".into()],
            producer_ids: vec![7],
            ..Default::default()
        });
        assert_eq!(flags, expected);
        assert_eq!(sub, expected);
        assert_eq!(
            parse(&["--describe", "--transactional-id", "tx"]).unwrap(),
            Action::Describe("tx".into())
        );
        assert_eq!(
            parse(&["describe", "--transactional-id", "tx"]).unwrap(),
            Action::Describe("tx".into())
        );
        let p = parse(&[
            "describe-producers",
            "--topic",
            "t",
            "--partition",
            "2",
            "--bootstrap-server",
            "h:2",
        ])
        .unwrap();
        assert_eq!(
            p,
            Action::DescribeProducers {
                topic: "t".into(),
                partition: 2,
                broker_id: None
            }
        );
        // The global --bootstrap-server after a subcommand reaches the tool.
        let a: TransactionsArgs = parse_args(&[
            "describe",
            "--transactional-id",
            "x",
            "--bootstrap-server",
            "h:9",
        ])
        .unwrap();
        assert_eq!(a.bootstrap_server, "h:9");
        let a: DescribeProducersCommandArgs = parse_args(&[
            "--bootstrap-server",
            "h:3",
            "--topic",
            "t",
            "--partition",
            "0",
            "--broker-id",
            "2",
        ])
        .unwrap();
        assert_eq!(
            producers_action(&a.producers).unwrap(),
            Action::DescribeProducers {
                topic: "t".into(),
                partition: 0,
                broker_id: Some(2)
            }
        );
    }

    #[test]
    fn bad_combinations_are_refused() {
        let err = |argv: &[&str]| parse(argv).unwrap_err().to_string();
        assert!(err(&[]).contains("is required"));
        assert!(err(&["--list", "--describe"]).contains("cannot be used together"));
        assert!(err(&["--describe"]).contains("--transactional-id is required"));
        assert!(
            err(&["--list", "--transactional-id", "x"]).contains("only be used with --describe")
        );
        assert!(err(&[
            "--describe",
            "--transactional-id",
            "x",
            "--state",
            "Ongoing"
        ])
        .contains("only be used with --list"));
        assert!(err(&["--list", "--state", "Stable"]).contains("invalid state 'Stable'"));
        assert!(err(&["--list", "list"]).contains("subcommand"));
        assert!(err(&["--list", "--duration-filter", "-5"]).contains("negative"));
        assert!(
            err(&["describe-producers", "--topic", "t", "--partition", "-1"]).contains("negative")
        );
        // clap itself: a missing --partition, an unknown flag.
        assert!(parse_args::<TransactionsArgs>(&["describe-producers", "--topic", "t"]).is_err());
        assert!(parse_args::<TransactionsArgs>(&["--bogus"]).is_err());
    }

    #[test]
    fn list_layout() {
        let rows = vec![
            TransactionListing {
                transactional_id: "app-1".into(),
                coordinator_id: 1,
                producer_id: 1000,
                state: "Ongoing".into(),
            },
            TransactionListing {
                transactional_id: "a-much-longer-transactional-id".into(),
                coordinator_id: 12,
                producer_id: 7,
                state: "CompleteCommit".into(),
            },
        ];
        assert_eq!(
            format_list(&rows),
            "TransactionalId               \tCoordinator\tProducerId\tTransactionState\n\
             app-1                         \t1          \t1000      \tOngoing\n\
             a-much-longer-transactional-id\t12         \t7         \tCompleteCommit\n"
        );
        assert_eq!(
            format_list(&[]),
            "TransactionalId\tCoordinator\tProducerId\tTransactionState\n"
        );
    }

    #[test]
    fn describe_layout() {
        let mut d = TransactionDescription {
            coordinator_id: 2,
            transactional_id: "tx".into(),
            producer_id: 1000,
            producer_epoch: 3,
            state: "Ongoing".into(),
            transaction_timeout_ms: 60000,
            transaction_start_time_ms: Some(1_700_000_000_000),
            topic_partitions: vec![("in".into(), 1), ("out".into(), 0)],
        };
        let out = format_describe(&d, 1_700_000_001_500);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split('\t').map(str::trim_end).collect())
            .collect();
        assert_eq!(
            lines,
            vec![
                vec![
                    "CoordinatorId",
                    "TransactionalId",
                    "ProducerId",
                    "ProducerEpoch",
                    "TransactionState",
                    "TransactionTimeoutMs",
                    "CurrentTransactionStartTimeMs",
                    "TransactionDurationMs",
                    "TopicPartitions"
                ],
                vec![
                    "2",
                    "tx",
                    "1000",
                    "3",
                    "Ongoing",
                    "60000",
                    "1700000000000",
                    "1500",
                    "in-1,out-0"
                ],
            ]
        );
        d.transaction_start_time_ms = None;
        d.state = "Empty".into();
        d.topic_partitions.clear();
        let out = format_describe(&d, 5);
        let row: Vec<&str> = out
            .lines()
            .nth(1)
            .unwrap()
            .split('\t')
            .map(str::trim_end)
            .collect();
        assert_eq!(
            row,
            ["2", "tx", "1000", "3", "Empty", "60000", "None", "None"]
        );
    }

    #[test]
    fn producers_layout() {
        let rows = vec![
            ProducerStateDescription {
                producer_id: 5,
                producer_epoch: 0,
                last_sequence: 4,
                last_timestamp: 1_700_000_000_000,
                coordinator_epoch: Some(2),
                current_txn_start_offset: Some(17),
            },
            ProducerStateDescription {
                producer_id: 9,
                producer_epoch: 1,
                last_sequence: 41,
                last_timestamp: 1_700_000_000_123,
                coordinator_epoch: None,
                current_txn_start_offset: None,
            },
        ];
        assert_eq!(
            format_producers(&rows),
            "ProducerId\tProducerEpoch\tLatestCoordinatorEpoch\tLastSequence\tLastTimestamp\tCurrentTransactionStartOffset\n\
             5         \t0            \t2                     \t4           \t1700000000000\t17\n\
             9         \t1            \t-1                    \t41          \t1700000000123\tNone\n"
        );
    }
}
