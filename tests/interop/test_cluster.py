"""A 3-node cluster under faults, as real processes (cluster.py): RF=3, min.insync.replicas=2,
an idempotent acks=all producer of sequence numbers and a consumer group running throughout.

Faults: kill -9 of a partition leader; SIGSTOP of the leader past broker.session.timeout.ms;
SIGSTOP of a follower past replica.lag.time.max.ms (how a link cut is emulated here: no network
namespaces on the test machine); a rolling restart of every node. After each, every
acknowledged record is in the log exactly once, in order, at the offset its acknowledgement
gave; the group has consumed every acknowledged record and committed the high watermark; the
cluster is back to a full ISR. Also: Metadata and `kavka cluster describe` show the three nodes
and a controller, and acks=all is refused when too few replicas are in sync.

Timings are tuned down (cluster.FAST_FAILOVER_PROPS: 3 s session timeout, 5 s replica lag)
so the file runs in about two minutes; every wait is bounded.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cluster import (
    LOGGER,
    Cluster,
    ClusterError,
    SequenceProducer,
    check_acknowledged,
    read_partition,
)

# Group timeouts as in conftest.GROUP_BROKER_CONFIG: a rebalance in well under a second.
GROUP_PROPS = {
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
    "offsets.topic.num.partitions": 4,
}
SESSION_TIMEOUT_S = 3.0
REPLICA_LAG_S = 5.0


@pytest.fixture
def make_cluster(request, tmp_path):
    """Starts clusters on demand; every one is stopped at the end, its logs printed on failure."""
    made: list[Cluster] = []

    def make(n: int = 3, **extra) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(made)}", n, {**GROUP_PROPS, **extra})
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


class GroupReader:
    """A consumer-group member (subscribe, commit after every batch) in its own thread; counts
    how often it saw each sequence number and where its position is."""

    MAX_RUN_S = 240.0

    def __init__(self, bootstrap: str, topic: str, group: str):
        self.topic = topic
        self.group = group
        self.seen: dict[int, int] = {}
        self.position = 0
        self.commit_errors: list[str] = []
        self.consume_errors: list[str] = []
        self.final_commit: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "socket.timeout.ms": 5000,
            "enable.partition.eof": False,
            "logger": LOGGER,
        }
        self.thread = threading.Thread(target=self._run, name=f"group-{group}", daemon=True)

    def start(self) -> "GroupReader":
        self.thread.start()
        return self

    def _commit(self, c: Consumer) -> bool:
        """Commits the position explicitly (a plain commit() says _NO_OFFSET when nothing moved)."""
        with self._lock:
            position = self.position
        if position == 0:
            return True
        try:
            c.commit(offsets=[TopicPartition(self.topic, 0, position)], asynchronous=False)
            return True
        except KafkaException as e:
            self.commit_errors.append(str(e))
            return False

    def _run(self) -> None:
        c = Consumer(self.conf)
        try:
            c.subscribe([self.topic])
            deadline = time.monotonic() + self.MAX_RUN_S
            while not self._stop.is_set() and time.monotonic() < deadline:
                msgs = c.consume(num_messages=500, timeout=0.5)
                took = False
                for m in msgs:
                    if m.error() is not None:
                        self.consume_errors.append(str(m.error()))
                        continue
                    took = True
                    with self._lock:
                        seq = int(m.value())
                        self.seen[seq] = self.seen.get(seq, 0) + 1
                        self.position = max(self.position, m.offset() + 1)
                if took:
                    self._commit(c)
            # The last commit must land: the coordinator may be moving, retry (bounded).
            end = time.monotonic() + 20
            while time.monotonic() < end:
                if self._commit(c):
                    self.final_commit = "ok"
                    break
                time.sleep(0.5)
        finally:
            c.close()

    def wait_position(self, offset: int, cluster: Cluster, timeout: float = 40.0) -> None:
        try:
            cluster.wait_for(f"group {self.group} to consume up to offset {offset}",
                             lambda: self.position >= offset or None, timeout)
        except ClusterError as e:
            raise ClusterError(
                f"{e}\ngroup position {self.position}, coordinator {cluster.coordinator_of(self.group)}, "
                f"last commit errors {self.commit_errors[-3:]}, last consume errors {self.consume_errors[-3:]}"
            ) from None

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=40)
        assert not self.thread.is_alive(), "group consumer did not stop"


class FenceWatch:
    """Samples Metadata (every 100 ms, in a thread) while a fault lasts and records every time a
    node that kept running and heartbeating is missing from its brokers, i.e. was fenced
    although its session never lapsed (a new active controller must start every session afresh)."""

    def __init__(self, c: Cluster, live: set[int]):
        self.c = c
        self.live = set(live)
        self.missing: list[tuple[float, list[int]]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "FenceWatch":
        self.thread.start()
        return self

    def _run(self) -> None:
        end = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < end:
            md = self.c.metadata(timeout=2)
            if md is not None:
                gone = sorted(self.live - set(md.brokers))
                if gone:
                    self.missing.append((round(time.monotonic() - self._t0, 2), gone))
            self._stop.wait(0.1)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        if exc[0] is None:
            assert not self.missing, (
                f"running brokers {sorted(self.live)} were fenced (seconds into the fault, nodes "
                f"missing from Metadata): {self.missing[:5]}"
            )


def high_watermark(bootstrap: str, topic: str, partition: int = 0) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kavka-cluster-hw", "logger": LOGGER})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        c.close()


def committed_offset(bootstrap: str, topic: str, group: str, partition: int = 0) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "logger": LOGGER})
    try:
        return c.committed([TopicPartition(topic, partition)], timeout=15)[0].offset
    finally:
        c.close()


def run_with_load(c: Cluster, topic: str, fault, group: str | None = None) -> None:
    """Producer and group running; `fault(producer)` breaks and heals the cluster; then every
    invariant is checked. The topic is created here unless it exists."""
    if c.partition(topic, 0) is None:
        c.create_topic(topic)
    sp = SequenceProducer(c.bootstrap, topic).start()
    group = group or f"g-{topic}"
    gr = GroupReader(c.bootstrap, topic, group).start()
    try:
        sp.wait_acked(200, cluster=c)
        fault(sp)
        c.wait_for_full_isr(timeout=45)
        sp.wait_acked(100, cluster=c)
    finally:
        sp.stop()
    assert not sp.fatal, f"producer fatal error: {sp.fatal}"
    log = check_acknowledged(c.bootstrap, sp)
    assert len(sp.acked) >= 500 and len(log) >= len(sp.acked)

    hw = high_watermark(c.bootstrap, topic)
    gr.wait_position(hw, c)
    gr.stop()
    missed = [s for s in sp.acked if s not in gr.seen]
    assert not missed, f"group {group} never saw {len(missed)} acknowledged records, first {sorted(missed)[:10]}"
    assert gr.final_commit == "ok", f"final commit failed: {gr.commit_errors[-3:]}"
    assert committed_offset(c.bootstrap, topic, group) == hw
    c.wait_for_full_isr(timeout=30)


def test_metadata_lists_nodes_and_controller(make_cluster, topic_name):
    c = make_cluster()
    cluster_id = c.wait_for("a cluster id in Metadata", lambda: getattr(c.metadata(), "cluster_id", None),
                            timeout=10)
    md = c.metadata()
    assert md is not None and md.cluster_id == cluster_id
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {
        n.node_id: ("127.0.0.1", n.port) for n in c.nodes.values()
    }
    assert md.controller_id in c.nodes
    # Every node tells the same story: one cluster id, the same three brokers.
    for node in c.nodes.values():
        a = AdminClient({"bootstrap.servers": node.bootstrap, "logger": LOGGER})
        own = a.list_topics(timeout=10)
        assert own.cluster_id == md.cluster_id, f"node {node.node_id}"
        assert sorted(own.brokers) == sorted(c.nodes), f"node {node.node_id}"
        assert own.controller_id in c.nodes

    c.create_topic(topic_name, partitions=3)
    assert sorted(c.replicas_of(topic_name, 0)) == [1, 2, 3]
    out = c.describe(c.node(1).bootstrap)
    assert f"Cluster ID: {md.cluster_id}\n" in out, out
    assert re.search(r"^Controller: [123]\b", out, re.M), out
    assert "Nodes: 3\n" in out, out
    for n in c.nodes.values():
        assert f"\tId: {n.node_id}\tHost: 127.0.0.1:{n.port}\tRack: none" in out, out
    assert re.search(r"^Under-replicated partitions: 0 of \d+$", out, re.M), out
    assert re.search(r"^Offline partitions: 0 of \d+$", out, re.M), out

    # Node 3 gone: every partition of the topic (RF=3 on 3 nodes) is under-replicated.
    c.kill(3)
    c.wait_for("node 3 out of every ISR of the topic",
               lambda: all(3 not in c.isr_of(topic_name, p) for p in range(3)), timeout=30)
    out = c.describe()
    m = re.search(r"^Under-replicated partitions: (\d+) of \d+$", out, re.M)
    assert m and int(m.group(1)) >= 3, out
    for p in range(3):
        assert re.search(rf"^\tTopic: {re.escape(topic_name)}\tPartition: {p}\tLeader: [12]\t"
                         rf"Replicas: [123,]+\tIsr: [12],[12]\tOffline: 3$", out, re.M), out
    assert re.search(r"^Offline partitions: 0 of \d+$", out, re.M), out
    node3 = [line for line in out.splitlines() if line.startswith("\tId: 3\t")]
    assert node3 == [] or node3[0].endswith("\tFenced"), out


def test_kill_leader(make_cluster, topic_name):
    """kill -9 of the node that leads the partition and coordinates the group (its
    __consumer_offsets partition is led there too), then a restart."""
    c = make_cluster()
    c.create_topic(topic_name)
    leader = c.leader_of(topic_name)
    assert leader in c.nodes
    group = c.group_coordinated_by(leader, f"g-{topic_name}")

    def fault(sp):
        assert c.leader_of(topic_name) == leader
        c.kill(leader)
        c.wait_for_leader(topic_name, not_in=(leader,), timeout=30)
        sp.wait_acked(200, timeout=30, cluster=c)
        c.wait_for(f"group {group} coordinated elsewhere",
                   lambda: c.coordinator_of(group) not in (-1, leader), timeout=30)
        c.start_node(leader)

    run_with_load(c, topic_name, fault, group)


def test_pause_leader_past_session_timeout(make_cluster, topic_name):
    """The paused node leads the partition and is the active controller: both fail over, and
    the two nodes that keep running are never fenced."""
    c = make_cluster()
    controller = c.controller_id()
    assert controller in c.nodes
    c.create_topic(topic_name, replica_assignment=[[controller] + [n for n in c.nodes if n != controller]])

    def fault(sp):
        leader = c.leader_of(topic_name)
        assert leader == controller
        with FenceWatch(c, set(c.nodes) - {leader}):
            c.pause(leader)
            paused_at = time.monotonic()
            c.wait_for_leader(topic_name, not_in=(leader,), timeout=30)
            sp.wait_acked(200, timeout=30, cluster=c)
            time.sleep(max(0.0, SESSION_TIMEOUT_S + 1 - (time.monotonic() - paused_at)))
        c.resume(leader)
        c.wait_ready(timeout=30)

    run_with_load(c, topic_name, fault)


def test_cut_off_follower_and_heal(make_cluster, topic_name):
    """A follower that answers nothing (SIGSTOP stands in for a cut link) leaves the ISR after
    replica.lag.time.max.ms at the latest, acks=all keeps working with the other two, and the
    follower catches up and rejoins the ISR once healed. The follower is the active controller,
    so the quorum elects another one meanwhile, and the two running nodes are never fenced."""
    c = make_cluster()
    controller = c.controller_id()
    assert controller in c.nodes
    others = [n for n in c.nodes if n != controller]
    c.create_topic(topic_name, replica_assignment=[[others[0], controller, others[1]]])

    def fault(sp):
        leader = c.leader_of(topic_name)
        follower = controller
        assert leader != follower and follower in c.replicas_of(topic_name)
        with FenceWatch(c, set(c.nodes) - {follower}):
            c.pause(follower)
            c.wait_for_isr(topic_name, 0, lambda isr: follower not in isr, f"without {follower}",
                           timeout=REPLICA_LAG_S + 25)
            sp.wait_acked(200, timeout=30, cluster=c)
        c.resume(follower)
        c.wait_ready(timeout=30)
        c.wait_for_isr(topic_name, 0, lambda isr: follower in isr, f"with {follower} again", timeout=40)

    run_with_load(c, topic_name, fault)


def test_rolling_restart(make_cluster, topic_name):
    c = make_cluster()

    def fault(sp):
        for node_id in sorted(c.nodes):
            c.stop(node_id)
            sp.wait_acked(100, timeout=30, cluster=c)
            c.start_node(node_id)
            c.wait_for_full_isr(timeout=45)

    run_with_load(c, topic_name, fault)


def plain_producer(bootstrap: str) -> Producer:
    """acks=all without retries, so the broker's own error reaches the delivery report."""
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
                     "retries": 0, "linger.ms": 0, "request.timeout.ms": 5000,
                     "message.timeout.ms": 8000, "socket.timeout.ms": 5000, "logger": LOGGER})


def produce_one(p: Producer, topic: str, value: bytes) -> KafkaError | None:
    result = []
    p.produce(topic, value=value, partition=0, on_delivery=lambda err, msg: result.append(err))
    p.flush(20)
    assert result, "no delivery report within 20 s"
    return result[0]


def test_not_enough_replicas_below_min_insync(make_cluster, topic_name):
    """The ISR below min.insync.replicas: acks=all is refused with NOT_ENOUGH_REPLICAS before
    the append. With combined nodes this needs the quorum alive to commit the ISR shrink, so
    the topic asks for 3 in-sync replicas and one node goes down."""
    c = make_cluster()
    c.create_topic(topic_name, config={"min.insync.replicas": "3"})
    p = plain_producer(c.bootstrap)
    assert produce_one(p, topic_name, b"before") is None
    leader = c.leader_of(topic_name)
    follower = next(r for r in c.replicas_of(topic_name) if r != leader)
    c.kill(follower)
    c.wait_for_isr(topic_name, 0, lambda isr: follower not in isr, f"without {follower}", timeout=30)
    err = produce_one(p, topic_name, b"refused")
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err
    c.start_node(follower)
    c.wait_for_full_isr(topic_name, timeout=40)
    assert c.wait_for("acks=all accepted again", lambda: produce_one(p, topic_name, b"after") is None,
                      timeout=20, interval=0.5)
    values = [v for _, v in read_partition(c.bootstrap, topic_name)]
    assert values[0] == b"before" and b"refused" not in values and values[-1] == b"after", values


def test_two_of_three_down_refuses_acks_all(make_cluster, topic_name):
    """min.insync.replicas=2 and both followers down: nothing is acknowledged. One follower
    down first, so its ISR shrink commits (2 of 3 voters alive); with the second one down the
    quorum is gone too, so the leader cannot shrink the ISR further and the produce is refused
    with NOT_ENOUGH_REPLICAS(_AFTER_APPEND) or times out waiting for the high watermark, as
    in Kafka's combined mode. Then everything comes back."""
    c = make_cluster()
    c.create_topic(topic_name)
    p = plain_producer(c.bootstrap)
    assert produce_one(p, topic_name, b"before") is None
    leader = c.leader_of(topic_name)
    first, second = [r for r in c.replicas_of(topic_name) if r != leader]
    c.kill(first)
    c.wait_for_isr(topic_name, 0, lambda isr: first not in isr, f"without {first}", timeout=30)
    assert produce_one(p, topic_name, b"two in sync") is None
    c.kill(second)
    err = produce_one(p, topic_name, b"one in sync")
    refused = {KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
               KafkaError.REQUEST_TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT,
               KafkaError.NOT_LEADER_FOR_PARTITION}
    assert err is not None and err.code() in refused, err
    print(f"acks=all with two of three nodes down: {err.name()}")
    c.start_node(first)
    c.start_node(second)
    c.wait_for_full_isr(timeout=45)
    values = [v for _, v in read_partition(c.bootstrap, topic_name)]
    assert values[:2] == [b"before", b"two in sync"], values
