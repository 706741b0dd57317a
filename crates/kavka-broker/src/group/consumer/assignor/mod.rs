//! Server-side assignors: from the members' subscriptions and the subscribed topics' partition
//! counts to a target assignment. Pure functions of their input; the input's previous target
//! assignment lets them be sticky.

mod range;
mod uniform;

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::assignment::Assignment;

/// One member as an assignor sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSpec {
    /// Ids of the existing topics the member subscribes to.
    pub subscribed: BTreeSet<Uuid>,
    /// The member's previous target assignment, which a sticky assignor keeps where it can.
    pub current: Assignment,
}

/// An assignor's whole input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentSpec {
    /// Members by member id.
    pub members: BTreeMap<String, MemberSpec>,
    /// Partition count of every subscribed topic by id.
    pub topics: BTreeMap<Uuid, i32>,
}

impl AssignmentSpec {
    /// Number of partitions of `topic` (0 when unknown or negative).
    fn partitions(&self, topic: Uuid) -> i32 {
        self.topics.get(&topic).copied().unwrap_or(0).max(0)
    }
}

/// The server-side assignors a member may name in `server_assignor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerAssignor {
    /// Balanced and sticky, for homogeneous and heterogeneous subscriptions (Kafka's default).
    Uniform,
    /// Per topic, contiguous ranges over the subscribed members sorted by member id, so
    /// co-partitioned topics land together.
    Range,
}

impl ServerAssignor {
    /// Kafka's name for it, as sent in `server_assignor` and shown by ConsumerGroupDescribe.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Range => "range",
        }
    }

    /// The assignor called `name`, if kavka has one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "uniform" => Some(Self::Uniform),
            "range" => Some(Self::Range),
            _ => None,
        }
    }

    /// The target assignment: one entry per member of `spec` (possibly empty). A partition is
    /// given to at most one member, and only to a member subscribed to its topic.
    pub fn assign(self, spec: &AssignmentSpec) -> BTreeMap<String, Assignment> {
        let result = match self {
            Self::Uniform => uniform::assign(spec),
            Self::Range => range::assign(spec),
        };
        debug_assert!(is_valid(spec, &result));
        result
    }
}

/// Every member present, each partition at most once, only to subscribers, within range.
fn is_valid(spec: &AssignmentSpec, result: &BTreeMap<String, Assignment>) -> bool {
    let mut seen = BTreeSet::new();
    result.len() == spec.members.len()
        && result.iter().all(|(id, assignment)| {
            let Some(member) = spec.members.get(id) else {
                return false;
            };
            assignment.iter().all(|(topic, partitions)| {
                member.subscribed.contains(topic)
                    && !partitions.is_empty()
                    && partitions.iter().all(|p| {
                        *p >= 0 && *p < spec.partitions(*topic) && seen.insert((*topic, *p))
                    })
            })
        })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A topic id that is easy to read in failures.
    pub fn topic(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    pub fn spec(topics: &[(u8, i32)], members: &[(&str, &[u8])]) -> AssignmentSpec {
        AssignmentSpec {
            members: members
                .iter()
                .map(|(id, subs)| {
                    let subscribed = subs.iter().map(|t| topic(*t)).collect();
                    (
                        id.to_string(),
                        MemberSpec {
                            subscribed,
                            current: Assignment::new(),
                        },
                    )
                })
                .collect(),
            topics: topics.iter().map(|(t, n)| (topic(*t), *n)).collect(),
        }
    }

    /// Feeds a result back as the members' current assignment, as the coordinator does.
    pub fn with_current(
        mut spec: AssignmentSpec,
        result: &BTreeMap<String, Assignment>,
    ) -> AssignmentSpec {
        for (id, member) in spec.members.iter_mut() {
            member.current = result.get(id).cloned().unwrap_or_default();
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in [ServerAssignor::Uniform, ServerAssignor::Range] {
            assert_eq!(ServerAssignor::from_name(a.name()), Some(a));
        }
        assert_eq!(ServerAssignor::from_name("sticky"), None);
    }
}
