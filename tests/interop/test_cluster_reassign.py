"""Scaling a 3-node cluster without downtime, as real processes (cluster.py), through the CLI:
`kavka reassign-partitions` moves a partition that holds data from one broker to another while
an acks=all producer keeps writing (KIP-455), and `kavka leader-election` puts leadership back
on the preferred replica after a leader was killed and restarted (KIP-460). The same APIs are
also driven by other clients: kafka-python (AlterPartitionReassignments,
ListPartitionReassignments) and librdkafka (ElectLeaders).

Every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import ElectionType, TopicPartition
from kafka import KafkaAdminClient
from kafka import TopicPartition as KpTopicPartition

from cluster import KAVKA_BIN, Cluster, ClusterError, SequenceProducer, check_acknowledged

CLI_TIMEOUT_S = 60


@pytest.fixture
def make_cluster(request, tmp_path):
    """Starts clusters on demand; every one is stopped at the end, its logs printed on failure."""
    made: list[Cluster] = []

    def make(n: int = 3, **extra) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(made)}", n, extra)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        died = c.unexpected_exits()
        c.stop_all()
        rep = getattr(request.node, "rep_call", None)
        if died:
            pytest.fail("node(s) died during the test: "
                        + ", ".join(f"{n.node_id} (exit {n.proc.returncode})" for n in died)
                        + "\n" + c.log_tails(80))
        if rep is not None and rep.failed:
            print(c.log_tails(80))


def kavka(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(KAVKA_BIN), *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    if check and r.returncode != 0:
        raise ClusterError(f"kavka {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def partition_dirs(data_dir: Path, topic: str, partition: int) -> list[str]:
    """The directories of the partition's log under a node's log dir (Kafka's `<topic>-<n>`, and
    any renamed-for-deletion form of it)."""
    if not data_dir.is_dir():
        return []
    prefix = f"{topic}-{partition}"
    return [p.name for p in data_dir.iterdir()
            if p.is_dir() and (p.name == prefix or p.name.startswith(prefix + "."))]


def test_reassign_partition_with_data_while_producing(make_cluster, tmp_path):
    c = make_cluster(3)
    topic = "moving"
    # RF=1: acks=all is satisfied by the one replica (the cluster default is min.insync=2).
    c.create_topic(topic, partitions=1, replication_factor=1, config={"min.insync.replicas": "1"})
    [source] = c.replicas_of(topic)
    target = next(i for i in sorted(c.nodes) if i != source)
    c.wait_for(f"node {source} to open its log of {topic}-0",
               lambda: partition_dirs(c.node(source).data_dir, topic, 0), timeout=15)

    sp = SequenceProducer(c.bootstrap, topic, rate=200.0).start()
    try:
        sp.wait_acked(300, cluster=c)

        plan = tmp_path / "reassign.json"
        plan.write_text(json.dumps(
            {"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": [target]}]}))
        out = kavka("reassign-partitions", "--bootstrap-server", c.bootstrap,
                    "--reassignment-json-file", str(plan), "--execute").stdout
        assert "Current partition replica assignment" in out, out
        assert f'"replicas":[{source}]' in out, out
        assert f"Successfully started partition reassignments for: {topic}-0" in out, out

        def completed():
            r = kavka("reassign-partitions", "--bootstrap-server", c.bootstrap,
                      "--reassignment-json-file", str(plan), "--verify")
            return f"Reassignment of partition {topic}-0 is completed." in r.stdout
        c.wait_for(f"the reassignment of {topic}-0 to [{target}]", completed, timeout=60, interval=0.5)

        # The producer goes on writing to the new leader.
        sp.wait_acked(300, timeout=60, cluster=c)
    finally:
        sp.stop()
    assert not sp.fatal, sp.fatal

    assert c.replicas_of(topic) == [target]
    assert c.wait_for_leader(topic) == target
    listed = kavka("reassign-partitions", "--bootstrap-server", c.bootstrap, "--list").stdout
    assert "No partition reassignments found." in listed, listed

    # Every acknowledged record, before, during and after the move, is readable from the new
    # replica exactly once and in order.
    seqs = check_acknowledged(c.node(target).bootstrap, sp)
    assert len(seqs) >= 600

    # The source no longer holds the log; the target does.
    c.wait_for(f"node {source} to delete its replica of {topic}-0",
               lambda: not partition_dirs(c.node(source).data_dir, topic, 0), timeout=30)
    assert partition_dirs(c.node(target).data_dir, topic, 0)

    # Nothing left to cancel.
    r = kavka("reassign-partitions", "--bootstrap-server", c.bootstrap,
              "--reassignment-json-file", str(plan), "--cancel", check=False)
    assert r.returncode != 0 and "NO_REASSIGNMENT_IN_PROGRESS" in r.stdout, (r.stdout, r.stderr)


def test_reassignment_to_an_unknown_broker_is_refused(make_cluster, tmp_path):
    c = make_cluster(3)
    c.create_topic("stay", partitions=1, replication_factor=1, config={"min.insync.replicas": "1"})
    before = c.replicas_of("stay")
    plan = tmp_path / "bad.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": "stay", "partition": 0, "replicas": [42]}]}))
    r = kavka("reassign-partitions", "--bootstrap-server", c.bootstrap,
              "--reassignment-json-file", str(plan), "--execute", check=False)
    assert r.returncode != 0 and "INVALID_REPLICA_ASSIGNMENT" in r.stdout, (r.stdout, r.stderr)
    assert c.replicas_of("stay") == before


def test_preferred_leader_election_after_leader_restart(make_cluster):
    # No automatic rebalance: only the election asked for may move the leadership back.
    c = make_cluster(3, **{"auto.leader.rebalance.enable": "false"})
    topic = "preferred"
    c.create_topic(topic, partitions=1, replication_factor=3)
    preferred = c.replicas_of(topic)[0]
    assert c.wait_for_leader(topic) == preferred

    c.kill(preferred)
    interim = c.wait_for_leader(topic, not_in=(preferred,))
    c.start_node(preferred)
    c.wait_for_isr(topic, 0, lambda isr: preferred in isr, f"to contain {preferred} again", timeout=60)
    assert c.leader_of(topic) == interim, "leadership moved back without an election"

    out = kavka("leader-election", "--bootstrap-server", c.bootstrap, "--election-type", "PREFERRED",
                "--topic", topic, "--partition", "0").stdout
    assert f"Successfully completed leader election (PREFERRED) for partitions {topic}-0" in out, out
    c.wait_for(f"node {preferred} to lead {topic}-0 again",
               lambda: c.leader_of(topic) == preferred, timeout=30)

    # Asked again: the right leader already leads.
    out = kavka("leader-election", "--bootstrap-server", c.bootstrap, "--election-type", "preferred",
                "--topic", topic, "--partition", "0").stdout
    assert f"Valid replica already elected for partitions {topic}-0" in out, out
    # Every partition: nothing to do, and no failure.
    kavka("leader-election", "--bootstrap-server", c.bootstrap, "--election-type", "PREFERRED",
          "--all-topic-partitions")
    # An unclean election of a partition that has a leader is not needed either.
    out = kavka("leader-election", "--bootstrap-server", c.bootstrap, "--election-type", "UNCLEAN",
                "--topic", topic, "--partition", "0").stdout
    assert f"Valid replica already elected for partitions {topic}-0" in out, out
    # An unknown partition fails the command.
    r = kavka("leader-election", "--bootstrap-server", c.bootstrap, "--election-type", "PREFERRED",
              "--topic", topic, "--partition", "9", check=False)
    assert r.returncode != 0 and "does not exist" in r.stdout, (r.stdout, r.stderr)


def test_pending_reassignment_listed_and_cancelled_with_kafka_python(make_cluster):
    """A reassignment whose new replica cannot catch up (its broker is paused, hence fenced)
    stays pending: ListPartitionReassignments shows it, a cancellation returns the partition
    to its original replica."""
    c = make_cluster(3)
    topic = "pending"
    c.create_topic(topic, partitions=1, replication_factor=1, config={"min.insync.replicas": "1"})
    [source] = c.replicas_of(topic)
    controller = c.controller_id()
    stuck = next(i for i in sorted(c.nodes) if i not in (source, controller))
    admin = KafkaAdminClient(bootstrap_servers=c.node(controller).bootstrap, request_timeout_ms=20000)
    tp = KpTopicPartition(topic, 0)
    # Finds (and keeps) the controller while every node answers.
    assert admin.list_partition_reassignments() == {}
    c.pause(stuck)
    try:
        assert admin.alter_partition_reassignments({tp: [stuck]}) == {tp: None}
        c.wait_for("the widened replica set", lambda: c.replicas_of(topic) == [stuck, source], timeout=15)
        listed = admin.list_partition_reassignments()
        assert listed == {tp: {"replicas": [stuck, source], "adding_replicas": [stuck],
                               "removing_replicas": [source]}}, listed
        assert c.isr_of(topic) == [source]
        assert admin.alter_partition_reassignments({tp: None}) == {tp: None}
        c.wait_for("the original replica set", lambda: c.replicas_of(topic) == [source], timeout=15)
        assert admin.list_partition_reassignments() == {}
        # Nothing pending any more.
        [err] = admin.alter_partition_reassignments({tp: None}).values()
        assert err is not None and err.errno == 85, err
    finally:
        c.resume(stuck)
        admin.close()
    c.wait_ready()


def test_preferred_election_with_librdkafka(make_cluster):
    c = make_cluster(3, **{"auto.leader.rebalance.enable": "false"})
    topic = "rdkafka-elect"
    c.create_topic(topic, partitions=1, replication_factor=3)
    preferred = c.replicas_of(topic)[0]
    c.kill(preferred)
    c.wait_for_leader(topic, not_in=(preferred,))
    c.start_node(preferred)
    c.wait_for_isr(topic, 0, lambda isr: preferred in isr, f"to contain {preferred} again", timeout=60)

    tp = TopicPartition(topic, 0)
    result = c.admin().elect_leaders(ElectionType.PREFERRED, [tp]).result(timeout=30)
    assert list(result.values()) == [None], result
    c.wait_for(f"node {preferred} to lead {topic}-0 again",
               lambda: c.leader_of(topic) == preferred, timeout=30)
    [again] = c.admin().elect_leaders(ElectionType.PREFERRED, [tp]).result(timeout=30).values()
    assert again is not None and again.code() == 84, again
