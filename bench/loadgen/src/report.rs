//! The closing table: every figure of a run next to the issue's target.
//!
//! Input is the JSON-lines file the scenarios appended to, one object per scenario with a
//! `scenario` name; a scenario that failed has an `error` field instead of figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtLeast(f64),
    Below(f64),
    /// Reference figure, no target.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    MsgsPerSec,
    MegabytesPerSec,
    Millis,
    Cores,
    Mebibytes,
    Count,
    CpuSecondsPerGb,
    /// Requests per second (commits, round trips).
    PerSecond,
}

pub struct Check {
    pub scenario: &'static str,
    pub metric: &'static str,
    pub label: &'static str,
    pub unit: Unit,
    pub goal: Goal,
}

const fn check(
    scenario: &'static str,
    metric: &'static str,
    label: &'static str,
    unit: Unit,
    goal: Goal,
) -> Check {
    Check {
        scenario,
        metric,
        label,
        unit,
        goal,
    }
}

/// Figures in the order they are printed; targets from issue 2 (Benchmark).
pub const CHECKS: &[Check] = &[
    check(
        "produce_p1_acks1",
        "msgs_per_s",
        "produce 100 B, 1 part, acks=1, linger 5",
        Unit::MsgsPerSec,
        Goal::AtLeast(1_500_000.0),
    ),
    check(
        "produce_p1_acks1",
        "mb_per_s",
        "  same, payload MB/s",
        Unit::MegabytesPerSec,
        Goal::None,
    ),
    check(
        "produce_p1_acks1",
        "broker_cores",
        "  same, broker CPU",
        Unit::Cores,
        Goal::Below(0.5),
    ),
    check(
        "produce_p1_acks1",
        "client_cores",
        "  same, loadgen CPU",
        Unit::Cores,
        Goal::None,
    ),
    check(
        "produce_p6_acks1",
        "msgs_per_s",
        "produce 100 B, 6 part, acks=1, linger 5",
        Unit::MsgsPerSec,
        Goal::None,
    ),
    check(
        "produce_p6_acks1",
        "broker_cores",
        "  same, broker CPU",
        Unit::Cores,
        Goal::None,
    ),
    check(
        "produce_p1_acksall",
        "msgs_per_s",
        "produce 1 part, acks=all (no fsync)",
        Unit::MsgsPerSec,
        Goal::None,
    ),
    check(
        "produce_p6_acksall",
        "msgs_per_s",
        "produce 6 part, acks=all (no fsync)",
        Unit::MsgsPerSec,
        Goal::None,
    ),
    check(
        "produce_p1_acksall_flush1",
        "msgs_per_s",
        "produce 1 part, acks=all, flush.messages=1",
        Unit::MsgsPerSec,
        Goal::AtLeast(1_000_000.0),
    ),
    check(
        "produce_p1_acksall_flush1",
        "ack_p99_ms",
        "  same, ack p99",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "produce_p1_acksall_flush1",
        "broker_cores",
        "  same, broker CPU",
        Unit::Cores,
        Goal::None,
    ),
    check(
        "produce_p6_acksall_flush1",
        "msgs_per_s",
        "produce 6 part, acks=all, flush.messages=1",
        Unit::MsgsPerSec,
        Goal::None,
    ),
    check(
        "consume_p1",
        "msgs_per_s",
        "consume 1 M from beginning, 1 part",
        Unit::MsgsPerSec,
        Goal::AtLeast(2_000_000.0),
    ),
    check(
        "consume_p1",
        "mb_per_s",
        "  same, payload MB/s",
        Unit::MegabytesPerSec,
        Goal::None,
    ),
    check(
        "consume_p6",
        "msgs_per_s",
        "consume 1 M from beginning, 6 part",
        Unit::MsgsPerSec,
        Goal::None,
    ),
    check(
        "e2e_10k",
        "p50_ms",
        "e2e 10k msgs/s linger 0: p50",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "e2e_10k",
        "p99_ms",
        "e2e 10k msgs/s linger 0: p99",
        Unit::Millis,
        Goal::Below(5.0),
    ),
    check(
        "e2e_10k",
        "p999_ms",
        "e2e 10k msgs/s linger 0: p99.9",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "e2e_100k",
        "p50_ms",
        "e2e 100k msgs/s linger 0: p50",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "e2e_100k",
        "p99_ms",
        "e2e 100k msgs/s linger 0: p99",
        Unit::Millis,
        Goal::Below(20.0),
    ),
    check(
        "e2e_100k",
        "p999_ms",
        "e2e 100k msgs/s linger 0: p99.9",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "e2e_100k",
        "achieved_rate",
        "  same, achieved send rate",
        Unit::MsgsPerSec,
        Goal::None,
    ),
    check(
        "group_100m_200p",
        "join_stable_ms",
        "group 100 members/200 part: last join → stable",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "group_100m_200p",
        "generation",
        "  same, generations to get there",
        Unit::Count,
        Goal::None,
    ),
    check(
        "group_100m_200p",
        "commits_per_s",
        "  OffsetCommit/s, 100 connections",
        Unit::PerSecond,
        Goal::None,
    ),
    check(
        "group_100m_200p",
        "commit_p99_ms",
        "  same, commit p99",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "group_100m_200p",
        "broker_cores",
        "  same, broker CPU",
        Unit::Cores,
        Goal::None,
    ),
    check(
        "group_100m_200p",
        "baseline_rps",
        "  reference: ApiVersions/s, same connections",
        Unit::PerSecond,
        Goal::None,
    ),
    check(
        "group_100m_200p_kip848",
        "join_stable_ms",
        "same, KIP-848 members: last join → reconciled",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "group_100m_200p_kip848",
        "commits_per_s",
        "  OffsetCommit/s (member epoch), 100 conns",
        Unit::PerSecond,
        Goal::None,
    ),
    check(
        "idle_rss_1000p",
        "rss_mib",
        "idle RSS, 1,000 partitions",
        Unit::Mebibytes,
        Goal::Below(100.0),
    ),
    check(
        "idle_rss_1000p_restarted",
        "rss_mib",
        "  same after restart",
        Unit::Mebibytes,
        Goal::Below(100.0),
    ),
    check(
        "restart",
        "ready_ms",
        "restart over existing log → Metadata",
        Unit::Millis,
        Goal::Below(2000.0),
    ),
    check(
        "restart",
        "log_mib",
        "  log size at restart",
        Unit::Mebibytes,
        Goal::None,
    ),
    check(
        "restart_unclean",
        "ready_ms",
        "restart after kill -9 → Metadata",
        Unit::Millis,
        Goal::Below(2000.0),
    ),
    check(
        "restart_unclean",
        "log_mib",
        "  log size at restart",
        Unit::Mebibytes,
        Goal::None,
    ),
    check(
        "startup_empty",
        "ready_ms",
        "start on an empty data dir → Metadata",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "loopback_tcp",
        "mb_per_s",
        "reference: loopback TCP",
        Unit::MegabytesPerSec,
        Goal::None,
    ),
    check(
        "page_cache_write",
        "mb_per_s",
        "reference: dd append to page cache, no sync",
        Unit::MegabytesPerSec,
        Goal::None,
    ),
    check(
        "page_cache_write",
        "cpu_s_per_gb",
        "  same, kernel CPU per GB appended",
        Unit::CpuSecondsPerGb,
        Goal::None,
    ),
    check(
        "disk_write",
        "mb_per_s",
        "reference: dd write, conv=fdatasync",
        Unit::MegabytesPerSec,
        Goal::None,
    ),
    check(
        "fsync",
        "p50_ms",
        "reference: 4 KiB append+fdatasync p50",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "fsync",
        "p99_ms",
        "reference: 4 KiB append+fdatasync p99",
        Unit::Millis,
        Goal::None,
    ),
    check(
        "fsync",
        "syncs_per_s",
        "reference: fdatasync per second",
        Unit::Count,
        Goal::None,
    ),
];

pub fn format_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::MsgsPerSec if v >= 1e6 => format!("{:.2} M msg/s", v / 1e6),
        Unit::MsgsPerSec => format!("{:.0} k msg/s", v / 1e3),
        Unit::MegabytesPerSec => format!("{v:.0} MB/s"),
        Unit::Millis => format!("{v:.2} ms"),
        Unit::Cores => format!("{v:.2} cores"),
        Unit::Mebibytes => format!("{v:.1} MiB"),
        Unit::Count => format!("{v:.0}"),
        Unit::CpuSecondsPerGb => format!("{v:.2} cpu-s/GB"),
        Unit::PerSecond if v >= 1e3 => format!("{:.1} k/s", v / 1e3),
        Unit::PerSecond => format!("{v:.0} /s"),
    }
}

fn format_goal(unit: Unit, goal: Goal) -> String {
    match goal {
        Goal::AtLeast(t) => format!(">= {}", format_value(unit, t)),
        Goal::Below(t) => format!("< {}", format_value(unit, t)),
        Goal::None => String::new(),
    }
}

/// PASS / MISS against the goal; empty for reference figures.
pub fn verdict(goal: Goal, v: f64) -> &'static str {
    match goal {
        Goal::AtLeast(t) if v >= t => "PASS",
        Goal::Below(t) if v < t => "PASS",
        Goal::None => "",
        _ => "MISS",
    }
}

/// Parses the results file; for a scenario run twice the last line wins.
pub fn parse(text: &str) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("results line {}", i + 1))?;
        if let Some(name) = v.get("scenario").and_then(Value::as_str) {
            out.insert(name.to_string(), v.clone());
        }
    }
    Ok(out)
}

pub fn render(results: &BTreeMap<String, Value>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<46} {:>16} {:>18} {:>6}",
        "figure", "measured", "target", ""
    );
    let _ = writeln!(s, "{}", "-".repeat(89));
    for c in CHECKS {
        let measured = match results.get(c.scenario) {
            None => None,
            Some(r) => match r.get("error").and_then(Value::as_str) {
                Some(e) => Some(Err(e.to_string())),
                None => r.get(c.metric).and_then(Value::as_f64).map(Ok),
            },
        };
        let goal = format_goal(c.unit, c.goal);
        let line = match measured {
            Some(Ok(v)) => format!(
                "{:<46} {:>16} {:>18} {:>6}",
                c.label,
                format_value(c.unit, v),
                goal,
                verdict(c.goal, v)
            ),
            Some(Err(e)) => {
                let mut e = e.replace('\n', " ");
                e.truncate(60);
                format!("{:<46} {:>16} {:>18} FAILED: {e}", c.label, "-", goal)
            }
            None => format!("{:<46} {:>16} {:>18} {:>6}", c.label, "not run", goal, ""),
        };
        let _ = writeln!(s, "{}", line.trim_end());
    }
    let busy: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| {
            let other = r.get("other_cores").and_then(Value::as_f64)?;
            (other > NOISY_OTHER_CORES).then(|| format!("{name} ({other:.2})"))
        })
        .collect();
    if !busy.is_empty() {
        let _ = writeln!(
            s,
            "warning: other processes used CPU during: {} cores; those figures understate kavka",
            busy.join(", ")
        );
    }
    s
}

/// Cores used by processes other than the broker and the load generator above which a
/// scenario's figures are flagged.
const NOISY_OTHER_CORES: f64 = 0.25;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(Goal::AtLeast(10.0), 10.0), "PASS");
        assert_eq!(verdict(Goal::AtLeast(10.0), 9.9), "MISS");
        assert_eq!(verdict(Goal::Below(5.0), 4.9), "PASS");
        assert_eq!(verdict(Goal::Below(5.0), 5.0), "MISS");
        assert_eq!(verdict(Goal::None, 1.0), "");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_value(Unit::MsgsPerSec, 1_523_000.0), "1.52 M msg/s");
        assert_eq!(format_value(Unit::MsgsPerSec, 950_000.0), "950 k msg/s");
        assert_eq!(format_value(Unit::Millis, 3.256), "3.26 ms");
    }

    #[test]
    fn render_pass_miss_failed_missing() {
        let text = r#"{"scenario":"produce_p1_acks1","msgs_per_s":1600000,"broker_cores":0.7}
{"scenario":"e2e_10k","error":"broker down"}
not json is an error only if non-empty
"#;
        assert!(parse(text).is_err());
        let text = r#"{"scenario":"produce_p1_acks1","msgs_per_s":1000,"broker_cores":0.7,"other_cores":0.9}

{"scenario":"produce_p1_acks1","msgs_per_s":1600000,"broker_cores":0.7,"other_cores":0.01}
{"scenario":"e2e_10k","error":"broker down"}
{"scenario":"e2e_100k","p99_ms":3.0,"other_cores":0.5}
"#;
        let r = parse(text).unwrap();
        let out = render(&r);
        let line = |label: &str| {
            out.lines()
                .find(|l| l.starts_with(label))
                .unwrap()
                .to_string()
        };
        assert!(line("produce 100 B, 1 part").ends_with("PASS"), "{out}");
        assert!(line("  same, broker CPU").ends_with("MISS"), "{out}");
        assert!(
            line("e2e 10k msgs/s linger 0: p99").contains("FAILED: broker down"),
            "{out}"
        );
        assert!(
            line("consume 1 M from beginning, 1 part").contains("not run"),
            "{out}"
        );
    }
}
