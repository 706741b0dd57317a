//! `--describe`: a group's offsets and lag per partition (the default), its members
//! (`--members`) or its state (`--state`), laid out as kafka-consumer-groups.sh does.

use std::collections::{BTreeMap, BTreeSet};

use kavka_client::{GroupDescription, OffsetAndMetadata, TopicPartition};

use super::table::{or_dash, render};

/// What `--describe` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescribeMode {
    Offsets,
    Members { verbose: bool },
    State,
}

/// One row of the offsets table. A member without partitions has a row with no topic;
/// a partition with a commit but no owner has no consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRow {
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub current_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    pub consumer_id: Option<String>,
    pub host: Option<String>,
    pub client_id: Option<String>,
}

impl OffsetRow {
    /// LEO - committed, when both are known.
    pub fn lag(&self) -> Option<i64> {
        match (self.current_offset, self.log_end_offset) {
            (Some(c), Some(e)) => Some(e.saturating_sub(c).max(0)),
            _ => None,
        }
    }
}

/// Every partition a member owns or the group has committed, then members that own
/// nothing. Owned partitions come first (by member, topic, partition), then unowned
/// committed ones, like Kafka.
pub fn offset_rows(
    group: &GroupDescription,
    committed: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    log_end: &BTreeMap<TopicPartition, i64>,
) -> Vec<OffsetRow> {
    let mut rows = Vec::new();
    let mut owned: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut idle = Vec::new();
    for m in &group.members {
        if m.assignment.values().all(|p| p.is_empty()) {
            idle.push(m);
            continue;
        }
        for (topic, partitions) in &m.assignment {
            for p in partitions {
                let tp = (topic.clone(), *p);
                rows.push(OffsetRow {
                    topic: Some(topic.clone()),
                    partition: Some(*p),
                    current_offset: committed.get(&tp).map(|o| o.offset),
                    log_end_offset: log_end.get(&tp).copied(),
                    consumer_id: Some(m.member_id.clone()),
                    host: Some(m.host.clone()),
                    client_id: Some(m.client_id.clone()),
                });
                owned.insert(tp);
            }
        }
    }
    for (tp, o) in committed {
        if owned.contains(tp) {
            continue;
        }
        rows.push(OffsetRow {
            topic: Some(tp.0.clone()),
            partition: Some(tp.1),
            current_offset: Some(o.offset),
            log_end_offset: log_end.get(tp).copied(),
            consumer_id: None,
            host: None,
            client_id: None,
        });
    }
    for m in idle {
        rows.push(OffsetRow {
            topic: None,
            partition: None,
            current_offset: None,
            log_end_offset: None,
            consumer_id: Some(m.member_id.clone()),
            host: Some(m.host.clone()),
            client_id: Some(m.client_id.clone()),
        });
    }
    rows
}

/// The partitions whose log end offset the offsets table needs.
pub fn partitions_needing_log_end(
    group: &GroupDescription,
    committed: &BTreeMap<TopicPartition, OffsetAndMetadata>,
) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for m in &group.members {
        for (t, parts) in &m.assignment {
            out.entry(t.clone()).or_default().extend(parts);
        }
    }
    for (t, p) in committed.keys() {
        out.entry(t.clone()).or_default().insert(*p);
    }
    out.into_iter()
        .map(|(t, ps)| (t, ps.into_iter().collect()))
        .collect()
}

/// The offsets table of one group (a blank line, the header, the rows).
pub fn format_offsets(group: &str, rows: &[OffsetRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                group.to_string(),
                or_dash(r.topic.clone()),
                or_dash(r.partition),
                or_dash(r.current_offset),
                or_dash(r.log_end_offset),
                or_dash(r.lag()),
                or_dash(r.consumer_id.clone()),
                or_dash(r.host.clone()),
                or_dash(r.client_id.clone()),
            ]
        })
        .collect();
    let header = [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ];
    format!(
        "\n{}",
        render(&header, &cells, &[15, 15, 10, 15, 15, 15, 15, 15, 0])
    )
}

/// The members table of one group; `verbose` adds each member's assignment.
pub fn format_members(group: &GroupDescription, verbose: bool) -> String {
    let cells: Vec<Vec<String>> = group
        .members
        .iter()
        .map(|m| {
            let count: usize = m.assignment.values().map(Vec::len).sum();
            let mut row = vec![
                group.group_id.clone(),
                m.member_id.clone(),
                or_dash(m.group_instance_id.clone()),
                m.host.clone(),
                m.client_id.clone(),
                count.to_string(),
            ];
            if verbose {
                let assignment: Vec<String> = m
                    .assignment
                    .iter()
                    .filter(|(_, ps)| !ps.is_empty())
                    .map(|(t, ps)| {
                        let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                        format!("{t}({})", ps.join(","))
                    })
                    .collect();
                row.push(if assignment.is_empty() {
                    "-".to_string()
                } else {
                    assignment.join(", ")
                });
            }
            row
        })
        .collect();
    let mut header = vec![
        "GROUP",
        "CONSUMER-ID",
        "GROUP-INSTANCE-ID",
        "HOST",
        "CLIENT-ID",
        "#PARTITIONS",
    ];
    let mut min = vec![15, 15, 17, 15, 15, 11];
    if verbose {
        header.push("ASSIGNMENT");
        min.push(0);
    }
    format!("\n{}", render(&header, &cells, &min))
}

/// The state line of one group.
pub fn format_state(group: &GroupDescription) -> String {
    let c = &group.coordinator;
    let coordinator = format!("{}  ({})", c.addr(), c.node_id);
    let assignor = if group.assignor.is_empty() {
        "-".to_string()
    } else {
        group.assignor.clone()
    };
    let cells = vec![vec![
        group.group_id.clone(),
        coordinator,
        assignor,
        group.state.clone(),
        group.members.len().to_string(),
    ]];
    let header = [
        "GROUP",
        "COORDINATOR (ID)",
        "ASSIGNMENT-STRATEGY",
        "STATE",
        "#MEMBERS",
    ];
    format!("\n{}", render(&header, &cells, &[15, 25, 20, 20, 0]))
}

/// What Kafka says on stderr about a group's state before its table (or instead of it).
pub fn state_notice(group: &str, state: &str) -> Option<String> {
    match state {
        "Empty" => Some(format!("\nConsumer group '{group}' has no active members.")),
        "PreparingRebalance" | "CompletingRebalance" | "Assigning" | "Reconciling" => Some(
            format!("\nWarning: Consumer group '{group}' is rebalancing."),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kavka_client::cluster::BrokerMetadata;
    use kavka_client::MemberDescription;

    fn group() -> GroupDescription {
        let member = |id: &str, parts: &[i32]| MemberDescription {
            member_id: id.into(),
            group_instance_id: None,
            client_id: format!("client-{id}"),
            host: "/127.0.0.1".into(),
            assignment: if parts.is_empty() {
                BTreeMap::new()
            } else {
                [("t".to_string(), parts.to_vec())].into()
            },
        };
        GroupDescription {
            group_id: "g".into(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            assignor: "range".into(),
            members: vec![member("m1", &[0, 1]), member("m2", &[])],
            coordinator: BrokerMetadata {
                node_id: 1,
                host: "localhost".into(),
                port: 9092,
                rack: None,
            },
            is_classic: true,
        }
    }

    #[test]
    fn rows_cover_owned_unowned_and_idle() {
        let committed: BTreeMap<TopicPartition, OffsetAndMetadata> = [
            (("t".to_string(), 0), OffsetAndMetadata::new(5)),
            (("t".to_string(), 2), OffsetAndMetadata::new(7)),
        ]
        .into();
        let log_end: BTreeMap<TopicPartition, i64> = [
            (("t".to_string(), 0), 10),
            (("t".to_string(), 1), 4),
            (("t".to_string(), 2), 7),
        ]
        .into();
        let g = group();
        assert_eq!(partitions_needing_log_end(&g, &committed)["t"], [0, 1, 2]);
        let rows = offset_rows(&g, &committed, &log_end);
        assert_eq!(rows.len(), 4);
        assert_eq!((rows[0].partition, rows[0].lag()), (Some(0), Some(5)));
        assert_eq!((rows[1].partition, rows[1].lag()), (Some(1), None));
        assert_eq!(rows[2].consumer_id, None, "committed but unowned");
        assert_eq!(rows[2].lag(), Some(0));
        assert_eq!(rows[3].topic, None, "idle member last");

        let out = format_offsets("g", &rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "");
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID"
            ]
        );
        let row = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            row(2),
            [
                "g",
                "t",
                "0",
                "5",
                "10",
                "5",
                "m1",
                "/127.0.0.1",
                "client-m1"
            ]
        );
        assert_eq!(
            row(3),
            [
                "g",
                "t",
                "1",
                "-",
                "4",
                "-",
                "m1",
                "/127.0.0.1",
                "client-m1"
            ]
        );
        assert_eq!(row(4), ["g", "t", "2", "7", "7", "0", "-", "-", "-"]);
        assert_eq!(
            row(5),
            [
                "g",
                "-",
                "-",
                "-",
                "-",
                "-",
                "m2",
                "/127.0.0.1",
                "client-m2"
            ]
        );
        // Columns line up: every row's LAG starts where the header's does.
        let col = lines[1].find("LAG").unwrap();
        assert_eq!(&lines[2][col..col + 1], "5");
    }

    #[test]
    fn members_and_state_tables() {
        let g = group();
        let out = format_members(&g, true);
        let lines: Vec<&str> = out.lines().collect();
        let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            words(1),
            [
                "GROUP",
                "CONSUMER-ID",
                "GROUP-INSTANCE-ID",
                "HOST",
                "CLIENT-ID",
                "#PARTITIONS",
                "ASSIGNMENT"
            ]
        );
        assert_eq!(
            words(2),
            ["g", "m1", "-", "/127.0.0.1", "client-m1", "2", "t(0,1)"]
        );
        assert_eq!(
            words(3),
            ["g", "m2", "-", "/127.0.0.1", "client-m2", "0", "-"]
        );
        let out = format_state(&g);
        let row: Vec<&str> = out.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(row, ["g", "localhost:9092", "(1)", "range", "Stable", "2"]);
        assert_eq!(
            state_notice("g", "Empty").as_deref(),
            Some("\nConsumer group 'g' has no active members.")
        );
        assert!(state_notice("g", "Stable").is_none());
    }
}
