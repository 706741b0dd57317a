"""Transactions on a 3-node cluster (cluster.py: real processes, RF=3, min.insync.replicas=2):

- a transaction over partitions led by three different brokers commits and aborts with a
  marker on each (read_committed / read_uncommitted as on one broker);
- consume-transform-produce with send_offsets_to_transaction processes 100k records into
  exactly 100k outputs across a kill -9 of the transaction coordinator's broker (found with
  FindCoordinator key_type=1): the coordinator moves with its __transaction_state partition's
  leadership and the application recovers as Kafka documents.

Failure detection is tuned down (cluster.FAST_FAILOVER_PROPS); every wait is bounded; a
failure prints every node's log tail.
"""

from __future__ import annotations

import time

import pytest

from cluster import Cluster
from txn_app import (
    TXN_BROKER_PROPS,
    TransformApp,
    check_transformed,
    CTP_PARTITIONS,
    CTP_RECORDS,
    committed_offsets,
    discard_producer,
    produce_inputs,
    read_values,
    txn_producer,
    wait_coordinator,
)

CLUSTER_PROPS = {
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
    "offsets.topic.num.partitions": 4,
    "transaction.state.log.replication.factor": 3,
    "transaction.state.log.min.isr": 2,
    **TXN_BROKER_PROPS,
}


@pytest.fixture
def txn_cluster(request, tmp_path):
    c = Cluster(tmp_path / "cluster", 3, CLUSTER_PROPS)
    try:
        c.start()
        yield c
    finally:
        died = c.unexpected_exits()
        c.stop_all()
        rep = getattr(request.node, "rep_call", None)
        if died:
            pytest.fail("node(s) died during the test: "
                        + ", ".join(f"{n.node_id} (exit {n.proc.returncode})" for n in died)
                        + "\n" + c.log_tails(80))
        if rep is not None and rep.failed:
            print(c.log_tails(80))


def test_transaction_across_three_leaders_commit_and_abort(txn_cluster, topic_name):
    c = txn_cluster
    # One partition led by each node: the markers go to three brokers.
    c.create_topic(topic_name, replica_assignment=[[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    p = txn_producer(c.bootstrap, f"{topic_name}-t", **{"socket.timeout.ms": 5000})
    p.init_transactions(30)
    committed = {i: [] for i in range(3)}
    everything = {i: [] for i in range(3)}
    for k, keep in enumerate((True, False, True)):
        p.begin_transaction()
        for i in range(30):
            part = i % 3
            v = b"t%d-%02d" % (k, i)
            p.produce(topic_name, value=v, partition=part)
            everything[part].append(v)
            if keep:
                committed[part].append(v)
        if keep:
            p.commit_transaction(30)
        else:
            p.flush(30)
            p.abort_transaction(30)
    discard_producer(p)
    rc = read_values(c.bootstrap, topic_name, 3, "read_committed", expect=60)
    assert rc == committed, f"read_committed: {rc}"
    ru = read_values(c.bootstrap, topic_name, 3, "read_uncommitted", expect=90)
    assert ru == everything, f"read_uncommitted: {ru}"


@pytest.mark.timeout(240)
def test_consume_transform_produce_100k_across_kill9_of_coordinator(txn_cluster, topic_name):
    c = txn_cluster
    in_topic, out_topic = f"{topic_name}-in", f"{topic_name}-out"
    c.create_topic(in_topic, partitions=CTP_PARTITIONS)
    c.create_topic(out_topic, partitions=CTP_PARTITIONS)
    inputs = produce_inputs(c.bootstrap, in_topic, CTP_PARTITIONS, CTP_RECORDS)
    group = f"g-{topic_name}"
    tid = f"{topic_name}-ctp"
    app = TransformApp(c.bootstrap, in_topic, out_topic, CTP_PARTITIONS, group, tid, txn_records=2500)
    killed: list[tuple[int, int, float]] = []

    def hook(a: TransformApp, txn: int) -> None:
        if not killed and sum(a.committed) >= CTP_RECORDS * 2 // 5:
            node, _ = wait_coordinator(c.bootstrap, tid)
            c.kill(node)  # kill -9, in the middle of this transaction
            killed.append((node, txn, time.monotonic()))

    try:
        app.run(CTP_RECORDS, timeout=150, hook=hook)
    except AssertionError as e:
        raise AssertionError(f"{e}\nkilled (node, txn): {[(n, t) for n, t, _ in killed]}") from None
    assert killed, "the coordinator was never killed"
    node = killed[0][0]
    moved, _ = wait_coordinator(",".join(n.bootstrap for n in c.responsive()), tid)
    assert moved != node, f"the coordinator is still the killed node {node}"
    check_transformed(c.bootstrap, in_topic, out_topic, CTP_PARTITIONS, inputs, timeout=90)
    assert committed_offsets(c.bootstrap, group, in_topic, CTP_PARTITIONS) == [len(inputs[p]) for p in range(CTP_PARTITIONS)]

    # The killed node comes back and catches up; the output is unchanged.
    c.start_node(node)
    c.wait_for_full_isr(timeout=60)
    print(f"coordinator {node} killed at txn {killed[0][1]}, moved to {moved}; commits {app.commits}, "
          f"aborts {app.aborts}, producers {app.new_producers}, commit retries {app.commit_retries}, stuck calls {app.stuck_calls}; "
          f"events {app.events}")
