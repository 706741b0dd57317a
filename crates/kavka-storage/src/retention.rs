//! Which old segments retention removes (Kafka's `deleteOldSegments`): by time
//! (`retention.ms` against each segment's largest timestamp), by size (`retention.bytes`
//! against the whole log) and by the log start offset (segments wholly below it). Only a
//! prefix of the log is ever deleted; the decision is pure so it is tested on its own.

use crate::LogConfig;

#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentStat {
    pub size: u64,
    /// Largest timestamp in the segment (the file's mtime when it has none).
    pub largest_timestamp: i64,
    /// Base offset of the following segment; `None` for the active segment.
    pub next_base_offset: Option<i64>,
}

/// Why segments are deleted, for logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Breach {
    None,
    Time,
    Size,
    LogStartOffset,
}

/// How many leading segments to delete, and the main reason. A count equal to the number of
/// segments means the active segment goes too: the caller must roll a new one first.
pub(crate) fn segments_to_delete(
    stats: &[SegmentStat],
    config: &LogConfig,
    now_ms: i64,
    log_start_offset: i64,
) -> (usize, Breach) {
    let deletable = |s: &SegmentStat| !(s.next_base_offset.is_none() && s.size == 0);
    let prefix = |pred: &mut dyn FnMut(&SegmentStat) -> bool| {
        stats.iter().take_while(|s| deletable(s) && pred(s)).count()
    };

    let by_time = if config.retention_ms >= 0 {
        prefix(&mut |s| now_ms.saturating_sub(s.largest_timestamp) > config.retention_ms)
    } else {
        0
    };
    let by_size = if config.retention_bytes >= 0 {
        let total: u64 = stats.iter().map(|s| s.size).sum();
        let mut diff = total as i128 - i128::from(config.retention_bytes);
        prefix(&mut |s| {
            if diff - s.size as i128 >= 0 {
                diff -= s.size as i128;
                true
            } else {
                false
            }
        })
    } else {
        0
    };
    let by_start = prefix(&mut |s| {
        s.next_base_offset
            .is_some_and(|next| next <= log_start_offset)
    });

    let count = by_time.max(by_size).max(by_start);
    let breach = if count == 0 {
        Breach::None
    } else if count == by_time {
        Breach::Time
    } else if count == by_size {
        Breach::Size
    } else {
        Breach::LogStartOffset
    };
    (count, breach)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(size: u64, ts: i64, next: Option<i64>) -> SegmentStat {
        SegmentStat {
            size,
            largest_timestamp: ts,
            next_base_offset: next,
        }
    }

    #[test]
    fn time_size_and_start_offset() {
        let cfg = LogConfig {
            retention_ms: 100,
            retention_bytes: -1,
            ..LogConfig::default()
        };
        let stats = [
            seg(10, 0, Some(5)),
            seg(10, 50, Some(9)),
            seg(10, 500, None),
        ];
        assert_eq!(segments_to_delete(&stats, &cfg, 200, 0), (2, Breach::Time));
        assert_eq!(
            segments_to_delete(&stats, &cfg, 10_000, 0),
            (3, Breach::Time)
        );
        let cfg = LogConfig {
            retention_ms: -1,
            retention_bytes: 15,
            ..LogConfig::default()
        };
        assert_eq!(segments_to_delete(&stats, &cfg, 0, 0), (1, Breach::Size));
        let cfg = LogConfig {
            retention_ms: -1,
            retention_bytes: -1,
            ..LogConfig::default()
        };
        assert_eq!(
            segments_to_delete(&stats, &cfg, 0, 9),
            (2, Breach::LogStartOffset)
        );
        assert_eq!(
            segments_to_delete(&stats, &cfg, 0, 100),
            (2, Breach::LogStartOffset)
        );
    }

    #[test]
    fn never_deletes_an_empty_active_segment() {
        let cfg = LogConfig {
            retention_ms: 0,
            retention_bytes: 0,
            ..LogConfig::default()
        };
        let stats = [seg(0, -1, None)];
        assert_eq!(segments_to_delete(&stats, &cfg, 1_000, 0).0, 0);
    }
}
