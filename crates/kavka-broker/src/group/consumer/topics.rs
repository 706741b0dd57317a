//! What the coordinator knows about topics: the group reads names, ids and partition counts
//! through `TopicResolver`, so it stays independent of the metadata image's types.

use uuid::Uuid;

/// One topic as the metadata image describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
}

/// What the coordinator knows about topics (from the metadata image).
pub trait TopicResolver {
    fn by_name(&self, name: &str) -> Option<TopicInfo>;
    fn by_id(&self, id: Uuid) -> Option<TopicInfo>;
    /// Every topic name, for regular-expression subscriptions.
    fn names(&self) -> Vec<String>;
}
