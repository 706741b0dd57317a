//! Small images for the unit tests of this module.

use uuid::Uuid;

use crate::image::{MetadataImage, PartitionImage};
use crate::record::{ConfigResource, MetadataRecord};

use super::partition_record;

/// The topic every helper creates.
pub(crate) const TOPIC: &str = "t";

/// Brokers `1..=brokers`, all live, and topic [`TOPIC`] whose partition `i` has the replicas
/// `partitions[i]`, all in sync, led by the first, epochs 0.
pub(crate) fn cluster(brokers: i32, partitions: &[&[i32]]) -> MetadataImage {
    let mut records: Vec<MetadataRecord> = (1..=brokers)
        .map(|node_id| MetadataRecord::RegisterBroker {
            node_id,
            host: "127.0.0.1".into(),
            port: 9000 + node_id as u16,
            rack: None,
            incarnation: Uuid::nil(),
        })
        .collect();
    let topic_id = Uuid::from_u128(0x7);
    records.push(MetadataRecord::Topic {
        name: TOPIC.into(),
        topic_id,
    });
    for (i, replicas) in partitions.iter().enumerate() {
        records.push(partition_record(
            topic_id,
            &PartitionImage {
                partition: i as i32,
                replicas: replicas.to_vec(),
                isr: replicas.to_vec(),
                leader: replicas.first().copied().unwrap_or(-1),
                leader_epoch: 0,
                partition_epoch: 0,
            },
        ));
    }
    MetadataImage::empty().apply(&records)
}

/// `image` with partition `index` of [`TOPIC`] replaced (every replica in sync).
pub(crate) fn set_partition(
    image: &MetadataImage,
    index: i32,
    replicas: &[i32],
    leader: i32,
    leader_epoch: i32,
    partition_epoch: i32,
) -> MetadataImage {
    let topic_id = image.topic(TOPIC).expect("topic").topic_id;
    image.apply(&[partition_record(
        topic_id,
        &PartitionImage {
            partition: index,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader,
            leader_epoch,
            partition_epoch,
        },
    )])
}

/// `image` with partition `index`'s ISR and leader replaced (epochs kept).
pub(crate) fn set_isr(
    image: &MetadataImage,
    index: i32,
    isr: &[i32],
    leader: i32,
) -> MetadataImage {
    let topic_id = image.topic(TOPIC).expect("topic").topic_id;
    let mut p = image
        .partition(&topic_id, index)
        .expect("partition")
        .clone();
    p.isr = isr.to_vec();
    p.leader = leader;
    image.apply(&[partition_record(topic_id, &p)])
}

/// `image` with a topic config of [`TOPIC`] set.
pub(crate) fn set_topic_config(image: &MetadataImage, name: &str, value: &str) -> MetadataImage {
    image.apply(&[MetadataRecord::Config {
        resource: ConfigResource::Topic(TOPIC.into()),
        name: name.into(),
        value: Some(value.into()),
    }])
}

/// Partition `index` of [`TOPIC`].
pub(crate) fn partition(image: &MetadataImage, index: i32) -> PartitionImage {
    let topic_id = image.topic(TOPIC).expect("topic").topic_id;
    image
        .partition(&topic_id, index)
        .expect("partition")
        .clone()
}
