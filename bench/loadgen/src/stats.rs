//! Measurement helpers: latency histograms and per-process CPU and memory read from `/proc`.

use std::fs;
use std::time::Instant;

use hdrhistogram::Histogram;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProcError {
    #[error("cannot read /proc/{pid}/{file}: {source}")]
    Read {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("unexpected format of /proc/{pid}/{file}")]
    Format { pid: u32, file: &'static str },
}

/// Latencies in microseconds, 1 µs .. 1 h at 3 significant digits (constant memory, no
/// allocation per sample, so recording does not disturb what it measures).
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("constant histogram bounds are valid");
        Self { hist }
    }

    /// Records one sample; values outside the range are clamped rather than dropped so that
    /// an outlier still shows up in the tail.
    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.max(1));
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so add cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Quantile in milliseconds (q in 0..=1); 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.max() as f64 / 1000.0
    }
}

/// CPU time (user + system) of a process in clock ticks: fields 14 and 15 of
/// `/proc/<pid>/stat`, which cover every thread of the process.
pub fn cpu_ticks(pid: u32) -> Result<u64, ProcError> {
    let text =
        fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|source| ProcError::Read {
            pid,
            file: "stat",
            source,
        })?;
    parse_stat_cpu_ticks(&text).ok_or(ProcError::Format { pid, file: "stat" })
}

/// Parses utime + stime out of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces or parentheses, so fields are counted from the
/// last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After ')' the first field is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64, ProcError> {
    let text =
        fs::read_to_string(format!("/proc/{pid}/status")).map_err(|source| ProcError::Read {
            pid,
            file: "status",
            source,
        })?;
    parse_status_kib(&text, "VmRSS:").ok_or(ProcError::Format {
        pid,
        file: "status",
    })
}

/// Reads a `Key:   1234 kB` line of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Busy CPU time of the whole machine in clock ticks (first line of `/proc/stat`: every
/// field except idle and iowait; guest time is already counted in user).
pub fn machine_busy_ticks() -> Option<u64> {
    parse_proc_stat_busy(&fs::read_to_string("/proc/stat").ok()?)
}

pub fn parse_proc_stat_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error, handled below.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU used by the broker (if its pid is known) and by this load generator over a window of
/// wall-clock time, expressed in cores (1.0 = one core busy for the whole window).
pub struct CpuWindow {
    broker: Option<(u32, u64)>,
    own_start: u64,
    machine_start: Option<u64>,
    wall_start: Instant,
}

/// What a [`CpuWindow`] saw.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsage {
    pub broker_cores: Option<f64>,
    pub broker_rss_mib: Option<f64>,
    pub client_cores: f64,
    /// CPU used by everything else on the machine: a benchmark that shared the cores with
    /// other work is not a clean figure.
    pub other_cores: Option<f64>,
}

impl CpuWindow {
    pub fn start(broker_pid: Option<u32>) -> Self {
        let broker = broker_pid.and_then(|pid| cpu_ticks(pid).ok().map(|t| (pid, t)));
        if let (Some(pid), None) = (broker_pid, broker) {
            eprintln!("warning: cannot read CPU time of broker pid {pid}");
        }
        Self {
            broker,
            own_start: cpu_ticks(std::process::id()).unwrap_or(0),
            machine_start: machine_busy_ticks(),
            wall_start: Instant::now(),
        }
    }

    pub fn finish(&self) -> CpuUsage {
        let wall = self.wall_start.elapsed().as_secs_f64().max(1e-9);
        let hz = clock_ticks_per_sec();
        let cores = |start: u64, end: u64| end.saturating_sub(start) as f64 / hz / wall;
        let broker_cores = self
            .broker
            .and_then(|(pid, start)| cpu_ticks(pid).ok().map(|end| cores(start, end)));
        let broker_rss_mib = self
            .broker
            .and_then(|(pid, _)| rss_kib(pid).ok())
            .map(|k| k as f64 / 1024.0);
        let own_end = cpu_ticks(std::process::id()).unwrap_or(self.own_start);
        let client_cores = cores(self.own_start, own_end);
        let other_cores = self
            .machine_start
            .zip(machine_busy_ticks())
            .map(|(start, end)| {
                (cores(start, end) - client_cores - broker_cores.unwrap_or(0.0)).max(0.0)
            });
        CpuUsage {
            broker_cores,
            broker_rss_mib,
            client_cores,
            other_cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_tricky_command_name() {
        // Real layout: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let line = "4242 (we) ird (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 269 0 0 20 0 5 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(1000));
    }

    #[test]
    fn stat_line_truncated_is_none() {
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
    }

    #[test]
    fn proc_stat_busy() {
        let s = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(parse_proc_stat_busy(s), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert_eq!(parse_proc_stat_busy("cpu  1 2 3\n"), None);
        assert_eq!(parse_proc_stat_busy("intr 1 2 3 4 5 6 7 8\n"), None);
        assert!(machine_busy_ticks().is_some());
    }

    #[test]
    fn status_kib() {
        let s = "Name:\tkavka\nVmHWM:\t  2048 kB\nVmRSS:\t  1536 kB\n";
        assert_eq!(parse_status_kib(s, "VmRSS:"), Some(1536));
        assert_eq!(parse_status_kib(s, "VmSwap:"), None);
    }

    #[test]
    fn quantiles() {
        let mut l = Latencies::new();
        assert_eq!(l.quantile_ms(0.99), 0.0);
        for us in 1..=1000 {
            l.record_us(us);
        }
        let p50 = l.quantile_ms(0.5);
        assert!((0.49..=0.51).contains(&p50), "p50 {p50}");
        let p999 = l.quantile_ms(0.999);
        assert!((0.99..=1.01).contains(&p999), "p99.9 {p999}");
        let mut other = Latencies::new();
        other.record_us(5_000_000);
        l.merge(&other);
        assert_eq!(l.count(), 1001);
        assert!(l.max_ms() >= 4990.0);
    }
}
