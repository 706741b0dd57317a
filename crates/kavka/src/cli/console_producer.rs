//! `kavka console-producer`: Kafka's kafka-console-producer.sh. Each stdin line becomes a
//! record; lines are batched (flushed after `--timeout` ms or a full batch) and everything
//! is flushed at EOF. The first record that cannot be delivered ends the run with an error.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use kavka_client::producer::parse_compression;
use kavka_client::{Acks, ClientConfig, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::props;

#[derive(Args, Debug)]
pub struct ConsoleProducerArgs {
    /// The broker(s) to connect to: host:port[,host:port...].
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// The topic to produce to.
    #[arg(long)]
    pub topic: String,
    /// Line reader property key=value: parse.key, key.separator, parse.headers,
    /// headers.delimiter, headers.separator, headers.key.separator, null.marker, ignore.error.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Producer config key=value: acks, compression.type, batch.size, linger.ms,
    /// max.request.size, request.timeout.ms, client.id, retries.
    #[arg(long = "producer-property", value_name = "KEY=VALUE")]
    pub producer_properties: Vec<String>,
    /// acks: all, -1, 0 or 1.
    #[arg(long)]
    pub request_required_acks: Option<String>,
    /// none, gzip, snappy, lz4 or zstd (gzip when given without a value).
    #[arg(long, num_args = 0..=1, default_missing_value = "gzip")]
    pub compression_codec: Option<String>,
    /// Bytes per partition batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Milliseconds a record may wait for its batch to fill (Kafka's --timeout).
    #[arg(long = "timeout")]
    pub linger_ms: Option<u64>,
    /// Send each line on its own and wait for it.
    #[arg(long)]
    pub sync: bool,
}

/// How stdin lines become records (Kafka's `LineMessageReader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFormat {
    pub parse_key: bool,
    pub key_separator: String,
    pub parse_headers: bool,
    pub headers_delimiter: String,
    pub headers_separator: String,
    pub headers_key_separator: String,
    pub null_marker: Option<String>,
    pub ignore_error: bool,
}

impl Default for LineFormat {
    fn default() -> Self {
        LineFormat {
            parse_key: false,
            key_separator: "\t".into(),
            parse_headers: false,
            headers_delimiter: "\t".into(),
            headers_separator: ",".into(),
            headers_key_separator: ":".into(),
            null_marker: None,
            ignore_error: false,
        }
    }
}

impl LineFormat {
    pub fn from_properties(items: &[String]) -> Result<Self> {
        let mut f = LineFormat::default();
        for (k, v) in props::parse_all(items)? {
            match k.as_str() {
                "parse.key" => f.parse_key = props::parse_bool(&k, &v)?,
                "key.separator" => f.key_separator = props::unescape(&v),
                "parse.headers" => f.parse_headers = props::parse_bool(&k, &v)?,
                "headers.delimiter" => f.headers_delimiter = props::unescape(&v),
                "headers.separator" => f.headers_separator = props::unescape(&v),
                "headers.key.separator" => f.headers_key_separator = props::unescape(&v),
                "null.marker" => f.null_marker = Some(v),
                "ignore.error" => f.ignore_error = props::parse_bool(&k, &v)?,
                _ => eprintln!("Warning: ignoring unknown property '{k}'"),
            }
        }
        for (name, sep) in [
            ("key.separator", &f.key_separator),
            ("headers.delimiter", &f.headers_delimiter),
            ("headers.separator", &f.headers_separator),
            ("headers.key.separator", &f.headers_key_separator),
        ] {
            if sep.is_empty() {
                bail!("{name} must not be empty");
            }
        }
        Ok(f)
    }

    /// Splits one line (without its newline) into headers, key and value.
    pub fn parse(&self, topic: &str, line: &[u8], line_number: u64) -> Result<ProducerRecord> {
        let mut rest = line;
        let mut headers = Vec::new();
        if self.parse_headers {
            let Some((head, tail)) = split_once(rest, self.headers_delimiter.as_bytes()) else {
                bail!("no header delimiter found on line {line_number}");
            };
            rest = tail;
            if !head.is_empty() {
                for h in split_all(head, self.headers_separator.as_bytes()) {
                    let Some((k, v)) = split_once(h, self.headers_key_separator.as_bytes()) else {
                        bail!(
                            "no header key separator found in '{}' on line {line_number}",
                            String::from_utf8_lossy(h)
                        );
                    };
                    let key = String::from_utf8(k.to_vec()).with_context(|| {
                        format!("header key on line {line_number} is not UTF-8")
                    })?;
                    headers.push((key, self.nullable(v)));
                }
            }
        }
        let (key, value) = if self.parse_key {
            let Some((k, v)) = split_once(rest, self.key_separator.as_bytes()) else {
                bail!("no key separator found on line {line_number}");
            };
            (self.nullable(k), self.nullable(v))
        } else {
            (None, self.nullable(rest))
        };
        Ok(ProducerRecord {
            topic: topic.to_string(),
            key,
            value,
            headers,
            ..Default::default()
        })
    }

    /// The null marker (when set) stands for a null key, value or header value.
    fn nullable(&self, bytes: &[u8]) -> Option<Bytes> {
        match &self.null_marker {
            Some(m) if m.as_bytes() == bytes => None,
            _ => Some(Bytes::copy_from_slice(bytes)),
        }
    }
}

fn split_once<'a>(s: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    if sep.is_empty() || s.len() < sep.len() {
        return None;
    }
    (0..=s.len() - sep.len())
        .find(|&i| &s[i..i + sep.len()] == sep)
        .map(|i| (&s[..i], &s[i + sep.len()..]))
}

fn split_all<'a>(mut s: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some((head, tail)) = split_once(s, sep) {
        out.push(head);
        s = tail;
    }
    out.push(s);
    out
}

/// Producer settings from the flags; the dedicated flags win over --producer-property.
pub fn producer_settings(
    args: &ConsoleProducerArgs,
) -> Result<(ClientConfig, ProducerConfig, Duration)> {
    let mut client = ClientConfig::new(&args.bootstrap_server)?;
    client.connection.client_id = "console-producer".into();
    let mut config = ProducerConfig::default();
    // Kafka's console producer lingers 1000 ms by default.
    let mut linger = Duration::from_millis(1000);
    for (k, v) in props::parse_all(&args.producer_properties)? {
        match k.as_str() {
            "acks" => config.acks = v.parse()?,
            "compression.type" => config.compression = parse_compression(&v)?,
            "batch.size" => config.batch_size = props::parse_num(&k, &v)?,
            "linger.ms" => linger = Duration::from_millis(props::parse_num(&k, &v)?),
            "max.request.size" => config.max_request_size = props::parse_num(&k, &v)?,
            "request.timeout.ms" => {
                let ms: u64 = props::parse_num(&k, &v)?;
                config.request_timeout = Duration::from_millis(ms);
                client.connection.request_timeout = Duration::from_millis(ms);
            }
            "retries" => client.retries = props::parse_num(&k, &v)?,
            "client.id" => client.connection.client_id = v,
            _ => eprintln!("Warning: ignoring unknown producer property '{k}'"),
        }
    }
    if let Some(acks) = &args.request_required_acks {
        config.acks = acks.parse::<Acks>()?;
    }
    if let Some(codec) = &args.compression_codec {
        config.compression = parse_compression(codec)?;
    }
    if let Some(size) = args.batch_size {
        config.batch_size = size;
    }
    if let Some(ms) = args.linger_ms {
        linger = Duration::from_millis(ms);
    }
    if args.sync {
        linger = Duration::ZERO;
    }
    Ok((client, config, linger))
}

pub async fn run(args: ConsoleProducerArgs) -> Result<()> {
    let format = LineFormat::from_properties(&args.properties)?;
    let (client, config, linger) = producer_settings(&args)?;
    let max_line = config.max_request_size;
    let mut producer = Producer::connect(client, config).await?;

    let (tx, mut rx) = mpsc::channel::<std::io::Result<Option<Vec<u8>>>>(1024);
    // Blocking stdin reads live on their own thread; the channel makes waiting for the next
    // line cancellable, which the linger timer needs.
    std::thread::spawn(move || read_lines(tx, max_line));

    let mut line_number = 0u64;
    let mut deadline: Option<Instant> = None;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(n) => n,
                Err(_) => {
                    producer.flush().await?;
                    deadline = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let line = match next {
            Some(Ok(Some(line))) => line,
            Some(Ok(None)) | None => break,
            Some(Err(e)) => {
                return Err(
                    anyhow::Error::new(e).context(format!("reading line {}", line_number + 1))
                )
            }
        };
        line_number += 1;
        let record = match format.parse(&args.topic, &line, line_number) {
            Ok(r) => r,
            Err(e) if format.ignore_error => {
                eprintln!("Warning: {e:#}; skipping the line");
                continue;
            }
            Err(e) => {
                // Lines before the bad one are delivered, as Kafka's async sends would be.
                let _ = producer.flush().await;
                return Err(e);
            }
        };
        producer.send(record).await?;
        if linger.is_zero() {
            producer.flush().await?;
        } else if deadline.is_none() {
            deadline = Some(Instant::now() + linger);
        }
    }
    producer.flush().await?;
    Ok(())
}

/// Sends stdin's lines (without `\n` / `\r\n`) down `tx`; `Ok(None)` marks EOF. A line
/// longer than `max` bytes is an error rather than an unbounded allocation.
fn read_lines(tx: mpsc::Sender<std::io::Result<Option<Vec<u8>>>>, max: usize) {
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    loop {
        let result = read_line_bounded(&mut reader, max);
        let done = !matches!(result, Ok(Some(_)));
        if tx.blocking_send(result).is_err() || done {
            return;
        }
    }
}

pub fn read_line_bounded<R: BufRead>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut saw_any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        saw_any = true;
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        if line.len() + chunk.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line exceeds max.request.size ({max} bytes)"),
            ));
        }
        line.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(found);
        reader.consume(used);
        if found {
            break;
        }
    }
    if !saw_any {
        return Ok(None);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kavka_client::Compression;

    fn parse(argv: &[&str]) -> ConsoleProducerArgs {
        crate::cli::parse_args(argv).unwrap()
    }

    #[test]
    fn flags_and_properties() {
        let a = parse(&[
            "--topic",
            "t",
            "--producer-property",
            "acks=all",
            "--compression-codec",
        ]);
        let (client, config, linger) = producer_settings(&a).unwrap();
        assert_eq!(client.bootstrap_servers, ["localhost:9092"]);
        assert_eq!(config.acks, Acks::All);
        assert_eq!(config.compression, Compression::Gzip);
        assert_eq!(linger, Duration::from_millis(1000));

        let a = parse(&[
            "--topic",
            "t",
            "--request-required-acks",
            "1",
            "--producer-property",
            "acks=0",
            "--compression-codec",
            "zstd",
            "--timeout",
            "5",
            "--producer-property",
            "batch.size=100",
        ]);
        let (_, config, linger) = producer_settings(&a).unwrap();
        assert_eq!(config.acks, Acks::Leader, "the dedicated flag wins");
        assert_eq!(config.compression, Compression::Zstd);
        assert_eq!(config.batch_size, 100);
        assert_eq!(linger, Duration::from_millis(5));

        assert!(
            producer_settings(&parse(&["--topic", "t", "--request-required-acks", "2"])).is_err()
        );
        assert!(producer_settings(&parse(&["--topic", "t", "--compression-codec", "x"])).is_err());
        assert!(
            crate::cli::parse_args::<ConsoleProducerArgs>(&[]).is_err(),
            "--topic is required"
        );
    }

    #[test]
    fn lines_become_records() {
        let f = LineFormat::from_properties(&["parse.key=true".into(), "key.separator=:".into()])
            .unwrap();
        let r = f.parse("t", b"k1:v:1", 1).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:1"[..]));
        assert!(f
            .parse("t", b"novalue", 3)
            .unwrap_err()
            .to_string()
            .contains("line 3"));

        let plain = LineFormat::from_properties(&[]).unwrap();
        let r = plain.parse("t", b"a\tb", 1).unwrap();
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"a\tb"[..])));

        let h = LineFormat::from_properties(&[
            "parse.headers=true".into(),
            "parse.key=true".into(),
            "null.marker=NULL".into(),
        ])
        .unwrap();
        let r = h.parse("t", b"h1:x,h2:NULL\tk\tNULL", 1).unwrap();
        assert_eq!(
            r.headers,
            vec![
                ("h1".into(), Some(Bytes::from_static(b"x"))),
                ("h2".into(), None)
            ]
        );
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value, None);
        assert!(LineFormat::from_properties(&["parse.key=maybe".into()]).is_err());
        assert!(LineFormat::from_properties(&["key.separator=".into()]).is_err());
    }

    #[test]
    fn bounded_line_reader() {
        let mut input = std::io::Cursor::new(b"one\r\ntwo\n\nlast".to_vec());
        let mut lines = Vec::new();
        while let Some(l) = read_line_bounded(&mut input, 10).unwrap() {
            lines.push(String::from_utf8(l).unwrap());
        }
        assert_eq!(lines, ["one", "two", "", "last"]);
        let mut long = std::io::BufReader::with_capacity(4, std::io::Cursor::new(vec![b'x'; 100]));
        assert!(read_line_bounded(&mut long, 10).is_err());
    }
}
