//! `--reset-offsets`: where each partition's new offset lies, clamped to the log as Kafka
//! does, and the `--to-datetime` timestamp format.

use anyhow::{bail, Result};

/// How the new offsets are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetSpec {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the epoch.
    Datetime(i64),
    ShiftBy(i64),
    Current,
}

/// What is known of one partition when choosing its new offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub committed: Option<i64>,
    pub log_start: i64,
    pub log_end: i64,
    /// The first offset at or after the `--to-datetime` timestamp (the log end if none).
    pub by_time: Option<i64>,
}

/// The new offset of `topic`-`partition`, and a warning when the requested one lay outside
/// the log and was moved to its nearest end.
pub fn new_offset(
    spec: ResetSpec,
    topic: &str,
    partition: i32,
    o: &PartitionOffsets,
) -> Result<(i64, Option<String>)> {
    let requested = match spec {
        ResetSpec::Earliest => o.log_start,
        ResetSpec::Latest => o.log_end,
        ResetSpec::Offset(n) => n,
        ResetSpec::Datetime(_) => o.by_time.unwrap_or(o.log_end),
        ResetSpec::ShiftBy(n) => match o.committed {
            Some(c) => c.saturating_add(n),
            None => bail!(
                "cannot shift the offset of partition {topic}-{partition}: the group has no committed offset for it"
            ),
        },
        // No commit: the log end, as Kafka does.
        ResetSpec::Current => o.committed.unwrap_or(o.log_end),
    };
    let tp = format!("{topic}-{partition}");
    Ok(if requested < o.log_start {
        (
            o.log_start,
            Some(format!(
                "New offset ({requested}) is lower than earliest offset for topic partition {tp}. Value will be set to {}",
                o.log_start
            )),
        )
    } else if requested > o.log_end {
        (
            o.log_end,
            Some(format!(
                "New offset ({requested}) is higher than latest offset for topic partition {tp}. Value will be set to {}",
                o.log_end
            )),
        )
    } else {
        (requested, None)
    })
}

/// Parses `--by-duration`'s ISO-8601 duration, `PnDTnHnMn.nS` (each part optional, at
/// least one present), into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64> {
    let bad = || anyhow::anyhow!("invalid --by-duration '{s}': expected PnDTnHnMnS, e.g. PT1H30M");
    let rest = s
        .strip_prefix('P')
        .or_else(|| s.strip_prefix('p'))
        .ok_or_else(bad)?;
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) if !t.is_empty() => (d, t),
        Some(_) => return Err(bad()),
        None => (rest, ""),
    };
    let mut total: i64 = 0;
    let mut any = false;
    let mut add = |amount: f64, unit_ms: f64| -> Result<()> {
        let ms = amount * unit_ms;
        if !ms.is_finite() || ms > 1e15 {
            return Err(bad());
        }
        total = total.checked_add(ms.round() as i64).ok_or_else(bad)?;
        any = true;
        Ok(())
    };
    for (part, units) in [
        (date, &[('D', 86_400_000.0)][..]),
        (
            time,
            &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)][..],
        ),
    ] {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || (c == '.' && units.len() > 1) {
                number.push(c);
                continue;
            }
            let c = c.to_ascii_uppercase();
            let Some(i) = units.iter().position(|(u, _)| *u == c) else {
                return Err(bad());
            };
            // Units in order, each at most once, each with a number.
            if i < next_unit || number.is_empty() || (number.contains('.') && c != 'S') {
                return Err(bad());
            }
            let amount: f64 = number.parse().map_err(|_| bad())?;
            add(amount, units[i].1)?;
            number.clear();
            next_unit = i + 1;
        }
        if !number.is_empty() {
            return Err(bad());
        }
    }
    if !any {
        return Err(bad());
    }
    Ok(total)
}

/// Parses `--topic T` or `--topic T:0,1,2`.
pub fn parse_topic_spec(spec: &str) -> Result<(String, Option<Vec<i32>>)> {
    let (topic, partitions) = match spec.split_once(':') {
        None => (spec, None),
        Some((t, ps)) => {
            let mut parts = Vec::new();
            for p in ps.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match p.parse::<i32>() {
                    Ok(n) if n >= 0 => parts.push(n),
                    _ => bail!("invalid partition '{p}' in --topic '{spec}'"),
                }
            }
            if parts.is_empty() {
                bail!("--topic '{spec}' names no partitions after ':'");
            }
            parts.sort_unstable();
            parts.dedup();
            (t, Some(parts))
        }
    };
    if topic.trim().is_empty() {
        bail!("invalid --topic '{spec}': empty topic name");
    }
    Ok((topic.trim().to_string(), partitions))
}

/// Parses Kafka's `--to-datetime` format, `YYYY-MM-DDTHH:mm:SS.sss`, optionally followed
/// by `Z` or an offset (`+01:00`, `-0530`). Without an offset the time is taken as UTC
/// (Kafka uses the machine's zone; this tool has no zone database). The milliseconds may
/// be left out.
pub fn parse_datetime(s: &str) -> Result<i64> {
    let bad = || anyhow::anyhow!("invalid --to-datetime '{s}': expected YYYY-MM-DDTHH:mm:SS.sss");
    let (date, rest) = s.split_once('T').ok_or_else(bad)?;
    let (time, offset_minutes) = split_zone(rest).ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    let [year, month, day] = d.as_slice() else {
        return Err(bad());
    };
    let (hms, millis) = match time.split_once('.') {
        Some((hms, ms)) if !ms.is_empty() && ms.len() <= 3 => {
            let scale = 10i64.pow(3 - ms.len() as u32);
            (hms, number(ms).ok_or_else(bad)? * scale)
        }
        Some(_) => return Err(bad()),
        None => (time, 0),
    };
    let t: Vec<&str> = hms.split(':').collect();
    let [hour, minute, second] = t.as_slice() else {
        return Err(bad());
    };
    let (year, month, day) = (
        number(year).ok_or_else(bad)?,
        number(month).ok_or_else(bad)?,
        number(day).ok_or_else(bad)?,
    );
    let (hour, minute, second) = (
        number(hour).ok_or_else(bad)?,
        number(minute).ok_or_else(bad)?,
        number(second).ok_or_else(bad)?,
    );
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

/// Splits a trailing `Z` / `+HH:MM` / `-HHMM` zone from the time; minutes east of UTC.
fn split_zone(rest: &str) -> Option<(&str, i64)> {
    if let Some(time) = rest.strip_suffix('Z') {
        return Some((time, 0));
    }
    if let Some(i) = rest.rfind(['+', '-']) {
        let (time, zone) = rest.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hours = number(&digits[..2])?;
        let minutes = number(&digits[2..])?;
        if hours > 18 || minutes > 59 {
            return None;
        }
        return Some((time, sign * (hours * 60 + minutes)));
    }
    Some((rest, 0))
}

fn number(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: PartitionOffsets = PartitionOffsets {
        committed: Some(50),
        log_start: 10,
        log_end: 100,
        by_time: Some(40),
    };

    fn offset(spec: ResetSpec, o: &PartitionOffsets) -> (i64, bool) {
        let (n, warning) = new_offset(spec, "t", 0, o).unwrap();
        (n, warning.is_some())
    }

    #[test]
    fn specs_resolve_and_clamp_like_kafka() {
        assert_eq!(offset(ResetSpec::Earliest, &LOG), (10, false));
        assert_eq!(offset(ResetSpec::Latest, &LOG), (100, false));
        assert_eq!(offset(ResetSpec::Offset(70), &LOG), (70, false));
        assert_eq!(offset(ResetSpec::Offset(5), &LOG), (10, true));
        assert_eq!(offset(ResetSpec::Offset(500), &LOG), (100, true));
        assert_eq!(offset(ResetSpec::ShiftBy(-20), &LOG), (30, false));
        assert_eq!(offset(ResetSpec::ShiftBy(-45), &LOG), (10, true));
        assert_eq!(offset(ResetSpec::ShiftBy(60), &LOG), (100, true));
        assert_eq!(offset(ResetSpec::ShiftBy(i64::MAX), &LOG), (100, true));
        assert_eq!(offset(ResetSpec::Datetime(0), &LOG), (40, false));
        assert_eq!(offset(ResetSpec::Current, &LOG), (50, false));
        let uncommitted = PartitionOffsets {
            committed: None,
            by_time: None,
            ..LOG
        };
        assert_eq!(offset(ResetSpec::Current, &uncommitted), (100, false));
        assert_eq!(offset(ResetSpec::Datetime(0), &uncommitted), (100, false));
        let e = new_offset(ResetSpec::ShiftBy(1), "t", 3, &uncommitted).unwrap_err();
        assert!(e.to_string().contains("t-3"), "{e}");
        let (_, warning) = new_offset(ResetSpec::Offset(5), "t", 0, &LOG).unwrap();
        assert_eq!(
            warning.unwrap(),
            "New offset (5) is lower than earliest offset for topic partition t-0. Value will be set to 10"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT1H30M").unwrap(), 5_400_000);
        assert_eq!(parse_duration("P1DT1S").unwrap(), 86_401_000);
        assert_eq!(parse_duration("P2D").unwrap(), 172_800_000);
        assert_eq!(parse_duration("PT0.5S").unwrap(), 500);
        for bad in [
            "", "P", "PT", "1H", "PT1", "PT1M1H", "PT1H1H", "P1.5D", "PT1.5M", "PTH", "P1W",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_specs() {
        assert_eq!(parse_topic_spec("t").unwrap(), ("t".to_string(), None));
        assert_eq!(
            parse_topic_spec("t:2,0,2").unwrap(),
            ("t".to_string(), Some(vec![0, 2]))
        );
        for bad in ["", ":1", "t:", "t:x", "t:-1"] {
            assert!(parse_topic_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00.000").unwrap(), 0);
        assert_eq!(
            parse_datetime("2021-03-04T05:06:07.089").unwrap(),
            1_614_834_367_089
        );
        assert_eq!(
            parse_datetime("2021-03-04T05:06:07.089Z").unwrap(),
            1_614_834_367_089
        );
        assert_eq!(
            parse_datetime("2021-03-04T06:06:07.089+01:00").unwrap(),
            1_614_834_367_089
        );
        assert_eq!(
            parse_datetime("2021-03-04T00:06:07.089-0500").unwrap(),
            1_614_834_367_089
        );
        assert_eq!(
            parse_datetime("2021-03-04T05:06:07").unwrap(),
            1_614_834_367_000
        );
        assert_eq!(
            parse_datetime("2024-02-29T00:00:00.5").unwrap(),
            1_709_164_800_500
        );
        for bad in [
            "2021-03-04",
            "2021-13-04T00:00:00.000",
            "2023-02-29T00:00:00.000",
            "2021-03-04T24:00:00.000",
            "2021-03-04T05:06:07.0891",
            "2021-03-04T05:06:07.089+1",
            "x-03-04T05:06:07.000",
            "2021-03-04T05:06",
            // Four bytes of zone, but not four digits: must not slice inside the 'é'.
            "2021-03-04T05:06:07+1é2",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }
}
