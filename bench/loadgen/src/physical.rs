//! The machine's own limits, measured in the same run as the broker: loopback TCP bandwidth
//! and the latency of a small append + fdatasync (what a flush-per-message broker pays).

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use crate::stats::Latencies;

const CHUNK: usize = 1 << 20;

/// Streams up to `bytes` through a loopback TCP connection (one writer thread, one reader
/// thread, 1 MiB buffers) for at most `seconds`; reports what the reader received.
pub fn tcp_blast(bytes: u64, seconds: f64) -> Result<Value> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding loopback listener")?;
    let addr = listener.local_addr()?;
    let reader = thread::Builder::new()
        .name("blast-reader".into())
        .spawn(move || -> std::io::Result<(u64, Duration)> {
            let (mut s, _) = listener.accept()?;
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            let start = Instant::now();
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok((total, start.elapsed()));
                }
                total += n as u64;
            }
        })
        .context("spawning reader")?;

    let mut s = TcpStream::connect(addr).context("connecting to loopback listener")?;
    let buf = vec![0x5au8; CHUNK];
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut written = 0u64;
    while written < bytes && Instant::now() < deadline {
        let n = usize::try_from(bytes - written).unwrap_or(CHUNK).min(CHUNK);
        s.write_all(&buf[..n])?;
        written += n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let (received, elapsed) = reader
        .join()
        .map_err(|_| anyhow!("reader thread panicked"))??;
    if received != written {
        bail!("loopback lost data: wrote {written}, read {received}");
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mb_per_s = received as f64 / secs / 1e6;
    eprintln!(
        "loopback TCP: {:.0} MiB in {secs:.2}s = {mb_per_s:.0} MB/s",
        received as f64 / 1048576.0
    );
    Ok(json!({ "bytes": received, "seconds": secs, "mb_per_s": mb_per_s }))
}

/// Appends `block` bytes then `fdatasync`s, `count` times or for `seconds`, in a scratch
/// file under `dir` (removed afterwards).
pub fn fsync_latency(dir: &Path, block: usize, count: u64, seconds: f64) -> Result<Value> {
    if block == 0 {
        bail!("--block must be positive");
    }
    let path = dir.join(format!("loadgen-fsync-{}.tmp", std::process::id()));
    let result = fsync_loop(&path, block, count, seconds);
    let _ = fs::remove_file(&path);
    result
}

fn fsync_loop(path: &Path, block: usize, count: u64, seconds: f64) -> Result<Value> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let buf = vec![0xa5u8; block];
    let mut lat = Latencies::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut n = 0u64;
    while n < count && Instant::now() < deadline {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.record_us(t.elapsed().as_micros() as u64);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "fdatasync after {block} B append: {n} in {secs:.2}s, p50 {:.3} ms p99 {:.3} ms",
        lat.quantile_ms(0.5),
        lat.quantile_ms(0.99)
    );
    Ok(json!({
        "block_bytes": block,
        "syncs": n,
        "syncs_per_s": n as f64 / secs,
        "p50_ms": lat.quantile_ms(0.5),
        "p99_ms": lat.quantile_ms(0.99),
        "max_ms": lat.max_ms(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blast_small() {
        let v = tcp_blast(3 * CHUNK as u64 + 17, 10.0).unwrap();
        assert_eq!(v["bytes"].as_u64(), Some(3 * CHUNK as u64 + 17));
    }

    #[test]
    fn fsync_small_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let v = fsync_latency(&dir, 512, 3, 10.0).unwrap();
        assert_eq!(v["syncs"].as_u64(), Some(3));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir(&dir).unwrap();
    }
}
