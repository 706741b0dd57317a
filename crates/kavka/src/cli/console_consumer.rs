//! `kavka console-consumer`: Kafka's kafka-console-consumer.sh. It reads one partition or
//! all partitions of a topic, or (with `--group`) the partitions its consumer group assigns
//! it, and prints records with Kafka's `DefaultMessageFormatter` layout.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use kavka_client::{
    ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig, GroupConsumer, OffsetSpec,
};
use tokio::time::Instant;

use super::props;

#[derive(Args, Debug)]
pub struct ConsoleConsumerArgs {
    /// The broker(s) to connect to: host:port[,host:port...].
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// The topic to consume.
    #[arg(long)]
    pub topic: String,
    /// Start at the earliest offset instead of the latest (with --group: where the group
    /// has no committed offset).
    #[arg(long)]
    pub from_beginning: bool,
    /// Consume only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Start offset with --partition: a number, earliest or latest.
    #[arg(long)]
    pub offset: Option<String>,
    /// Exit after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Exit after this many milliseconds without a record.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Formatter property key=value: print.key, print.value, print.timestamp,
    /// print.partition, print.offset, print.headers, key.separator, line.separator,
    /// headers.separator, headers.key.separator, null.literal.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Consumer config key=value: fetch.max.wait.ms, fetch.min.bytes, fetch.max.bytes,
    /// max.partition.fetch.bytes, isolation.level, request.timeout.ms, client.id; with a
    /// group also group.id, group.instance.id, session.timeout.ms, heartbeat.interval.ms,
    /// max.poll.interval.ms, enable.auto.commit, auto.commit.interval.ms, auto.offset.reset.
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    pub consumer_properties: Vec<String>,
    /// read_uncommitted (default) or read_committed.
    #[arg(long)]
    pub isolation_level: Option<String>,
    /// Join this consumer group: read the partitions it assigns, from its committed
    /// offsets, and commit what was printed.
    #[arg(long)]
    pub group: Option<String>,
}

/// Kafka's `DefaultMessageFormatter` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formatter {
    pub print_timestamp: bool,
    pub print_partition: bool,
    pub print_offset: bool,
    pub print_headers: bool,
    pub print_key: bool,
    pub print_value: bool,
    pub key_separator: String,
    pub line_separator: String,
    pub headers_separator: String,
    pub headers_key_separator: String,
    pub null_literal: String,
}

impl Default for Formatter {
    fn default() -> Self {
        Formatter {
            print_timestamp: false,
            print_partition: false,
            print_offset: false,
            print_headers: false,
            print_key: false,
            print_value: true,
            key_separator: "\t".into(),
            line_separator: "\n".into(),
            headers_separator: ",".into(),
            headers_key_separator: ":".into(),
            null_literal: "null".into(),
        }
    }
}

impl Formatter {
    pub fn from_properties(items: &[String]) -> Result<Self> {
        let mut f = Formatter::default();
        for (k, v) in props::parse_all(items)? {
            match k.as_str() {
                "print.timestamp" => f.print_timestamp = props::parse_bool(&k, &v)?,
                "print.partition" => f.print_partition = props::parse_bool(&k, &v)?,
                "print.offset" => f.print_offset = props::parse_bool(&k, &v)?,
                "print.headers" => f.print_headers = props::parse_bool(&k, &v)?,
                "print.key" => f.print_key = props::parse_bool(&k, &v)?,
                "print.value" => f.print_value = props::parse_bool(&k, &v)?,
                "key.separator" => f.key_separator = props::unescape(&v),
                "line.separator" => f.line_separator = props::unescape(&v),
                "headers.separator" => f.headers_separator = props::unescape(&v),
                "headers.key.separator" => f.headers_key_separator = props::unescape(&v),
                "null.literal" => f.null_literal = v,
                _ => eprintln!("Warning: ignoring unknown property '{k}'"),
            }
        }
        Ok(f)
    }

    /// Appends one record, fields in Kafka's order, each followed by the key separator
    /// or (after the last printed field) the line separator.
    pub fn write(&self, r: &ConsumerRecord, out: &mut Vec<u8>) {
        let fields = [
            self.print_timestamp,
            self.print_partition,
            self.print_offset,
            self.print_headers,
            self.print_key,
            self.print_value,
        ];
        let sep = |out: &mut Vec<u8>, i: usize| {
            if fields[i + 1..].iter().any(|f| *f) {
                out.extend_from_slice(self.key_separator.as_bytes());
            } else {
                out.extend_from_slice(self.line_separator.as_bytes());
            }
        };
        if self.print_timestamp {
            let kind = if r.log_append_time {
                "LogAppendTime"
            } else {
                "CreateTime"
            };
            if r.timestamp < 0 {
                out.extend_from_slice(b"NO_TIMESTAMP");
            } else {
                out.extend_from_slice(format!("{kind}:{}", r.timestamp).as_bytes());
            }
            sep(out, 0);
        }
        if self.print_partition {
            out.extend_from_slice(format!("Partition:{}", r.partition).as_bytes());
            sep(out, 1);
        }
        if self.print_offset {
            out.extend_from_slice(format!("Offset:{}", r.offset).as_bytes());
            sep(out, 2);
        }
        if self.print_headers {
            if r.headers.is_empty() {
                out.extend_from_slice(b"NO_HEADERS");
            }
            for (i, (k, v)) in r.headers.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(self.headers_separator.as_bytes());
                }
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(self.headers_key_separator.as_bytes());
                self.bytes(v.as_deref(), out);
            }
            sep(out, 3);
        }
        if self.print_key {
            self.bytes(r.key.as_deref(), out);
            sep(out, 4);
        }
        if self.print_value {
            self.bytes(r.value.as_deref(), out);
            out.extend_from_slice(self.line_separator.as_bytes());
        }
    }

    fn bytes(&self, b: Option<&[u8]>, out: &mut Vec<u8>) {
        match b {
            Some(b) => out.extend_from_slice(b),
            None => out.extend_from_slice(self.null_literal.as_bytes()),
        }
    }
}

/// Where to start: --offset wins, then --from-beginning, else the log end (Kafka's default
/// for a console consumer without a group). With a group this is only where partitions
/// without a committed offset start.
pub fn start_spec(args: &ConsoleConsumerArgs) -> Result<OffsetSpec> {
    if args.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
        bail!("--group must not be empty");
    }
    if args.group.is_some() && (args.partition.is_some() || args.offset.is_some()) {
        bail!("--group cannot be used with --partition or --offset");
    }
    if args.offset.is_some() && args.partition.is_none() {
        bail!("--partition is required when --offset is given");
    }
    if args.offset.is_some() && args.from_beginning {
        bail!("--from-beginning and --offset cannot be used together");
    }
    Ok(match args.offset.as_deref() {
        Some("earliest") => OffsetSpec::Earliest,
        Some("latest") => OffsetSpec::Latest,
        Some(n) => match n.parse::<i64>() {
            Ok(o) if o >= 0 => OffsetSpec::Offset(o),
            _ => {
                bail!("invalid --offset '{n}': expected a non-negative number, earliest or latest")
            }
        },
        None if args.from_beginning => OffsetSpec::Earliest,
        None => OffsetSpec::Latest,
    })
}

/// The client, fetch and (when a group is named by --group or group.id) group settings.
pub struct Settings {
    pub client: ClientConfig,
    pub consumer: ConsumerConfig,
    pub group: Option<GroupConfig>,
}

pub fn consumer_settings(args: &ConsoleConsumerArgs) -> Result<Settings> {
    let mut client = ClientConfig::new(&args.bootstrap_server)?;
    client.connection.client_id = "console-consumer".into();
    let mut config = ConsumerConfig::default();
    let mut isolation = args.isolation_level.clone();
    let mut group = GroupConfig::new(args.group.clone().unwrap_or_default());
    group.auto_offset_reset = if args.from_beginning {
        OffsetSpec::Earliest
    } else {
        OffsetSpec::Latest
    };
    let mut auto_commit = true;
    let mut auto_commit_interval = group.auto_commit_interval;
    for (k, v) in props::parse_all(&args.consumer_properties)? {
        let ms = |k: &str, v: &str| -> Result<Duration> {
            Ok(Duration::from_millis(props::parse_num(k, v)?))
        };
        match k.as_str() {
            "fetch.max.wait.ms" => {
                config.max_wait = Duration::from_millis(props::parse_num(&k, &v)?)
            }
            "fetch.min.bytes" => config.min_bytes = props::parse_num(&k, &v)?,
            "fetch.max.bytes" => config.max_bytes = props::parse_num(&k, &v)?,
            "max.partition.fetch.bytes" => config.partition_max_bytes = props::parse_num(&k, &v)?,
            "isolation.level" => isolation = isolation.or(Some(v)),
            "request.timeout.ms" => {
                client.connection.request_timeout = Duration::from_millis(props::parse_num(&k, &v)?)
            }
            "client.id" => client.connection.client_id = v,
            // --group wins over the property, as in Kafka.
            "group.id" if args.group.is_none() => group.group_id = v,
            "group.id" => {}
            "group.instance.id" => group.group_instance_id = Some(v),
            "session.timeout.ms" => group.session_timeout = ms(&k, &v)?,
            "heartbeat.interval.ms" => group.heartbeat_interval = ms(&k, &v)?,
            "max.poll.interval.ms" => group.rebalance_timeout = ms(&k, &v)?,
            "enable.auto.commit" => auto_commit = props::parse_bool(&k, &v)?,
            "auto.commit.interval.ms" => auto_commit_interval = Some(ms(&k, &v)?),
            "auto.offset.reset" => {
                group.auto_offset_reset = match v.trim() {
                    "earliest" => OffsetSpec::Earliest,
                    "latest" => OffsetSpec::Latest,
                    other => bail!(
                        "invalid value '{other}' for auto.offset.reset: expected earliest or latest"
                    ),
                }
            }
            _ => eprintln!("Warning: ignoring unknown consumer property '{k}'"),
        }
    }
    config.isolation_level = match isolation.as_deref() {
        None | Some("read_uncommitted") => 0,
        Some("read_committed") => 1,
        Some(other) => {
            bail!("invalid isolation level '{other}': expected read_uncommitted or read_committed")
        }
    };
    if let Some(t) = args.timeout_ms {
        // Long polls must not outlast the idle timeout by much.
        config.max_wait = config.max_wait.min(Duration::from_millis(t.max(1)));
    }
    group.auto_commit_interval = auto_commit_interval.filter(|_| auto_commit);
    if group.heartbeat_interval.is_zero() || group.heartbeat_interval >= group.session_timeout {
        bail!("heartbeat.interval.ms must be above 0 and below session.timeout.ms");
    }
    let group = (!group.group_id.is_empty()).then_some(group);
    Ok(Settings {
        client,
        consumer: config,
        group,
    })
}

/// Where records come from: assigned partitions, or a consumer group.
enum Source {
    Assigned(Box<Consumer>),
    Group(Box<GroupConsumer>),
}

impl Source {
    async fn poll(&mut self) -> kavka_client::Result<Vec<ConsumerRecord>> {
        match self {
            Source::Assigned(c) => c.poll().await,
            Source::Group(g) => g.poll().await,
        }
    }

    /// The record was printed: a group commits past it.
    fn printed(&mut self, r: &ConsumerRecord) {
        if let Source::Group(g) = self {
            g.mark_consumed(r);
        }
    }

    /// Commits and leaves the group.
    async fn close(self) -> kavka_client::Result<()> {
        match self {
            Source::Assigned(_) => Ok(()),
            Source::Group(g) => g.close().await,
        }
    }
}

pub async fn run(args: ConsoleConsumerArgs) -> Result<()> {
    let formatter = Formatter::from_properties(&args.properties)?;
    let spec = start_spec(&args)?;
    let settings = consumer_settings(&args)?;
    let mut source = match settings.group {
        Some(group) => Source::Group(Box::new(
            GroupConsumer::connect(
                settings.client,
                settings.consumer,
                group,
                vec![args.topic.clone()],
            )
            .await?,
        )),
        None => {
            let mut consumer = Consumer::connect(settings.client, settings.consumer).await?;
            let partitions = match args.partition {
                Some(p) => vec![p],
                None => consumer.partitions_for(&args.topic).await?,
            };
            consumer.assign(&args.topic, &partitions, spec).await?;
            Source::Assigned(Box::new(consumer))
        }
    };

    let idle = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut printed: u64 = 0;
    let stdout = std::io::stdout();
    let mut out = Vec::with_capacity(64 * 1024);
    let stop = stop_signal();
    tokio::pin!(stop);
    let result: Result<()> = loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break Ok(());
        }
        let deadline = idle.map(|i| last_record + i);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Ok(());
        }
        let poll = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, source.poll()).await.ok(),
                None => Some(source.poll().await),
            }
        };
        let records = tokio::select! {
            r = poll => r,
            _ = &mut stop => break Ok(()),
        };
        let records = match records {
            None => break Ok(()), // idle timeout
            Some(Ok(r)) => r,
            Some(Err(e)) => break Err(e.into()),
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        out.clear();
        let mut printed_now = 0;
        for r in &records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            formatter.write(r, &mut out);
            printed += 1;
            printed_now += 1;
        }
        let mut lock = stdout.lock();
        if let Err(e) = lock.write_all(&out).and_then(|()| lock.flush()) {
            // A closed pipe (`| head`) is a normal way to stop.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                let _ = source.close().await;
                return Ok(());
            }
            break Err(e.into());
        }
        // Only what reached stdout counts as consumed.
        for r in records.iter().take(printed_now) {
            source.printed(r);
        }
    };
    // A last commit can lose a race with a rebalance; like Java's close, warn and go on
    // (the records will be read again: at least once).
    if let Err(e) = source.close().await {
        eprintln!("Warning: could not commit and leave the group: {e}");
    }
    // Like Kafka, report the count on a normal stop; an error is reported alone.
    if result.is_ok() {
        eprintln!("Processed a total of {printed} messages");
    }
    result
}

/// Resolves on SIGINT or SIGTERM, so either stops the consumer cleanly.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn parse(argv: &[&str]) -> ConsoleConsumerArgs {
        crate::cli::parse_args(argv).unwrap()
    }

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            timestamp: 1000,
            log_append_time: false,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                ("h1".into(), Some(Bytes::from_static(b"a"))),
                ("h2".into(), None),
            ],
        }
    }

    fn format(props: &[&str], r: &ConsumerRecord) -> String {
        let props: Vec<String> = props.iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        Formatter::from_properties(&props)
            .unwrap()
            .write(r, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_like_kafka() {
        let r = record();
        assert_eq!(format(&[], &r), "v\n");
        assert_eq!(format(&["print.key=true"], &r), "k\tv\n");
        assert_eq!(
            format(&["print.key=true", r"key.separator=\t"], &r),
            "k\tv\n"
        );
        assert_eq!(format(&["print.key=true", "key.separator=:"], &r), "k:v\n");
        assert_eq!(
            format(
                &[
                    "print.timestamp=true",
                    "print.partition=true",
                    "print.offset=true",
                    "print.headers=true",
                    "print.key=true"
                ],
                &r
            ),
            "CreateTime:1000\tPartition:2\tOffset:7\th1:a,h2:null\tk\tv\n"
        );
        assert_eq!(format(&["print.key=true", "print.value=false"], &r), "k\n");
        let bare = ConsumerRecord {
            key: None,
            value: None,
            headers: vec![],
            ..record()
        };
        assert_eq!(
            format(&["print.key=true", "print.headers=true"], &bare),
            "NO_HEADERS\tnull\tnull\n"
        );
    }

    #[test]
    fn start_offsets() {
        let cases: [(&[&str], OffsetSpec); 4] = [
            (&["--topic", "t"], OffsetSpec::Latest),
            (&["--topic", "t", "--from-beginning"], OffsetSpec::Earliest),
            (
                &["--topic", "t", "--partition", "1", "--offset", "42"],
                OffsetSpec::Offset(42),
            ),
            (
                &["--topic", "t", "--partition", "1", "--offset", "earliest"],
                OffsetSpec::Earliest,
            ),
        ];
        for (argv, spec) in cases {
            assert_eq!(start_spec(&parse(argv)).unwrap(), spec, "{argv:?}");
        }
    }

    #[test]
    fn consumer_properties() {
        let a = parse(&[
            "--topic",
            "t",
            "--timeout-ms",
            "100",
            "--consumer-property",
            "fetch.min.bytes=10",
            "--consumer-property",
            "isolation.level=read_committed",
        ]);
        let Settings {
            client,
            consumer: config,
            group,
        } = consumer_settings(&a).unwrap();
        assert_eq!(client.bootstrap_servers, ["localhost:9092"]);
        assert_eq!(config.min_bytes, 10);
        assert_eq!(config.isolation_level, 1);
        assert_eq!(config.max_wait, Duration::from_millis(100));
        assert!(group.is_none(), "no group unless one is named");
        assert!(consumer_settings(&parse(&["--topic", "t", "--isolation-level", "x"])).is_err());
        assert!(Formatter::from_properties(&["print.key=yes".into()]).is_err());
    }

    #[test]
    fn group_settings() {
        let a = parse(&["--topic", "t", "--group", "g", "--from-beginning"]);
        let group = consumer_settings(&a).unwrap().group.unwrap();
        assert_eq!(group.group_id, "g");
        assert_eq!(group.auto_offset_reset, OffsetSpec::Earliest);
        assert_eq!(group.auto_commit_interval, Some(Duration::from_secs(5)));
        assert_eq!(start_spec(&a).unwrap(), OffsetSpec::Earliest);

        let a = parse(&[
            "--topic",
            "t",
            "--consumer-property",
            "group.id=p",
            "--consumer-property",
            "enable.auto.commit=false",
            "--consumer-property",
            "session.timeout.ms=10000",
            "--consumer-property",
            "heartbeat.interval.ms=1000",
            "--consumer-property",
            "group.instance.id=i1",
        ]);
        let group = consumer_settings(&a).unwrap().group.unwrap();
        assert_eq!(group.group_id, "p");
        assert_eq!(group.auto_commit_interval, None);
        assert_eq!(group.session_timeout, Duration::from_secs(10));
        assert_eq!(group.group_instance_id.as_deref(), Some("i1"));
        assert_eq!(group.auto_offset_reset, OffsetSpec::Latest);

        let bad: [&[&str]; 5] = [
            &["--topic", "t", "--group", "g", "--partition", "0"],
            &["--topic", "t", "--group", ""],
            &[
                "--topic",
                "t",
                "--group",
                "g",
                "--consumer-property",
                "auto.offset.reset=none",
            ],
            &[
                "--topic",
                "t",
                "--group",
                "g",
                "--consumer-property",
                "heartbeat.interval.ms=0",
            ],
            &[
                "--topic",
                "t",
                "--group",
                "g",
                "--consumer-property",
                "session.timeout.ms=1000",
            ],
        ];
        for argv in bad {
            let a = parse(argv);
            assert!(
                start_spec(&a).is_err() || consumer_settings(&a).is_err(),
                "{argv:?}"
            );
        }
    }
}
