"""A kavka cluster as real processes on 127.0.0.1: the harness of test_cluster*.py and
bench/cluster.py.

`Cluster(tmp_path, n=3, extra_props={})` writes one properties file per node (Kafka's KRaft
keys, combined broker+controller mode, free ports), starts `target/release/kavka server`
for each with stdout/stderr in a per-node log file, and waits until every broker is listed in
Metadata with a controller id. Faults are process-level: `kill` (kill -9 by default), `pause`
/ `resume` (SIGSTOP / SIGCONT: a broker that stops answering, including heartbeats and Raft,
without closing its sockets), `restart`. There is no network-namespace link cutting here (it
needs root and netns tooling the test machine is not assumed to have): a follower "cut off"
is emulated with `pause`, which from the other nodes' side is a link that drops everything.

Every wait is bounded and raises `ClusterError` (an AssertionError, so pytest reports it as a
failure) with the tail of each node's log. `stop_all()` always reaps every process; the
pytest fixture in test_cluster.py calls it from its finalizer. Free of pytest itself so that
bench/cluster.py can use it.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
KAVKA_BIN = Path(os.environ.get("KAVKA_BIN", ROOT / "target" / "release" / "kavka"))
LOGGER = logging.getLogger("librdkafka")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Fault detection tuned down from Kafka's production defaults so a failover takes seconds.
FAST_FAILOVER_PROPS = {
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 500,
    "replica.lag.time.max.ms": 5000,
}

try:  # Under pytest, register with conftest's registry so its SIGTERM handler reaps ours too.
    import conftest as _conftest  # noqa: E402

    _LIVE: set = _conftest._LIVE
except ImportError:  # bench/cluster.py
    _LIVE = set()

    def _kill_live() -> None:
        for proc in list(_LIVE):
            if proc.poll() is None:
                proc.kill()

    atexit.register(_kill_live)


class ClusterError(AssertionError):
    """A bounded wait ran out, or a node misbehaved; the message carries the node logs."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (all bound at once, so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Node:
    """One `kavka server` process: broker and controller with a fixed node id and ports."""

    def __init__(self, node_id: int, port: int, controller_port: int, work: Path):
        self.node_id = node_id
        self.port = port
        self.controller_port = controller_port
        self.dir = work / f"node{node_id}"
        self.data_dir = self.dir / "data"
        self.config_path = self.dir / "server.properties"
        self.log_path = self.dir / "kavka.log"
        self.proc: subprocess.Popen | None = None
        self.paused = False
        self.expected_exit = False
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"node {self.node_id} never started"
        return self.proc.pid

    def write_config(self, props: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{k}={v}" for k, v in props.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def launch(self) -> None:
        if not KAVKA_BIN.is_file():
            raise ClusterError(f"{KAVKA_BIN} not found: run `cargo build --release -p kavka` first")
        assert not self.alive, f"node {self.node_id} already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(KAVKA_BIN), "server", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            log.write(f"\n----- start #{self.starts + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "RUST_BACKTRACE": "1", "NO_COLOR": "1"},
            )
        _LIVE.add(self.proc)
        self.starts += 1
        self.paused = False
        self.expected_exit = False

    def signal(self, sig: int) -> None:
        if self.alive:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> bool:
        """Waits for the process to end; True if it did within `timeout`."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        _LIVE.discard(self.proc)
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """`n` kavka nodes (ids 1..n), every one broker and controller, all of them voters.

    `quorum=False` with n=1 starts a plain single-node broker (no controller.quorum.voters),
    the mode `kavka server` runs in by default; bench/cluster.py compares against it.
    """

    def __init__(self, tmp_path: Path, n: int = 3, extra_props: dict | None = None,
                 quorum: bool = True, broker_only: int = 0):
        assert 1 <= n <= 9, "controller.quorum.voters takes 1 to 9 voters"
        assert quorum or (n == 1 and broker_only == 0), "several nodes need a quorum"
        self.work = Path(tmp_path)
        self.n = n
        self.quorum = quorum
        total = n + broker_only
        ports = free_ports(2 * total)
        self.nodes: dict[int, Node] = {
            i: Node(i, ports[2 * (i - 1)], ports[2 * (i - 1) + 1], self.work)
            for i in range(1, total + 1)
        }
        self.extra_props = dict(extra_props or {})
        self._admins: dict[str, AdminClient] = {}
        for node in self.nodes.values():
            node.write_config(self.props(node))

    # --- configuration -------------------------------------------------------------------

    def is_voter(self, node: Node) -> bool:
        return node.node_id <= self.n

    def props(self, node: Node) -> dict:
        rf = min(3, self.n)
        props = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "log.dirs": str(node.data_dir),
            "default.replication.factor": rf,
            "min.insync.replicas": min(2, rf),
            "offsets.topic.replication.factor": rf,
        }
        if self.quorum:
            if self.is_voter(node):
                props["listeners"] += f",CONTROLLER://127.0.0.1:{node.controller_port}"
                props["controller.listener.names"] = "CONTROLLER"
            else:
                props["process.roles"] = "broker"
            props["controller.quorum.voters"] = ",".join(
                f"{m.node_id}@127.0.0.1:{m.controller_port}"
                for m in self.nodes.values()
                if self.is_voter(m)
            )
            props.update(FAST_FAILOVER_PROPS)
        props.update(self.extra_props)
        return props

    @property
    def bootstrap(self) -> str:
        """Every node's client listener, as a client's bootstrap.servers."""
        return ",".join(n.bootstrap for n in self.nodes.values())

    def node(self, node_id: int) -> Node:
        if node_id not in self.nodes:
            raise ClusterError(f"no node {node_id} (nodes: {sorted(self.nodes)})")
        return self.nodes[node_id]

    def responsive(self) -> list[Node]:
        """Nodes that run and are not paused."""
        return [n for n in self.nodes.values() if n.alive and not n.paused]

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> "Cluster":
        """Starts every node, then waits until all brokers are in Metadata with a controller."""
        for node in self.nodes.values():
            node.launch()
        deadline = time.monotonic() + timeout
        for node in self.nodes.values():
            self._wait_listening(node, deadline)
        self.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
        return self

    def _wait_listening(self, node: Node, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not node.alive:
                raise ClusterError(
                    f"node {node.node_id} exited with {node.proc.returncode} before listening\n"
                    + self.log_tails()
                )
            if port_accepts(node.port):
                return
            time.sleep(0.05)
        raise ClusterError(f"node {node.node_id} did not listen on {node.bootstrap} in time\n" + self.log_tails())

    def wait_ready(self, timeout: float = START_TIMEOUT_S, brokers: set[int] | None = None) -> None:
        """Until Metadata lists exactly `brokers` (default: every responsive node) and a
        controller. (The cluster id is test_cluster.py's to check, not a readiness condition.)"""
        want = brokers if brokers is not None else {n.node_id for n in self.responsive()}
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_no_unexpected_exit()
            md = self.metadata(timeout=3)
            if md is not None:
                last = (sorted(md.brokers), md.controller_id, md.cluster_id)
                if set(md.brokers) == want and md.controller_id >= 0:
                    return
            time.sleep(0.2)
        raise ClusterError(
            f"cluster not ready in {timeout}s: wanted brokers {sorted(want)} and a controller, "
            f"last Metadata (brokers, controller, cluster id) = {last}\n" + self.log_tails()
        )

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` (kill -9 by default); for SIGKILL/SIGTERM, waits for the exit."""
        node = self.node(node_id)
        node.expected_exit = True
        if node.paused and sig != signal.SIGKILL:
            node.signal(signal.SIGCONT)  # a stopped process does not act on SIGTERM
            node.paused = False
        node.signal(sig)
        if sig == signal.SIGKILL:
            if not node.wait_exit(10):
                raise ClusterError(f"node {node_id} survived SIGKILL for 10s")
            node.paused = False
        elif sig == signal.SIGTERM:
            if not node.wait_exit(STOP_TIMEOUT_S):
                node.signal(signal.SIGKILL)
                node.wait_exit(10)
                raise ClusterError(f"node {node_id} ignored SIGTERM for {STOP_TIMEOUT_S}s\n" + node.log_tail())

    def stop(self, node_id: int) -> None:
        """Clean shutdown (SIGTERM), bounded."""
        self.kill(node_id, signal.SIGTERM)

    def pause(self, node_id: int) -> None:
        """SIGSTOP: the node keeps its sockets but answers nothing (no heartbeats, no Raft)."""
        node = self.node(node_id)
        if not node.alive:
            raise ClusterError(f"node {node_id} is not running")
        node.signal(signal.SIGSTOP)
        node.paused = True

    def resume(self, node_id: int) -> None:
        node = self.node(node_id)
        node.signal(signal.SIGCONT)
        node.paused = False

    def start_node(self, node_id: int, timeout: float = START_TIMEOUT_S) -> None:
        """Starts a stopped node and waits until it is back in Metadata."""
        node = self.node(node_id)
        node.launch()
        deadline = time.monotonic() + timeout
        self._wait_listening(node, deadline)
        self.wait_ready(timeout=max(1.0, deadline - time.monotonic()))

    def restart(self, node_id: int, hard: bool = False, timeout: float = START_TIMEOUT_S) -> None:
        """Stops (SIGTERM, or kill -9 when `hard`) and starts the node on the same ports and data."""
        if self.node(node_id).alive:
            self.kill(node_id, signal.SIGKILL if hard else signal.SIGTERM)
        self.start_node(node_id, timeout)

    def stop_all(self) -> None:
        """Stops every node (SIGCONT first, then SIGTERM, then SIGKILL after a bounded wait)."""
        for node in self.nodes.values():
            if node.alive:
                node.expected_exit = True
                node.signal(signal.SIGCONT)
                node.paused = False
                node.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in self.nodes.values():
            if not node.wait_exit(max(0.1, deadline - time.monotonic())):
                node.signal(signal.SIGKILL)
                node.wait_exit(10)
        self._admins.clear()

    def unexpected_exits(self) -> list[Node]:
        return [n for n in self.nodes.values()
                if n.proc is not None and n.proc.poll() is not None and not n.expected_exit]

    def check_no_unexpected_exit(self) -> None:
        dead = self.unexpected_exits()
        if dead:
            raise ClusterError(
                "node(s) died: "
                + ", ".join(f"{n.node_id} (exit {n.proc.returncode})" for n in dead)
                + "\n" + self.log_tails()
            )

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"----- node {n.node_id} log tail ({n.log_path}):\n{n.log_tail(lines)}"
            for n in self.nodes.values()
        )

    # --- metadata ----------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        """An admin client bootstrapped from the responsive nodes (a paused node would make a
        fresh client wait out its socket timeout)."""
        nodes = self.responsive() or list(self.nodes.values())
        key = ",".join(n.bootstrap for n in nodes)
        if key not in self._admins:
            self._admins[key] = AdminClient({
                "bootstrap.servers": key,
                "socket.timeout.ms": 2500,
                "allow.auto.create.topics": False,
                "logger": LOGGER,
            })
        return self._admins[key]

    def metadata(self, timeout: float = 5.0):
        """Metadata of every topic, or None when no node answered within `timeout`."""
        try:
            return self.admin().list_topics(timeout=timeout)
        except KafkaException:
            return None

    def partition(self, topic: str, partition: int):
        md = self.metadata()
        if md is None or topic not in md.topics:
            return None
        return md.topics[topic].partitions.get(partition)

    def leader_of(self, topic: str, partition: int = 0) -> int:
        """The leader in Metadata, -1 when there is none or no node answered."""
        p = self.partition(topic, partition)
        return -1 if p is None else p.leader

    def isr_of(self, topic: str, partition: int = 0) -> list[int]:
        p = self.partition(topic, partition)
        return [] if p is None else sorted(p.isrs)

    def replicas_of(self, topic: str, partition: int = 0) -> list[int]:
        p = self.partition(topic, partition)
        return [] if p is None else list(p.replicas)

    def coordinator_of(self, group: str) -> int:
        """The group's coordinator (FindCoordinator through DescribeGroups), -1 if unknown yet."""
        try:
            d = self.admin().describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
        except KafkaException:
            return -1
        return d.coordinator.id if d.coordinator is not None else -1

    def group_coordinated_by(self, node_id: int, prefix: str, timeout: float = 30.0) -> str:
        """A group id (`prefix-N`) whose coordinator is `node_id`: its __consumer_offsets
        partition is led there, so killing that node moves the group too."""
        deadline = time.monotonic() + timeout
        seen: dict[int, int] = {}
        for i in range(1000):
            if time.monotonic() > deadline:
                break
            group = f"{prefix}-{i % 64}"
            coordinator = self.coordinator_of(group)
            if coordinator == node_id:
                return group
            seen[coordinator] = seen.get(coordinator, 0) + 1
            if coordinator < 0:
                time.sleep(0.1)  # __consumer_offsets being created, or its leader moving
        raise ClusterError(f"no group id {prefix}-N coordinated by node {node_id} found in {timeout}s "
                           f"(coordinators seen, -1 = none: {seen})\n" + self.log_tails())

    def controller_id(self) -> int:
        md = self.metadata()
        return -1 if md is None else md.controller_id

    def create_topic(self, topic: str, partitions: int = 1, replication_factor: int | None = None,
                     config: dict | None = None, timeout: float = 30.0,
                     replica_assignment: list[list[int]] | None = None) -> None:
        """Creates the topic (with the controller's placement, or `replica_assignment`: one
        replica list per partition, preferred leader first) and waits until every partition has
        a leader and a full ISR."""
        if replica_assignment is not None:
            new = NewTopic(topic, num_partitions=len(replica_assignment),
                           replica_assignment=replica_assignment, config=config or {})
            partitions = len(replica_assignment)
        else:
            rf = replication_factor if replication_factor is not None else min(3, self.n)
            new = NewTopic(topic, num_partitions=partitions, replication_factor=rf, config=config or {})
        fs = self.admin().create_topics([new], operation_timeout=15, request_timeout=20)
        for f in fs.values():
            f.result(timeout=timeout)
        self.wait_for_full_isr(topic, timeout=timeout, partitions=partitions)

    def wait_for(self, what: str, predicate, timeout: float, interval: float = 0.2):
        """Polls `predicate()` until it returns a true value (returned), bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_no_unexpected_exit()
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise ClusterError(f"timed out after {timeout}s waiting for {what} (last: {last!r})\n" + self.log_tails())

    def wait_for_leader(self, topic: str, partition: int = 0, not_in: tuple = (),
                        timeout: float = 30.0) -> int:
        """Until the partition has a leader outside `not_in`; returns it."""
        def check():
            leader = self.leader_of(topic, partition)
            return leader if leader >= 0 and leader not in not_in else None
        return self.wait_for(f"a leader of {topic}[{partition}] not in {list(not_in)}", check, timeout)

    def wait_for_isr(self, topic: str, partition: int, predicate, what: str, timeout: float = 30.0):
        def check():
            isr = self.isr_of(topic, partition)
            return isr if isr and predicate(isr) else None
        return self.wait_for(f"ISR of {topic}[{partition}] {what}", check, timeout)

    def unhealthy_partitions(self, topic: str | None = None, partitions: int | None = None) -> list | None:
        """(topic, partition, leader, replicas, isr) of partitions without a leader or with an ISR
        smaller than the replica set; None when no node answered or `topic` is not (fully) there."""
        md = self.metadata()
        if md is None:
            return None
        topics = [topic] if topic is not None else list(md.topics)
        bad = []
        for t in topics:
            tm = md.topics.get(t)
            if tm is None or tm.error is not None:
                return None
            if partitions is not None and len(tm.partitions) != partitions:
                return None
            for p in tm.partitions.values():
                if p.leader < 0 or sorted(p.isrs) != sorted(p.replicas):
                    bad.append((t, p.id, p.leader, list(p.replicas), sorted(p.isrs)))
        return bad

    def wait_for_full_isr(self, topic: str | None = None, timeout: float = 30.0,
                          partitions: int | None = None) -> None:
        """Until every partition of `topic` (default: every topic, internal ones included) has a
        leader and an ISR equal to its replica set."""
        last = []

        def check():
            bad = self.unhealthy_partitions(topic, partitions)
            last[:] = [bad]
            return bad == []
        try:
            self.wait_for(f"a full ISR on {topic or 'every topic'}", check, timeout)
        except ClusterError as e:
            raise ClusterError(f"{e}\nunhealthy (topic, partition, leader, replicas, isr): {last}") from None

    def describe(self, bootstrap: str | None = None, timeout: float = 30.0) -> str:
        """`kavka cluster describe` against `bootstrap` (default: the responsive nodes)."""
        server = bootstrap or ",".join(n.bootstrap for n in self.responsive())
        r = subprocess.run([str(KAVKA_BIN), "cluster", "describe", "--bootstrap-server", server],
                           capture_output=True, timeout=timeout)
        if r.returncode != 0:
            raise ClusterError(f"kavka cluster describe failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
        return r.stdout.decode()


# --------------------------------------------------------------------------------------------
# Load while faults happen
# --------------------------------------------------------------------------------------------

class SequenceProducer:
    """A thread producing 8-digit sequence numbers 0, 1, 2, ... to one partition with an
    idempotent acks=all producer, paced at `rate` per second, up to `max_count`. `acked` maps
    each acknowledged sequence number to the offset the broker gave it."""

    def __init__(self, bootstrap: str, topic: str, partition: int = 0, rate: float = 300.0,
                 max_count: int = 20000, **conf):
        self.topic = topic
        self.partition = partition
        self.interval = 1.0 / rate
        self.max_count = max_count
        self.acked: dict[int, int] = {}
        self.errors: list[KafkaError] = []
        self.fatal: list[KafkaError] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        base = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 60000,
            "request.timeout.ms": 10000,
            "socket.timeout.ms": 5000,
            "error_cb": self._on_error,
            "logger": LOGGER,
        }
        base.update(conf)
        self.producer = Producer(base)
        self.thread = threading.Thread(target=self._run, name=f"producer-{topic}", daemon=True)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal.append(err)

    def _on_delivery(self, err, msg) -> None:
        with self._lock:
            if err is not None:
                self.errors.append(err)
            else:
                self.acked[int(msg.value())] = msg.offset()

    def start(self) -> "SequenceProducer":
        self.thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        for seq in range(self.max_count):
            if self._stop.is_set() or self.fatal:
                return
            deadline = time.monotonic() + 60
            while True:
                try:
                    self.producer.produce(self.topic, value=b"%08d" % seq, partition=self.partition,
                                          on_delivery=self._on_delivery)
                    break
                except BufferError:
                    if time.monotonic() > deadline or self._stop.is_set():
                        return
                    self.producer.poll(0.05)
            self.sent = seq + 1
            self.producer.poll(0)
            next_at += self.interval
            pause = next_at - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)
            else:
                next_at = time.monotonic()

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_acked(self, more: int, timeout: float = 30.0, cluster: Cluster | None = None) -> None:
        """Until `more` further sequence numbers than now are acknowledged."""
        target = self.acked_count() + more
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.fatal:
                raise ClusterError(f"producer fatal error: {self.fatal}")
            if self.acked_count() >= target:
                return
            if cluster is not None:
                cluster.check_no_unexpected_exit()
            time.sleep(0.05)
        with self._lock:
            errors = self.errors[-5:]
        raise ClusterError(
            f"only {self.acked_count()} of {target} records acknowledged after {timeout}s "
            f"(sent {self.sent}, last errors {errors})" + ("\n" + cluster.log_tails() if cluster else "")
        )

    def stop(self, flush_timeout: float = 60.0) -> None:
        """Stops producing and waits (bounded) for every sent record's delivery report."""
        self._stop.set()
        self.thread.join(timeout=10)
        remaining = self.producer.flush(flush_timeout)
        if remaining:
            raise ClusterError(f"{remaining} records without a delivery report after {flush_timeout}s")


def read_partition(bootstrap: str, topic: str, partition: int = 0, timeout: float = 60.0) -> list[tuple[int, bytes]]:
    """(offset, value) of every record of the partition from the log start to the high watermark."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "kavka-cluster-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "socket.timeout.ms": 5000,
        "logger": LOGGER,
    })
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        c.assign([TopicPartition(topic, partition, low)])
        out: list[tuple[int, bytes]] = []
        position = low
        while position < high and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=1.0):
                if m.error() is not None:
                    if m.error().retriable() or m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise ClusterError(f"consume error on {topic}[{partition}]: {m.error()}")
                out.append((m.offset(), m.value()))
                position = m.offset() + 1
        if position < high:
            raise ClusterError(f"read {topic}[{partition}] up to offset {position} of {high} in {timeout}s")
        return out
    finally:
        c.close()


def check_acknowledged(bootstrap: str, sp: SequenceProducer) -> list[int]:
    """Every acknowledged sequence number is in the partition exactly once, at the offset its
    acknowledgement gave, and the log holds sequence numbers in increasing order with no
    duplicate (an idempotent producer's records, acknowledged or not). Returns the log's."""
    records = read_partition(bootstrap, sp.topic, sp.partition)
    seqs = [int(v) for _, v in records]
    by_offset = {o: int(v) for o, v in records}
    dupes = len(seqs) - len(set(seqs))
    assert dupes == 0, f"{dupes} duplicated records in {sp.topic}[{sp.partition}]"
    out_of_order = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
    assert not out_of_order, f"records out of order: {out_of_order[:5]}"
    present = set(seqs)
    missing = sorted(s for s in sp.acked if s not in present)
    assert not missing, f"{len(missing)} acknowledged records lost, first {missing[:10]}"
    moved = [(s, o, by_offset.get(o)) for s, o in sp.acked.items() if by_offset.get(o) != s]
    assert not moved, f"acknowledged (seq, offset, found there): {moved[:5]}"
    return seqs
