"""A broker-only node (`process.roles=broker`) beside a 3-voter quorum, as real processes: it
follows the metadata image from the active controller, forwards writes to it, takes a share of
new partitions at once, replicates like any broker, and comes back after kill -9.

Every wait is bounded.
"""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import Cluster, SequenceProducer, check_acknowledged

BROKER_ONLY = 4


@pytest.fixture
def cluster(request, tmp_path):
    c = Cluster(tmp_path / "cluster", 3, broker_only=1)
    try:
        c.start()
        yield c
    finally:
        died = c.unexpected_exits()
        c.stop_all()
        rep = getattr(request.node, "rep_call", None)
        if died or (rep is not None and rep.failed):
            print(c.log_tails(80))
        if died:
            pytest.fail("node(s) died during the test: " + ", ".join(str(n.node_id) for n in died))


def test_broker_only_node_joins_and_replicates(cluster, topic_name):
    c = cluster
    md = c.metadata()
    assert set(md.brokers) == {1, 2, 3, BROKER_ONLY}
    assert md.controller_id in (1, 2, 3), "only voters can be the active controller"

    # A topic created through the broker-only node (forwarded to the controller) spreads
    # over all four brokers, the new one included.
    admin = AdminClient({"bootstrap.servers": c.node(BROKER_ONLY).bootstrap})
    for f in admin.create_topics([NewTopic(topic_name, num_partitions=4, replication_factor=3)],
                                 operation_timeout=15, request_timeout=20).values():
        f.result(timeout=30)
    c.wait_for_full_isr(topic_name, timeout=30, partitions=4)
    hosting = [p for p in range(4) if BROKER_ONLY in c.replicas_of(topic_name, p)]
    assert hosting, "the broker-only node got no replica of a new 4-partition topic"
    c.wait_for_full_isr(topic_name, timeout=30)

    # acks=all through a partition the broker-only node replicates; then it is killed and
    # restarted, and catches up again.
    p = hosting[0]
    sp = SequenceProducer(c.bootstrap, topic_name, partition=p).start()
    try:
        sp.wait_acked(200, timeout=30, cluster=c)
        c.kill(BROKER_ONLY)
        sp.wait_acked(200, timeout=30, cluster=c)
        c.start_node(BROKER_ONLY)
        sp.wait_acked(200, timeout=30, cluster=c)
    finally:
        sp.stop()
    assert not sp.fatal, f"producer fatal error: {sp.fatal}"
    check_acknowledged(c.bootstrap, sp)
    c.wait_for_full_isr(topic_name, timeout=30)
    assert BROKER_ONLY in c.isr_of(topic_name, p)
