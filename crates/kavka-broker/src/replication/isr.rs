//! The leader's side of ISR management: the replication settings of a topic, sending the
//! ISR changes the leader state proposes to the controller (AlterPartition), and the periodic
//! task that shrinks the ISR of lagging followers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::partition::{AlterPartitionTicket, Partition};
use crate::replica_manager::now_ms;
use crate::replication::{AlterPartitionError, AlterPartitionResponse, ReplicationConfig};
use kavka_metadata::MetadataImage;

const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// A partition's replication settings: `min.insync.replicas` from the topic config, else the
/// broker's, else 1; `replica.lag.time.max.ms` from the broker.
pub fn replication_config_for_topic(
    broker: &BrokerConfig,
    topic_configs: &BTreeMap<String, String>,
) -> ReplicationConfig {
    let parse = |v: &String| v.trim().parse::<i32>().ok().filter(|n| *n >= 1);
    let min_insync_replicas = topic_configs
        .get(MIN_INSYNC_REPLICAS)
        .and_then(parse)
        .or_else(|| broker.props.get(MIN_INSYNC_REPLICAS).and_then(parse))
        .unwrap_or(1);
    ReplicationConfig {
        min_insync_replicas,
        replica_lag_time_max_ms: broker.replication.replica_lag_time_max_ms.max(0),
    }
}

/// Sends one AlterPartition to the controller and turns its answer into the leader state's
/// terms. Blocking (the controller may forward it over the network): run it on a blocking
/// thread.
fn alter_partition_blocking(
    broker: &Broker,
    part: &Partition,
    ticket: &AlterPartitionTicket,
) -> AlterPartitionResponse {
    let p = &ticket.proposal;
    let req = kavka_metadata::AlterPartitionRequest {
        broker_id: broker.node_id(),
        topic_id: part.topic_id,
        partition: part.index,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: p.new_isr.iter().copied().collect(),
    };
    match broker.controller.alter_partition(req) {
        Ok(image) => AlterPartitionResponse::Accepted {
            proposal_id: p.id,
            leader_epoch: image.leader_epoch,
            partition_epoch: image.partition_epoch,
            isr: image.isr.iter().copied().collect(),
        },
        Err(e) => {
            tracing::info!(topic = %part.topic, partition = part.index, "AlterPartition {:?} refused: {e}", p.change);
            AlterPartitionResponse::Rejected {
                proposal_id: p.id,
                error: AlterPartitionError::from_code(e.code()),
            }
        }
    }
}

/// Sends the partition's pending AlterPartition, if any and none is in flight, without
/// waiting: the answer is fed back into the leader state when it arrives.
pub fn send_pending_alter_partition(broker: &Arc<Broker>, part: &Arc<Partition>) {
    let Some(ticket) = part.take_alter_partition() else {
        return;
    };
    let broker = broker.clone();
    let part = part.clone();
    tokio::spawn(async move {
        let b = broker.clone();
        let p = part.clone();
        let t = ticket.clone();
        let response =
            match tokio::task::spawn_blocking(move || alter_partition_blocking(&b, &p, &t)).await {
                Ok(r) => r,
                // The call panicked: retry it like a transport failure.
                Err(_) => AlterPartitionResponse::Rejected {
                    proposal_id: ticket.proposal.id,
                    error: AlterPartitionError::Retriable,
                },
            };
        part.complete_alter_partition(ticket.generation, response, now_ms());
        // A transient failure (controller moving, timeout) is resent after the pause, unless
        // a follower's fetch sends it first.
        if let Some(delay) = part.alter_partition_retry_delay() {
            tokio::time::sleep(delay).await;
            send_pending_alter_partition(&broker, &part);
        }
    });
}

/// The brokers among `part`'s replicas that may not join its ISR: fenced, or not registered
/// (KIP-841). The controller would refuse them with INELIGIBLE_REPLICA.
pub fn ineligible_replicas(image: &MetadataImage, part: &Partition) -> BTreeSet<i32> {
    image
        .partition(&part.topic_id, part.index)
        .map(|p| {
            p.replicas
                .iter()
                .copied()
                .filter(|&id| !image.is_live_broker(id))
                .collect()
        })
        .unwrap_or_default()
}

/// The ISR expiration task (Kafka's `isr-expiration`): every half `replica.lag.time.max.ms`,
/// each partition this broker leads drops followers that stopped catching up, and any
/// AlterPartition left to send (a transient failure to resend) goes out. Runs until `stop`
/// turns true or its sender is dropped.
pub async fn run_isr_maintenance(
    broker: Arc<Broker>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let period_ms = (broker.config.replication.replica_lag_time_max_ms / 2).clamp(10, 60_000);
    let mut ticker = tokio::time::interval(Duration::from_millis(period_ms as u64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        }
        if *stop.borrow() {
            return;
        }
        let now = now_ms();
        let image = broker.controller.image();
        for part in broker.replicas.all() {
            if !part.is_leader() {
                continue;
            }
            part.set_ineligible_replicas(ineligible_replicas(&image, &part));
            if part.maybe_shrink_isr(now) {
                send_pending_alter_partition(&broker, &part);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_insync_replicas_comes_from_the_topic_then_the_broker_then_one() {
        let (mut broker, _) = BrokerConfig::from_properties("", &[]).expect("defaults");
        broker.replication.replica_lag_time_max_ms = 12_000;
        let none = BTreeMap::new();
        assert_eq!(
            replication_config_for_topic(&broker, &none),
            ReplicationConfig {
                min_insync_replicas: 1,
                replica_lag_time_max_ms: 12_000
            }
        );
        broker
            .props
            .insert(MIN_INSYNC_REPLICAS.to_string(), "2".to_string());
        assert_eq!(
            replication_config_for_topic(&broker, &none).min_insync_replicas,
            2
        );
        let topic = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), "3".to_string())]);
        assert_eq!(
            replication_config_for_topic(&broker, &topic).min_insync_replicas,
            3
        );
        // A value that is not a positive integer falls back to the next source.
        let bad = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), "0".to_string())]);
        assert_eq!(
            replication_config_for_topic(&broker, &bad).min_insync_replicas,
            2
        );
    }
}
