//! Topic creation (librdkafka's CreateTopics) and the broker readiness probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{json, Value};

use crate::client::{self, LoggingContext};

/// Creates `topic` (or `topic-0 .. topic-{count-1}` when `count > 1`) with `partitions` each.
/// A topic that already exists is fine: reruns reuse it.
pub fn create_topics(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: u32,
    extra: &[(String, String)],
) -> Result<Value> {
    let admin: AdminClient<LoggingContext> = client::config(bootstrap, &[], extra)
        .create_with_context(LoggingContext::default())
        .context("creating admin client")?;
    let names: Vec<String> = if count <= 1 {
        vec![topic.to_string()]
    } else {
        (0..count).map(|i| format!("{topic}-{i}")).collect()
    };
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(30)));
    let start = Instant::now();
    let results = futures_executor::block_on(admin.create_topics(new_topics.iter(), &opts))
        .context("CreateTopics")?;
    let elapsed = start.elapsed();
    let mut created = 0u32;
    let mut existed = 0u32;
    for r in results {
        match r {
            Ok(_) => created += 1,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => existed += 1,
            Err((name, code)) => bail!("creating topic {name}: {code}"),
        }
    }
    eprintln!(
        "created {created} topic(s) ({existed} already existed) x {partitions} partitions in {:.0} ms",
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(json!({
        "topics": names.len(),
        "partitions_each": partitions,
        "created": created,
        "existed": existed,
        "create_ms": elapsed.as_secs_f64() * 1000.0,
    }))
}

/// A Metadata v1 request for no topics: the cheapest request a Kafka broker answers only
/// once it is serving (its response lists the brokers). Written by hand so the probe can be
/// repeated every few milliseconds without librdkafka's reconnect backoff blurring the time.
pub fn metadata_probe_request(correlation_id: i32) -> Vec<u8> {
    const CLIENT_ID: &[u8] = b"kavka-loadgen";
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&3i16.to_be_bytes()); // api key: Metadata
    body.extend_from_slice(&1i16.to_be_bytes()); // api version
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    body.extend_from_slice(CLIENT_ID);
    body.extend_from_slice(&0i32.to_be_bytes()); // topics: empty array
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Largest Metadata response the probe accepts (a broker list for no topics is tiny).
const MAX_PROBE_RESPONSE: usize = 1 << 20;

/// True when the response is a well-formed frame carrying our correlation id.
pub fn probe_response_ok(frame_len: i32, head: &[u8], correlation_id: i32) -> bool {
    frame_len >= 4
        && (frame_len as usize) <= MAX_PROBE_RESPONSE
        && head
            .get(..4)
            .map(|c| c == correlation_id.to_be_bytes())
            .unwrap_or(false)
}

fn probe_once(addr: SocketAddr, correlation_id: i32) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.set_nodelay(true)?;
    s.write_all(&metadata_probe_request(correlation_id))?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let frame_len = i32::from_be_bytes(len);
    if !(4..=MAX_PROBE_RESPONSE as i32).contains(&frame_len) {
        bail!("bad response length {frame_len}");
    }
    let mut body = vec![0u8; frame_len as usize];
    s.read_exact(&mut body)?;
    if !probe_response_ok(frame_len, &body, correlation_id) {
        bail!("response does not match the request");
    }
    Ok(())
}

/// Polls `addr` with Metadata requests until one is answered. `since_epoch_ns` is when the
/// broker process was launched (taken by the caller), so the figure is launch → serving.
pub fn wait_ready(addr: &str, since_epoch_ns: Option<u128>, timeout: Duration) -> Result<Value> {
    let addr = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to nothing"))?;
    let since = since_epoch_ns.unwrap_or_else(epoch_ns);
    let deadline = Instant::now() + timeout;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let Err(last_err) = probe_once(addr, attempts as i32) else {
            break;
        };
        if Instant::now() >= deadline {
            bail!("{addr} did not answer Metadata within {timeout:?} ({attempts} attempts): {last_err}");
        }
        thread::sleep(Duration::from_millis(2));
    }
    let ready_ms = epoch_ns().saturating_sub(since) as f64 / 1e6;
    eprintln!("{addr} answered Metadata {ready_ms:.0} ms after launch ({attempts} attempts)");
    Ok(json!({ "ready_ms": ready_ms, "attempts": attempts }))
}

pub fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn probe_request_layout() {
        let f = metadata_probe_request(7);
        let len = i32::from_be_bytes(f[..4].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 4);
        assert_eq!(&f[4..6], &3i16.to_be_bytes());
        assert_eq!(&f[6..8], &1i16.to_be_bytes());
        assert_eq!(&f[8..12], &7i32.to_be_bytes());
        assert_eq!(&f[f.len() - 4..], &0i32.to_be_bytes());
    }

    #[test]
    fn probe_response_checks() {
        assert!(probe_response_ok(8, &[0, 0, 0, 9, 1, 2, 3, 4], 9));
        assert!(!probe_response_ok(8, &[0, 0, 0, 8], 9));
        assert!(!probe_response_ok(2, &[0, 0], 9));
        assert!(!probe_response_ok(i32::MAX, &[0, 0, 0, 9], 9));
    }

    /// A fake broker that answers the first request with a matching correlation id.
    #[test]
    fn wait_ready_against_fake_broker() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut req = vec![0u8; i32::from_be_bytes(len) as usize];
            s.read_exact(&mut req).unwrap();
            let mut resp = Vec::new();
            resp.extend_from_slice(&8i32.to_be_bytes());
            resp.extend_from_slice(&req[4..8]);
            resp.extend_from_slice(&[0, 0, 0, 0]);
            s.write_all(&resp).unwrap();
        });
        let v = wait_ready(&addr.to_string(), None, Duration::from_secs(5)).unwrap();
        assert!(v["ready_ms"].as_f64().unwrap() >= 0.0);
        server.join().unwrap();
    }

    #[test]
    fn wait_ready_times_out_on_closed_port() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(wait_ready(&addr.to_string(), None, Duration::from_millis(50)).is_err());
    }
}
