"""Consumer groups with real clients (confluent-kafka / librdkafka and kafka-python) and with
hand-built requests: membership and rebalancing, committed offsets, static membership, the
cooperative-sticky assignor, KIP-848, the admin API, and Kafka's error codes for bad input.

Every broker here runs with GROUP_BROKER_CONFIG (conftest.py): no initial rebalance delay and
a 1 s minimum session timeout, so members use session.timeout.ms=6000 and a 500 ms heartbeat.
Assignments are observed through the rebalance callbacks; an `Ownership` ledger fails the test
if a partition is ever handed to a member while another still holds it."""

from __future__ import annotations

import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupType, KafkaError, KafkaException, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from helpers import (
    RDKAFKA_LOGGER,
    RawConn,
    admin,
    create_topic,
    flush,
    kstr,
    frame,
    parse_api_versions_v0,
    producer,
    uvarint,
)

PARTITIONS = 6
SESSION_MS = 6000
HEARTBEAT_MS = 500
# Upper bound for any single wait on the group (a rebalance, an eviction after SESSION_MS).
SETTLE_S = 30.0

# Kafka error codes used below.
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
OFFSET_METADATA_TOO_LARGE = 12
INVALID_SESSION_TIMEOUT = 26
GROUP_MAX_SIZE_REACHED = 81
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86

# API keys.
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 8, 9, 10
JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 11, 12, 13, 14
API_VERSIONS = 18
OFFSET_DELETE = 47
CONSUMER_GROUP_HEARTBEAT = 68


def group_of(topic: str) -> str:
    return f"g-{topic}"


def produce_spread(bootstrap: str, topic: str, per_partition: int, tag: str = "v") -> None:
    """`per_partition` records into every partition, in order, values "<tag>-<p>-<i>"."""
    p = producer(bootstrap, **{"acks": "all"})
    for i in range(per_partition):
        for part in range(PARTITIONS):
            p.produce(topic, value=f"{tag}-{part}-{i}".encode(), partition=part)
    flush(p)


# ----------------------------------------------------------------------------------------------
# confluent-kafka members observed through their rebalance callbacks
# ----------------------------------------------------------------------------------------------

def group_consumer(bootstrap: str, group: str, **conf) -> Consumer:
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": HEARTBEAT_MS,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "socket.timeout.ms": 10000,
        "logger": RDKAFKA_LOGGER,
    }
    for k, v in conf.items():  # None removes a default
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return Consumer(base)


class Ownership:
    """Who holds which partition, from assign/revoke events; records every double ownership."""

    def __init__(self):
        self.owner: dict[int, str] = {}
        self.violations: list[str] = []

    def acquire(self, member: str, parts: set[int]) -> None:
        for p in parts:
            other = self.owner.get(p)
            if other is not None and other != member:
                self.violations.append(f"partition {p} assigned to {member} while {other} owns it")
            self.owner[p] = member

    def release(self, member: str, parts: set[int]) -> None:
        for p in parts:
            if self.owner.get(p) == member:
                del self.owner[p]


class Member:
    """One in-process confluent-kafka group member; `poll()` serves its callbacks."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, ledger: Ownership, **conf):
        self.name = name
        self.ledger = ledger
        self.owned: set[int] = set()
        self.events: list[tuple[str, list[int]]] = []
        self.messages: list = []
        self.errors: list = []
        self.consumer = group_consumer(bootstrap, group, **conf)
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self.closed = False

    def _on_assign(self, _c, parts):
        ps = {tp.partition for tp in parts}
        self.events.append(("assign", sorted(ps)))
        self.ledger.acquire(self.name, ps)
        self.owned |= ps

    def _on_revoke(self, _c, parts):
        ps = {tp.partition for tp in parts}
        self.events.append(("revoke", sorted(ps)))
        self.ledger.release(self.name, ps)
        self.owned -= ps

    def _on_lost(self, _c, parts):
        ps = {tp.partition for tp in parts}
        self.events.append(("lost", sorted(ps)))
        self.ledger.release(self.name, ps)
        self.owned -= ps

    def poll(self, timeout: float = 0.05) -> None:
        if self.closed:
            return
        m = self.consumer.poll(timeout)
        if m is None:
            return
        if m.error() is not None:
            self.errors.append(m.error())
        else:
            self.messages.append(m)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()
            self.ledger.release(self.name, self.owned)
            self.owned = set()


def poll_until(members, cond, what: str, timeout: float = SETTLE_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            m.poll()
        if cond():
            return
    state = {m.name: (sorted(m.owned), m.events[-6:], [str(e) for e in m.errors[-3:]]) for m in members}
    raise AssertionError(f"{what} not reached within {timeout}s; members: {state}")


def poll_for(members, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in members:
            m.poll()


def split_evenly(owned_sets: list[set[int]], total: int = PARTITIONS) -> bool:
    """Every partition owned exactly once and every member holds total/len(members) of them."""
    union: set[int] = set()
    for s in owned_sets:
        if union & s:
            return False
        union |= s
    return union == set(range(total)) and all(len(s) == total // len(owned_sets) for s in owned_sets)


def close_all(members) -> None:
    for m in members:
        try:
            m.close()
        except Exception:  # closing must not hide the test's own failure
            pass


# ----------------------------------------------------------------------------------------------
# A group member in a child process, so that it can be killed with SIGKILL
# ----------------------------------------------------------------------------------------------

CHILD_MEMBER = r"""
import json, sys, time
from confluent_kafka import Consumer
cfg = json.loads(sys.argv[1])
def out(ev, parts):
    print(json.dumps({"ev": ev, "p": sorted(tp.partition for tp in parts)}), flush=True)
c = Consumer(cfg["conf"])
c.subscribe([cfg["topic"]], on_assign=lambda _c, p: out("assign", p),
            on_revoke=lambda _c, p: out("revoke", p), on_lost=lambda _c, p: out("lost", p))
deadline = time.monotonic() + cfg["lifetime_s"]
while time.monotonic() < deadline:
    c.poll(0.1)
c.close()
"""


class ChildMember:
    """A confluent-kafka member in its own process; its assign/revoke events arrive as JSON lines."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, ledger: Ownership,
                 lifetime_s: float = 90.0, **conf):
        self.name = name
        self.ledger = ledger
        self.owned: set[int] = set()
        self.events: list[tuple[str, list[int]]] = []
        self.errors: list = []
        full = {
            "bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, **conf,
        }
        full = {k: v for k, v in full.items() if v is not None}  # None removes a default
        arg = json.dumps({"conf": full, "topic": topic, "lifetime_s": lifetime_s})
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD_MEMBER, arg], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def poll(self, timeout: float = 0.05) -> None:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return
        ev = json.loads(line)
        ps = set(ev["p"])
        self.events.append((ev["ev"], sorted(ps)))
        if ev["ev"] == "assign":
            self.ledger.acquire(self.name, ps)
            self.owned |= ps
        else:
            self.ledger.release(self.name, ps)
            self.owned -= ps

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        # A killed member never revokes: the ledger lets its partitions go so that the
        # survivors' takeover is not counted as double ownership.
        self.ledger.release(self.name, self.owned)
        self.owned = set()

    def close(self) -> None:
        self.kill9()

    def log(self) -> str:
        return b"".join(self.stderr).decode(errors="replace")[-3000:]


# ----------------------------------------------------------------------------------------------
# membership changes split the partitions with no double ownership
# ----------------------------------------------------------------------------------------------

def test_two_then_three_members_split_six_partitions(group_broker, topic_name):
    create_topic(group_broker, topic_name, PARTITIONS)
    group, ledger = group_of(topic_name), Ownership()
    members = [Member("m1", group_broker, group, topic_name, ledger)]
    try:
        poll_until(members, lambda: members[0].owned == set(range(PARTITIONS)), "m1 alone owns all 6")
        members.append(Member("m2", group_broker, group, topic_name, ledger))
        poll_until(members, lambda: split_evenly([m.owned for m in members]), "2 members own 3 each")
        members.append(Member("m3", group_broker, group, topic_name, ledger))
        poll_until(members, lambda: split_evenly([m.owned for m in members]), "3 members own 2 each")
        assert not ledger.violations, ledger.violations
        for m in members:
            assert {tp.partition for tp in m.consumer.assignment()} == m.owned, m.name
        # Records reach exactly the owner of their partition.
        produce_spread(group_broker, topic_name, 5)
        poll_until(members, lambda: sum(len(m.messages) for m in members) >= 5 * PARTITIONS,
                   "all 30 records consumed")
        for m in members:
            assert {msg.partition() for msg in m.messages} <= m.owned, m.name
        got = sorted((msg.partition(), msg.offset()) for m in members for msg in m.messages)
        assert got == sorted((p, o) for p in range(PARTITIONS) for o in range(5))
        assert not ledger.violations, ledger.violations
    finally:
        close_all(members)


# ----------------------------------------------------------------------------------------------
# a member killed without leaving is evicted after the session timeout
# ----------------------------------------------------------------------------------------------

def test_killed_member_partitions_move_after_session_timeout(group_broker, topic_name):
    create_topic(group_broker, topic_name, PARTITIONS)
    group, ledger = group_of(topic_name), Ownership()
    a = Member("a", group_broker, group, topic_name, ledger)
    b = Member("b", group_broker, group, topic_name, ledger)
    members = [a, b]
    try:
        poll_until(members, lambda: split_evenly([a.owned, b.owned]), "a and b own 3 each")
        child = ChildMember("child", group_broker, group, topic_name, ledger)
        members.append(child)
        poll_until(members, lambda: split_evenly([m.owned for m in members]),
                   "a, b and the child own 2 each")
        lost = set(child.owned)
        child.kill9()
        members.remove(child)
        poll_until(members, lambda: split_evenly([a.owned, b.owned]),
                   f"the killed member's partitions {sorted(lost)} move to a and b",
                   timeout=SESSION_MS / 1000 + SETTLE_S)
        assert lost <= a.owned | b.owned
        assert not ledger.violations, ledger.violations
    finally:
        close_all(members)


# ----------------------------------------------------------------------------------------------
# consume half, commit, close; the next member resumes exactly there
# ----------------------------------------------------------------------------------------------

def test_commit_then_new_member_resumes_without_gap_or_duplicate(group_broker, topic_name):
    create_topic(group_broker, topic_name, PARTITIONS)
    produce_spread(group_broker, topic_name, 50)
    total = 50 * PARTITIONS
    group, ledger = group_of(topic_name), Ownership()

    first = Member("first", group_broker, group, topic_name, ledger)
    try:
        poll_until([first], lambda: len(first.messages) >= total // 2, "first member reads half")
        taken = first.messages[: total // 2]
        next_offsets: dict[int, int] = {}
        for m in taken:
            next_offsets[m.partition()] = max(next_offsets.get(m.partition(), 0), m.offset() + 1)
        committed = first.consumer.commit(
            offsets=[TopicPartition(topic_name, p, o) for p, o in next_offsets.items()], asynchronous=False)
        assert all(tp.error is None for tp in committed), committed
    finally:
        first.close()

    second = Member("second", group_broker, group, topic_name, ledger)
    try:
        back = second.consumer.committed([TopicPartition(topic_name, p) for p in next_offsets], timeout=20)
        assert {tp.partition: tp.offset for tp in back} == next_offsets
        rest = total - len(taken)
        poll_until([second], lambda: len(second.messages) >= rest, f"second member reads the other {rest}")
        poll_for([second], 1.0)  # anything more would be a duplicate
        seen = [(m.partition(), m.offset()) for m in taken] + [(m.partition(), m.offset()) for m in second.messages]
        assert len(seen) == len(set(seen)), "a record was delivered twice"
        assert sorted(seen) == sorted((p, o) for p in range(PARTITIONS) for o in range(50)), "a gap"
        assert not second.errors, second.errors
    finally:
        second.close()


# ----------------------------------------------------------------------------------------------
# committed offsets survive kill -9 of the broker
# ----------------------------------------------------------------------------------------------

def committed_with_retry(c: Consumer, tps: list[TopicPartition], timeout: float = SETTLE_S):
    """committed(), retried while the coordinator is still loading __consumer_offsets."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return c.committed(tps, timeout=10)
        except KafkaException as e:
            last = e
            time.sleep(0.2)
    raise AssertionError(f"committed() kept failing for {timeout}s: {last}")


def test_committed_offsets_survive_broker_kill9(group_broker_proc, topic_name):
    bootstrap = group_broker_proc.bootstrap
    create_topic(bootstrap, topic_name, PARTITIONS)
    produce_spread(bootstrap, topic_name, 20)
    group = group_of(topic_name)
    want = {p: 3 + 2 * p for p in range(PARTITIONS)}

    c = group_consumer(bootstrap, group, logger=RDKAFKA_LOGGER)
    try:
        done = c.commit(offsets=[TopicPartition(topic_name, p, o) for p, o in want.items()], asynchronous=False)
        assert all(tp.error is None for tp in done), done
        # A second round on top, so replay has to keep the latest value per partition.
        want = {p: o + 1 for p, o in want.items()}
        done = c.commit(offsets=[TopicPartition(topic_name, p, o) for p, o in want.items()], asynchronous=False)
        assert all(tp.error is None for tp in done), done
    finally:
        c.close()
    group_broker_proc.restart(hard=True)

    # The group came back from __consumer_offsets too (Empty: it only ever held offsets).
    a = admin(bootstrap)
    deadline, seen = time.monotonic() + SETTLE_S, []
    while time.monotonic() < deadline:
        listed = a.list_consumer_groups(request_timeout=10).result(timeout=20)
        seen = [(g.group_id, g.state) for g in listed.valid if g.group_id == group]
        if seen:
            break
        time.sleep(0.2)
    assert seen == [(group, ConsumerGroupState.EMPTY)], listed

    ledger = Ownership()
    m = Member("after", bootstrap, group, topic_name, ledger)
    try:
        back = committed_with_retry(m.consumer, [TopicPartition(topic_name, p) for p in range(PARTITIONS)])
        assert {tp.partition: tp.offset for tp in back} == want
        remaining = sum(20 - o for o in want.values())
        poll_until([m], lambda: len(m.messages) >= remaining, f"resume reads the {remaining} uncommitted")
        firsts: dict[int, int] = {}
        for msg in m.messages:
            firsts.setdefault(msg.partition(), msg.offset())
        assert firsts == want
    finally:
        m.close()


def test_active_group_survives_broker_kill9(group_broker_proc, topic_name):
    bootstrap = group_broker_proc.bootstrap
    create_topic(bootstrap, topic_name, PARTITIONS)
    group, ledger = group_of(topic_name), Ownership()
    a = Member("a", bootstrap, group, topic_name, ledger)
    b = Member("b", bootstrap, group, topic_name, ledger)
    members = [a, b]
    try:
        poll_until(members, lambda: split_evenly([a.owned, b.owned]), "a and b own 3 each")
        produce_spread(bootstrap, topic_name, 3)
        poll_until(members, lambda: len(a.messages) + len(b.messages) >= 3 * PARTITIONS, "18 records consumed")
        for m in members:
            done = m.consumer.commit(asynchronous=False)
            assert all(tp.error is None for tp in done), done

        # The coordinator dies under a live group and comes back from __consumer_offsets.
        group_broker_proc.restart(hard=True)
        produce_spread(bootstrap, topic_name, 2, tag="after")
        poll_until(members, lambda: len(a.messages) + len(b.messages) >= 5 * PARTITIONS,
                   "the 12 records produced after the restart consumed")
        poll_until(members, lambda: split_evenly([a.owned, b.owned]), "a and b own 3 each again")
        assert not ledger.violations, ledger.violations
        seen = [(m.partition(), m.offset()) for x in members for m in x.messages]
        assert len(seen) == len(set(seen)), "a committed record was delivered again after the restart"
        assert sorted(seen) == sorted((p, o) for p in range(PARTITIONS) for o in range(5))
    finally:
        close_all(members)


# ----------------------------------------------------------------------------------------------
# static membership: a restart within the session timeout causes no rebalance
# ----------------------------------------------------------------------------------------------

def test_static_member_restart_causes_no_rebalance(group_broker, topic_name):
    create_topic(group_broker, topic_name, PARTITIONS)
    group, ledger = group_of(topic_name), Ownership()
    session_ms = 10000
    a = Member("a", group_broker, group, topic_name, ledger,
               **{"group.instance.id": "static-a", "session.timeout.ms": session_ms})
    members = [a]
    try:
        # a joins first and leads; the restarting member is a follower.
        poll_until(members, lambda: a.owned == set(range(PARTITIONS)), "a alone owns all 6")
        b = ChildMember("b", group_broker, group, topic_name, ledger,
                        **{"group.instance.id": "static-b", "session.timeout.ms": session_ms})
        members.append(b)
        poll_until(members, lambda: split_evenly([a.owned, b.owned]), "a and the static child own 3 each")
        b_parts = set(b.owned)
        a_events = len(a.events)

        killed_at = time.monotonic()
        b.kill9()
        members.remove(b)
        b2 = ChildMember("b2", group_broker, group, topic_name, ledger,
                         **{"group.instance.id": "static-b", "session.timeout.ms": session_ms})
        members.append(b2)
        poll_until(members, lambda: b2.owned == b_parts, "the restarted static member gets its partitions back")
        # Past the old session's deadline: the replaced member id must not expire into a rebalance.
        poll_for(members, max(0.0, session_ms / 1000 + 2 - (time.monotonic() - killed_at)))
        assert a.events[a_events:] == [], f"the other member saw a rebalance: {a.events[a_events:]}"
        assert a.owned == set(range(PARTITIONS)) - b_parts
        assert b2.events == [("assign", sorted(b_parts))], b2.events

        a_admin = admin(group_broker)  # held: a collected AdminClient never completes its futures
        desc = a_admin.describe_consumer_groups([group])[group].result(timeout=20)
        assert desc.state == ConsumerGroupState.STABLE
        assert sorted(m.group_instance_id for m in desc.members) == ["static-a", "static-b"]
        assert not ledger.violations, ledger.violations
    finally:
        close_all(members)


# ----------------------------------------------------------------------------------------------
# cooperative-sticky: members give up only what moves
# ----------------------------------------------------------------------------------------------

def test_cooperative_sticky_rebalances_incrementally(group_broker, topic_name):
    create_topic(group_broker, topic_name, PARTITIONS)
    group, ledger = group_of(topic_name), Ownership()
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    a = Member("a", group_broker, group, topic_name, ledger, **conf)
    members = [a]
    try:
        poll_until(members, lambda: a.owned == set(range(PARTITIONS)), "a alone owns all 6")
        mark = len(a.events)
        b = Member("b", group_broker, group, topic_name, ledger, **conf)
        members.append(b)
        poll_until(members, lambda: split_evenly([a.owned, b.owned]), "a and b own 3 each")
        # a revoked exactly the three that moved, and never had everything taken away.
        revoked = [set(p) for ev, p in a.events[mark:] if ev == "revoke"]
        assert revoked and set().union(*revoked) == b.owned, a.events[mark:]
        assert all(ev != "lost" for ev, _ in a.events), a.events

        kept_a, kept_b = set(a.owned), set(b.owned)
        c = Member("c", group_broker, group, topic_name, ledger, **conf)
        members.append(c)
        poll_until(members, lambda: split_evenly([m.owned for m in members]), "a, b and c own 2 each")
        # Sticky: a and b only lost partitions, none moved between them.
        assert a.owned <= kept_a and b.owned <= kept_b

        kept_a, kept_b = set(a.owned), set(b.owned)
        c.close()
        members.remove(c)
        poll_until(members, lambda: split_evenly([a.owned, b.owned]), "c's partitions go to a and b")
        assert kept_a <= a.owned and kept_b <= b.owned, "a survivor lost a partition when c left"
        assert not ledger.violations, ledger.violations
    finally:
        close_all(members)


# ----------------------------------------------------------------------------------------------
# kafka-python: subscribe, consume, commit, close; the next run resumes
# ----------------------------------------------------------------------------------------------

def kp_consumer(bootstrap: str, group: str, topic: str):
    from kafka import KafkaConsumer
    c = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
        request_timeout_ms=30000,
    )
    c.subscribe([topic])
    return c


def kp_take(c, n: int, timeout: float = SETTLE_S) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=1000, max_records=n - len(out)).values():
            out.extend(recs)
    assert len(out) == n, f"kafka-python read {len(out)} of {n} records in {timeout}s"
    return out


def test_kafka_python_group_commit_and_resume(group_broker, topic_name):
    from kafka import TopicPartition as KTP
    create_topic(group_broker, topic_name, PARTITIONS)
    produce_spread(group_broker, topic_name, 10)
    total, group = 10 * PARTITIONS, group_of(topic_name)

    c = kp_consumer(group_broker, group, topic_name)
    try:
        first = kp_take(c, total // 2)
        assert {tp.partition for tp in c.assignment()} == set(range(PARTITIONS))
        c.commit()
        expect = {}
        for r in first:
            expect[r.partition] = max(expect.get(r.partition, 0), r.offset + 1)
        for p, o in expect.items():
            assert c.committed(KTP(topic_name, p)) == o
    finally:
        c.close()

    c = kp_consumer(group_broker, group, topic_name)
    try:
        second = kp_take(c, total - len(first))
        extra = c.poll(timeout_ms=1000)
        assert not any(extra.values()), f"records beyond the end: {extra}"
        seen = [(r.partition, r.offset) for r in first + second]
        assert sorted(seen) == sorted((p, o) for p in range(PARTITIONS) for o in range(10))
        c.commit()
    finally:
        c.close()


class KpMember(threading.Thread):
    """A kafka-python member polling in its own thread (a KafkaConsumer is single-threaded, and
    two members polled in turn from one thread would stall each other's rebalance)."""

    def __init__(self, bootstrap: str, group: str, topic: str):
        super().__init__(daemon=True)
        self.consumer = kp_consumer(bootstrap, group, topic)
        self.owned: frozenset = frozenset()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            deadline = time.monotonic() + 2 * SETTLE_S
            while not self.stop.is_set() and time.monotonic() < deadline:
                # 1 s: kafka-python 3.0.12 can drop a join that outlives one poll() (its
                # ensure_active_group never completes a finished JoinGroup/SyncGroup task when
                # need_rejoin() has turned false meanwhile), so each poll leaves room for a join.
                self.consumer.poll(timeout_ms=1000)
                self.owned = frozenset(tp.partition for tp in self.consumer.assignment())
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.consumer.close()


def test_kafka_python_two_members_split(group_broker, topic_name):
    create_topic(group_broker, topic_name, PARTITIONS)
    group = group_of(topic_name)
    members = [KpMember(group_broker, group, topic_name)]
    members[0].start()
    try:
        wait_for(lambda: members[0].owned == frozenset(range(PARTITIONS)) or members[0].error,
                 "the first kafka-python member owns all 6")
        members.append(KpMember(group_broker, group, topic_name))
        members[1].start()
        wait_for(lambda: split_evenly([set(m.owned) for m in members]) or any(m.error for m in members),
                 "two kafka-python members own 3 each")
        assert not any(m.error for m in members), [m.error for m in members]
        assert split_evenly([set(m.owned) for m in members]), [m.owned for m in members]
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.join(timeout=15)


def wait_for(cond, what: str, timeout: float = SETTLE_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


# ----------------------------------------------------------------------------------------------
# KIP-848: group.protocol=consumer
# ----------------------------------------------------------------------------------------------

def broker_api_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    with RawConn(bootstrap) as c:
        cid = c.send_request(API_VERSIONS, 0, b"")
        got, body = c.recv_response()
        assert got == cid
        err, apis = parse_api_versions_v0(body)
        assert err == NONE
        return apis


def test_kip848_consumer_protocol_split_and_leave(group_broker, topic_name):
    if CONSUMER_GROUP_HEARTBEAT not in broker_api_versions(group_broker):
        pytest.skip("the broker does not advertise ConsumerGroupHeartbeat (KIP-848) in ApiVersions")
    create_topic(group_broker, topic_name, PARTITIONS)
    group, ledger = group_of(topic_name), Ownership()
    # The consumer protocol takes its timeouts and the assignor from the broker.
    conf = {"group.protocol": "consumer", "session.timeout.ms": None, "heartbeat.interval.ms": None}

    def new_member(name):
        return Member(name, group_broker, group, topic_name, ledger, **conf)

    a = new_member("a")
    members = [a]
    try:
        poll_until(members, lambda: a.owned == set(range(PARTITIONS)), "a alone owns all 6")
        b = new_member("b")
        members.append(b)
        poll_until(members, lambda: split_evenly([a.owned, b.owned]), "a and b own 3 each")
        assert not ledger.violations, ledger.violations
        # ConsumerGroupDescribe: a consumer-protocol group with both members and their targets.
        ad = admin(group_broker)
        desc = ad.describe_consumer_groups([group])[group].result(timeout=30)
        assert desc.type == ConsumerGroupType.CONSUMER and desc.state == ConsumerGroupState.STABLE, desc
        assert sorted(len(m.assignment.topic_partitions) for m in desc.members) == [3, 3], desc.members
        produce_spread(group_broker, topic_name, 2)
        poll_until(members, lambda: len(a.messages) + len(b.messages) >= 2 * PARTITIONS, "12 records consumed")
        assert {m.partition() for m in a.messages} <= a.owned and {m.partition() for m in b.messages} <= b.owned
        # Commits carry the member epoch (OffsetCommit v9+) and land.
        for m in (a, b):
            last: dict[int, int] = {}
            for msg in m.messages:
                last[msg.partition()] = msg.offset() + 1
            done = m.consumer.commit(offsets=[TopicPartition(topic_name, p, o) for p, o in last.items()],
                                     asynchronous=False)
            assert all(tp.error is None for tp in done), done
        req = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic_name, p) for p in range(PARTITIONS)])]
        got = ad.list_consumer_group_offsets(req)[group].result(timeout=30)
        assert {tp.partition: tp.offset for tp in got.topic_partitions} == {p: 2 for p in range(PARTITIONS)}

        b.close()
        members.remove(b)
        poll_until(members, lambda: a.owned == set(range(PARTITIONS)), "b's partitions move to a after it leaves")
        assert not ledger.violations, ledger.violations

        # A member killed without leaving is fenced after group.consumer.session.timeout.ms (6 s).
        child = ChildMember("child", group_broker, group, topic_name, ledger, **conf)
        members.append(child)
        poll_until(members, lambda: split_evenly([a.owned, child.owned]), "a and the child own 3 each")
        lost = set(child.owned)
        child.kill9()
        members.remove(child)
        poll_until(members, lambda: a.owned == set(range(PARTITIONS)),
                   f"the killed member's partitions {sorted(lost)} move to a", timeout=6 + SETTLE_S)
        assert not ledger.violations, ledger.violations
    finally:
        close_all(members)


def test_kip848_static_member_rejoin_keeps_its_partitions(group_broker, topic_name):
    if CONSUMER_GROUP_HEARTBEAT not in broker_api_versions(group_broker):
        pytest.skip("the broker does not advertise ConsumerGroupHeartbeat (KIP-848) in ApiVersions")
    create_topic(group_broker, topic_name, PARTITIONS)
    group, ledger = group_of(topic_name), Ownership()
    conf = {"group.protocol": "consumer", "session.timeout.ms": None, "heartbeat.interval.ms": None}
    a = Member("a", group_broker, group, topic_name, ledger, **conf)
    members = [a]
    try:
        poll_until(members, lambda: a.owned == set(range(PARTITIONS)), "a alone owns all 6")
        s1 = Member("s1", group_broker, group, topic_name, ledger, **{**conf, "group.instance.id": "inst"})
        members.append(s1)
        poll_until(members, lambda: split_evenly([a.owned, s1.owned]), "a and the static member own 3 each")
        mark, parts = len(a.events), set(s1.owned)
        # A static member's close is a temporary leave (epoch -2): its partitions wait for it.
        s1.close()
        members.remove(s1)
        s2 = Member("s2", group_broker, group, topic_name, ledger, **{**conf, "group.instance.id": "inst"})
        members.append(s2)
        poll_until(members, lambda: s2.owned == parts, "the returning static member gets its partitions back")
        poll_for(members, 2.0)
        assert a.events[mark:] == [], f"the other member saw its assignment change: {a.events[mark:]}"
        assert s2.events == [("assign", sorted(parts))], s2.events
        assert not ledger.violations, ledger.violations
    finally:
        close_all(members)


# ----------------------------------------------------------------------------------------------
# the admin API on groups
# ----------------------------------------------------------------------------------------------

def test_admin_list_describe_offsets_alter_delete(group_broker, topic_name):
    create_topic(group_broker, topic_name, PARTITIONS)
    produce_spread(group_broker, topic_name, 4)
    group, ledger = group_of(topic_name), Ownership()
    a = admin(group_broker)
    m = Member("m", group_broker, group, topic_name, ledger, **{"client.id": "admin-test-member"})
    try:
        poll_until([m], lambda: m.owned == set(range(PARTITIONS)), "member owns all 6")
        done = m.consumer.commit(offsets=[TopicPartition(topic_name, p, p % 4) for p in range(PARTITIONS)],
                                 asynchronous=False)
        assert all(tp.error is None for tp in done), done

        listed = a.list_consumer_groups(request_timeout=20).result(timeout=30)
        assert not listed.errors, listed.errors
        mine = [g for g in listed.valid if g.group_id == group]
        assert len(mine) == 1 and mine[0].state == ConsumerGroupState.STABLE, listed.valid
        assert not mine[0].is_simple_consumer_group
        empty = a.list_consumer_groups(request_timeout=20, states={ConsumerGroupState.EMPTY}).result(timeout=30)
        assert group not in {g.group_id for g in empty.valid}, "a stable group listed under the EMPTY filter"
        stable = a.list_consumer_groups(request_timeout=20, states={ConsumerGroupState.STABLE}).result(timeout=30)
        assert group in {g.group_id for g in stable.valid}, "missing under the STABLE filter"

        desc = a.describe_consumer_groups([group])[group].result(timeout=30)
        assert desc.group_id == group and desc.state == ConsumerGroupState.STABLE
        assert desc.partition_assignor in ("range", "roundrobin"), desc.partition_assignor
        assert len(desc.members) == 1
        [member] = desc.members
        assert member.client_id == "admin-test-member"
        assert {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions} == {
            (topic_name, p) for p in range(PARTITIONS)}

        req = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic_name, p) for p in range(PARTITIONS)])]
        got = a.list_consumer_group_offsets(req)[group].result(timeout=30)
        assert {tp.partition: tp.offset for tp in got.topic_partitions} == {p: p % 4 for p in range(PARTITIONS)}
        # All offsets of the group (no partition list: OffsetFetch with null topics).
        got_all = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=30)
        assert {(tp.topic, tp.partition, tp.offset) for tp in got_all.topic_partitions} == {
            (topic_name, p, p % 4) for p in range(PARTITIONS)}

        # Kafka refuses to delete a group with members, and to alter its offsets from outside.
        with pytest.raises(KafkaException) as e:
            a.delete_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
        assert e.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, e.value
        alter = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic_name, 0, 1)])]
        try:
            res = a.alter_consumer_group_offsets(alter)[group].result(timeout=30)
            codes = {tp.error.code() if tp.error is not None else 0 for tp in res.topic_partitions}
        except KafkaException as e:
            codes = {e.args[0].code()}
        assert codes == {KafkaError.UNKNOWN_MEMBER_ID}, codes
    finally:
        m.close()

    # Empty now: offsets may be altered from outside and the group deleted.
    alter = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic_name, p, 3) for p in range(PARTITIONS)])]
    res = a.alter_consumer_group_offsets(alter)[group].result(timeout=30)
    assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
    got = a.list_consumer_group_offsets(req)[group].result(timeout=30)
    assert {tp.partition: tp.offset for tp in got.topic_partitions} == {p: 3 for p in range(PARTITIONS)}
    desc = a.describe_consumer_groups([group])[group].result(timeout=30)
    assert desc.state == ConsumerGroupState.EMPTY and desc.members == []

    a.delete_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
    with pytest.raises(KafkaException) as e:
        a.delete_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
    assert e.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, e.value
    listed = a.list_consumer_groups(request_timeout=20).result(timeout=30)
    assert group not in {g.group_id for g in listed.valid}
    got = a.list_consumer_group_offsets(req)[group].result(timeout=30)
    assert all(tp.offset < 0 for tp in got.topic_partitions), "offsets outlived their deleted group"


# ----------------------------------------------------------------------------------------------
# bad input through hand-built requests (non-flexible versions, request header v1)
# ----------------------------------------------------------------------------------------------

class Writer:
    def __init__(self):
        self.b = bytearray()

    def i8(self, v):
        self.b += struct.pack(">b", v)
        return self

    def i16(self, v):
        self.b += struct.pack(">h", v)
        return self

    def i32(self, v):
        self.b += struct.pack(">i", v)
        return self

    def i64(self, v):
        self.b += struct.pack(">q", v)
        return self

    def s(self, v: str | None):
        self.b += kstr(v)
        return self

    def bytes_(self, v: bytes | None):
        if v is None:
            self.b += struct.pack(">i", -1)
        else:
            self.b += struct.pack(">i", len(v)) + v
        return self

    def array(self, items, each):
        if items is None:
            self.b += struct.pack(">i", -1)
            return self
        self.b += struct.pack(">i", len(items))
        for it in items:
            each(self, it)
        return self

    def done(self) -> bytes:
        return bytes(self.b)


class Reader:
    def __init__(self, data: bytes):
        self.d, self.o = data, 0

    def _take(self, fmt):
        (v,) = struct.unpack_from(fmt, self.d, self.o)
        self.o += struct.calcsize(fmt)
        return v

    def i8(self):
        return self._take(">b")

    def i16(self):
        return self._take(">h")

    def i32(self):
        return self._take(">i")

    def i64(self):
        return self._take(">q")

    def s(self):
        n = self.i16()
        if n < 0:
            return None
        v = self.d[self.o:self.o + n].decode()
        self.o += n
        return v

    def bytes_(self):
        n = self.i32()
        if n < 0:
            return None
        v = self.d[self.o:self.o + n]
        self.o += n
        return v

    def array(self, each):
        n = self.i32()
        return [] if n < 0 else [each(self) for _ in range(n)]


def subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0: what the "consumer" protocol carries as member metadata."""
    return Writer().i16(0).array(topics, lambda w, t: w.s(t)).bytes_(b"").done()


def assignment(parts: dict[str, list[int]]) -> bytes:
    """ConsumerProtocolAssignment v0."""
    return (Writer().i16(0)
            .array(list(parts.items()), lambda w, tp: w.s(tp[0]).array(tp[1], lambda w2, p: w2.i32(p)))
            .bytes_(b"").done())


def call(c: RawConn, api: int, version: int, body: bytes) -> Reader | None:
    """One request and its response body; None when the broker closed the connection."""
    cid = c.send_request(api, version, body)
    resp = c.closed_or_response(wait=20.0)
    if resp is None:
        return None
    got, payload = resp
    assert got == cid, f"correlation id {got} != {cid}"
    return Reader(payload)


def find_coordinator(c: RawConn, group: str, timeout: float = SETTLE_S) -> tuple[int, str, int]:
    """FindCoordinator v1, retried while the coordinator is not available or loading."""
    deadline = time.monotonic() + timeout
    err = None
    while time.monotonic() < deadline:
        r = call(c, FIND_COORDINATOR, 1, Writer().s(group).i8(0).done())
        assert r is not None, "broker closed the connection on FindCoordinator"
        r.i32()
        err = r.i16()
        r.s()  # error message
        node, host, port = r.i32(), r.s(), r.i32()
        if err == NONE:
            return node, host, port
        assert err in (COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR), err
        time.sleep(0.1)
    raise AssertionError(f"no coordinator for {group} within {timeout}s (last error {err})")


def join_group(c: RawConn, group: str, member_id: str = "", version: int = 5,
               protocols: list[tuple[str, bytes]] | None = None, instance_id: str | None = None,
               session_ms: int = SESSION_MS, rebalance_ms: int = SESSION_MS) -> dict | None:
    if protocols is None:
        protocols = [("range", subscription(["t"]))]
    w = Writer().s(group).i32(session_ms)
    if version >= 1:
        w.i32(rebalance_ms)
    w.s(member_id)
    if version >= 5:
        w.s(instance_id)
    w.s("consumer").array(protocols, lambda w2, p: w2.s(p[0]).bytes_(p[1]))
    r = call(c, JOIN_GROUP, version, w.done())
    if r is None:
        return None
    if version >= 2:
        r.i32()
    out = {"error": r.i16(), "generation": r.i32(), "protocol": r.s(), "leader": r.s(), "member_id": r.s()}

    def member(rr):
        mid = rr.s()
        inst = rr.s() if version >= 5 else None
        return (mid, inst, rr.bytes_())

    out["members"] = r.array(member)
    return out


def sync_group(c: RawConn, group: str, generation: int, member_id: str,
               assignments: list[tuple[str, bytes]], instance_id: str | None = None) -> tuple[int, bytes | None] | None:
    body = (Writer().s(group).i32(generation).s(member_id).s(instance_id)
            .array(assignments, lambda w, a: w.s(a[0]).bytes_(a[1])).done())
    r = call(c, SYNC_GROUP, 3, body)
    if r is None:
        return None
    r.i32()
    return r.i16(), r.bytes_()


def heartbeat(c: RawConn, group: str, generation: int, member_id: str, instance_id: str | None = None) -> int:
    r = call(c, HEARTBEAT, 3, Writer().s(group).i32(generation).s(member_id).s(instance_id).done())
    assert r is not None, "broker closed the connection on Heartbeat"
    r.i32()
    return r.i16()


def leave_group(c: RawConn, group: str, member_ids: list[str]) -> tuple[int, list[tuple[str, int]]]:
    body = Writer().s(group).array(member_ids, lambda w, m: w.s(m).s(None)).done()
    r = call(c, LEAVE_GROUP, 3, body)
    assert r is not None, "broker closed the connection on LeaveGroup"
    r.i32()
    err = r.i16()
    return err, r.array(lambda rr: (rr.s(), rr.s(), rr.i16())[::2])


def offset_commit(c: RawConn, group: str, generation: int, member_id: str,
                  offsets: dict[str, dict[int, int]], metadata: str | None = None) -> dict[tuple[str, int], int]:
    """OffsetCommit v7 -> {(topic, partition): error_code}."""
    def topic(w, item):
        name, parts = item
        w.s(name).array(list(parts.items()), lambda w2, po: w2.i32(po[0]).i64(po[1]).i32(-1).s(metadata))

    body = Writer().s(group).i32(generation).s(member_id).s(None).array(list(offsets.items()), topic).done()
    r = call(c, OFFSET_COMMIT, 7, body)
    assert r is not None, "broker closed the connection on OffsetCommit"
    r.i32()
    out = {}
    for name, parts in r.array(lambda rr: (rr.s(), rr.array(lambda r2: (r2.i32(), r2.i16())))):
        for p, err in parts:
            out[(name, p)] = err
    return out


def offset_fetch(c: RawConn, group: str, topics: dict[str, list[int]]) -> tuple[int, dict[tuple[str, int], tuple[int, int]]]:
    """OffsetFetch v5 -> (group error, {(topic, partition): (offset, error)})."""
    body = Writer().s(group).array(list(topics.items()), lambda w, t: w.s(t[0]).array(t[1], lambda w2, p: w2.i32(p))).done()
    r = call(c, OFFSET_FETCH, 5, body)
    assert r is not None, "broker closed the connection on OffsetFetch"
    r.i32()
    out = {}
    for name, parts in r.array(lambda rr: (rr.s(), rr.array(lambda r2: (r2.i32(), r2.i64(), r2.i32(), r2.s(), r2.i16())))):
        for p, off, _epoch, _meta, err in parts:
            out[(name, p)] = (off, err)
    return r.i16(), out


def offset_delete(c: RawConn, group: str, topics: dict[str, list[int]]) -> tuple[int, dict[tuple[str, int], int]]:
    """OffsetDelete v0 -> (group error, {(topic, partition): error})."""
    body = Writer().s(group).array(list(topics.items()), lambda w, t: w.s(t[0]).array(t[1], lambda w2, p: w2.i32(p))).done()
    r = call(c, OFFSET_DELETE, 0, body)
    assert r is not None, "broker closed the connection on OffsetDelete"
    err = r.i16()
    r.i32()
    out = {}
    for name, parts in r.array(lambda rr: (rr.s(), rr.array(lambda r2: (r2.i32(), r2.i16())))):
        for p, perr in parts:
            out[(name, p)] = perr
    return err, out


def join_alone(c: RawConn, group: str, topic: str) -> tuple[str, int]:
    """MEMBER_ID_REQUIRED flow, then a SyncGroup as leader of a one-member group; bounded."""
    deadline = time.monotonic() + SETTLE_S
    member_id, last = "", None
    while time.monotonic() < deadline:
        j = join_group(c, group, member_id, protocols=[("range", subscription([topic]))])
        assert j is not None, "broker closed the connection on JoinGroup"
        last = j
        if j["error"] == MEMBER_ID_REQUIRED:
            member_id = j["member_id"]
            continue
        if j["error"] in (REBALANCE_IN_PROGRESS, COORDINATOR_LOAD_IN_PROGRESS):
            time.sleep(0.1)
            continue
        assert j["error"] == NONE, j
        member_id = j["member_id"]
        assert j["leader"] == member_id and [m[0] for m in j["members"]] == [member_id], j
        s = sync_group(c, group, j["generation"], member_id, [(member_id, assignment({topic: [0]}))])
        assert s is not None, "broker closed the connection on SyncGroup"
        if s[0] == REBALANCE_IN_PROGRESS:
            continue
        assert s[0] == NONE, s
        return member_id, j["generation"]
    raise AssertionError(f"could not join {group} alone within {SETTLE_S}s: {last}")


def test_raw_join_member_id_required_then_join(group_broker, topic_name):
    create_topic(group_broker, topic_name, 1)
    group = group_of(topic_name)
    with RawConn(group_broker) as c:
        find_coordinator(c, group)
        for version in (4, 5):
            g = f"{group}-v{version}"
            first = join_group(c, g, "", version=version, protocols=[("range", subscription([topic_name]))])
            assert first is not None and first["error"] == MEMBER_ID_REQUIRED, first
            assert first["member_id"], "MEMBER_ID_REQUIRED must carry the member id to use"
            second = join_group(c, g, first["member_id"], version=version,
                                protocols=[("range", subscription([topic_name]))])
            assert second is not None and second["error"] == NONE, second
            assert second["member_id"] == first["member_id"]
            assert second["leader"] == first["member_id"] and second["generation"] >= 1
            assert second["protocol"] == "range"
            [(mid, _inst, meta)] = second["members"]
            assert mid == first["member_id"] and meta == subscription([topic_name])
            s = sync_group(c, g, second["generation"], mid, [(mid, assignment({topic_name: [0]}))])
            assert s == (NONE, assignment({topic_name: [0]})), s
            assert heartbeat(c, g, second["generation"], mid) == NONE
        # Before v4 the coordinator assigns the member id in the same round trip.
        old = join_group(c, f"{group}-v3", "", version=3, protocols=[("range", subscription([topic_name]))])
        assert old is not None and old["error"] == NONE and old["member_id"], old


def test_raw_unknown_member_and_illegal_generation(group_broker, topic_name):
    create_topic(group_broker, topic_name, 1)
    group = group_of(topic_name)
    with RawConn(group_broker) as c:
        find_coordinator(c, group)
        member, gen = join_alone(c, group, topic_name)

        assert heartbeat(c, group, gen, "no-such-member") == UNKNOWN_MEMBER_ID
        s = sync_group(c, group, gen, "no-such-member", [])
        assert s is not None and s[0] == UNKNOWN_MEMBER_ID, s
        j = join_group(c, group, "no-such-member", protocols=[("range", subscription([topic_name]))])
        assert j is not None and j["error"] == UNKNOWN_MEMBER_ID, j
        errs = offset_commit(c, group, gen, "no-such-member", {topic_name: {0: 1}})
        assert errs == {(topic_name, 0): UNKNOWN_MEMBER_ID}, errs

        assert heartbeat(c, group, gen + 7, member) == ILLEGAL_GENERATION
        errs = offset_commit(c, group, gen + 7, member, {topic_name: {0: 1}})
        assert errs == {(topic_name, 0): ILLEGAL_GENERATION}, errs
        s = sync_group(c, group, gen + 7, member, [])
        assert s is not None and s[0] == ILLEGAL_GENERATION, s

        # None of that disturbed the member: it still heartbeats and commits.
        assert heartbeat(c, group, gen, member) == NONE
        assert offset_commit(c, group, gen, member, {topic_name: {0: 5}}) == {(topic_name, 0): NONE}
        err, got = offset_fetch(c, group, {topic_name: [0]})
        assert err == NONE and got == {(topic_name, 0): (5, NONE)}, (err, got)
        err, left = leave_group(c, group, [member, "no-such-member"])
        assert err == NONE and dict(left) == {member: NONE, "no-such-member": UNKNOWN_MEMBER_ID}, (err, left)


def test_raw_offset_commit_unknown_topic_or_partition(group_broker, topic_name):
    create_topic(group_broker, topic_name, 2)
    group = group_of(topic_name)
    missing = f"{topic_name}-missing"
    with RawConn(group_broker) as c:
        find_coordinator(c, group)
        # A standalone commit (generation -1, no member), as admin tools and assign() users do.
        errs = offset_commit(c, group, -1, "", {topic_name: {0: 7, 1: 8, 2: 9, 99: 1}, missing: {0: 1}})
        assert errs == {
            (topic_name, 0): NONE, (topic_name, 1): NONE, (topic_name, 2): UNKNOWN_TOPIC_OR_PARTITION,
            (topic_name, 99): UNKNOWN_TOPIC_OR_PARTITION, (missing, 0): UNKNOWN_TOPIC_OR_PARTITION,
        }, errs
        err, got = offset_fetch(c, group, {topic_name: [0, 1, 2]})
        assert err == NONE
        assert got[(topic_name, 0)] == (7, NONE) and got[(topic_name, 1)] == (8, NONE), got
        assert got[(topic_name, 2)][0] == -1, got

        # The same inside a live group, and the group keeps working afterwards.
        member, gen = join_alone(c, group, topic_name)
        errs = offset_commit(c, group, gen, member, {topic_name: {1: 11, 5: 1}, missing: {3: 1}})
        assert errs == {(topic_name, 1): NONE, (topic_name, 5): UNKNOWN_TOPIC_OR_PARTITION,
                        (missing, 3): UNKNOWN_TOPIC_OR_PARTITION}, errs
        assert heartbeat(c, group, gen, member) == NONE
        err, got = offset_fetch(c, group, {topic_name: [0, 1]})
        assert err == NONE and got == {(topic_name, 0): (7, NONE), (topic_name, 1): (11, NONE)}, got


def test_raw_join_with_empty_protocol_list(group_broker, topic_name):
    create_topic(group_broker, topic_name, 1)
    group = group_of(topic_name)
    with RawConn(group_broker) as c:
        find_coordinator(c, group)
        for version in (3, 5):
            j = join_group(c, group, "", version=version, protocols=[])
            assert j is not None and j["error"] == INCONSISTENT_GROUP_PROTOCOL, j
        # Nothing was left behind: the group forms normally.
        member, gen = join_alone(c, group, topic_name)
        # A protocol no member shares is refused too.
        with RawConn(group_broker) as c2:
            j = join_group(c2, group, "", version=3, protocols=[("no-such-assignor", b"")])
            assert j is not None and j["error"] == INCONSISTENT_GROUP_PROTOCOL, j
        assert heartbeat(c, group, gen, member) == NONE


def test_raw_oversized_member_metadata(group_broker, topic_name):
    create_topic(group_broker, topic_name, 1)
    group = group_of(topic_name)
    huge = subscription([topic_name]) + os.urandom(4 << 20)  # 4 MiB, far above message.max.bytes
    with RawConn(group_broker) as bystander, RawConn(group_broker) as c:
        find_coordinator(bystander, group)
        outcome, member_id = [], ""
        # Follow the join flow for as long as the broker goes along with it.
        for _ in range(3):
            j = join_group(c, group, member_id, protocols=[("range", huge)], session_ms=SESSION_MS,
                           rebalance_ms=SESSION_MS)
            if j is None:
                outcome.append("closed")
                break
            outcome.append(j["error"])
            if j["error"] == MEMBER_ID_REQUIRED:
                member_id = j["member_id"]
                continue
            if j["error"] == NONE:
                member_id = j["member_id"]
                s = sync_group(c, group, j["generation"], member_id, [(member_id, assignment({topic_name: [0]}))])
                outcome.append("sync:" + ("closed" if s is None else str(s[0])))
            break
        print(f"oversized member metadata: {outcome}")
        if member_id:
            leave_group(bystander, group, [member_id])  # whatever it became, take it out

        # The other connection and the group are unaffected.
        with RawConn(group_broker) as fresh:
            member, gen = join_alone(fresh, group, topic_name)
            assert heartbeat(fresh, group, gen, member) == NONE
            assert offset_commit(fresh, group, gen, member, {topic_name: {0: 1}}) == {(topic_name, 0): NONE}
        assert heartbeat(bystander, group, gen, member) == NONE


def test_raw_static_member_replaced_and_old_id_fenced(group_broker, topic_name):
    create_topic(group_broker, topic_name, 2)
    group = group_of(topic_name)
    protocols = [("range", subscription([topic_name]))]
    with RawConn(group_broker) as c1, RawConn(group_broker) as c2:
        find_coordinator(c1, group)
        # A static member joins without MEMBER_ID_REQUIRED and leads generation 1.
        j1 = join_group(c1, group, "", protocols=protocols, instance_id="inst-1")
        assert j1 is not None and j1["error"] == NONE and j1["leader"] == j1["member_id"], j1
        old = j1["member_id"]
        mine = assignment({topic_name: [0, 1]})
        assert sync_group(c1, group, j1["generation"], old, [(old, mine)], instance_id="inst-1") == (NONE, mine)

        # The same instance joins again (a restart): new member id, same generation, no rebalance.
        j2 = join_group(c2, group, "", protocols=protocols, instance_id="inst-1")
        assert j2 is not None and j2["error"] == NONE, j2
        new = j2["member_id"]
        assert new and new != old and j2["generation"] == j1["generation"], j2
        s = sync_group(c2, group, j2["generation"], new, [], instance_id="inst-1")
        assert s == (NONE, mine), s
        assert heartbeat(c2, group, j2["generation"], new, instance_id="inst-1") == NONE

        # The replaced incarnation is fenced.
        assert heartbeat(c1, group, j1["generation"], old, instance_id="inst-1") == FENCED_INSTANCE_ID
        errs = offset_commit_static(c1, group, j1["generation"], old, "inst-1", {topic_name: {0: 3}})
        assert errs == {(topic_name, 0): FENCED_INSTANCE_ID}, errs
        assert heartbeat(c2, group, j2["generation"], new, instance_id="inst-1") == NONE


def offset_commit_static(c: RawConn, group: str, generation: int, member_id: str, instance_id: str,
                         offsets: dict[str, dict[int, int]]) -> dict[tuple[str, int], int]:
    """OffsetCommit v7 carrying a group instance id."""
    def topic(w, item):
        name, parts = item
        w.s(name).array(list(parts.items()), lambda w2, po: w2.i32(po[0]).i64(po[1]).i32(-1).s(None))

    body = Writer().s(group).i32(generation).s(member_id).s(instance_id).array(list(offsets.items()), topic).done()
    r = call(c, OFFSET_COMMIT, 7, body)
    assert r is not None, "broker closed the connection on OffsetCommit"
    r.i32()
    return {(name, p): err for name, parts in r.array(lambda rr: (rr.s(), rr.array(lambda r2: (r2.i32(), r2.i16()))))
            for p, err in parts}


@pytest.mark.broker_config(**{"group.max.size": 1})
def test_raw_group_max_size_and_session_timeout_bounds(group_broker, topic_name):
    create_topic(group_broker, topic_name, 1)
    group = group_of(topic_name)
    with RawConn(group_broker) as c, RawConn(group_broker) as c2:
        find_coordinator(c, group)
        for bad in (500, 120_000):  # outside group.min/max.session.timeout.ms (1 s .. 60 s)
            j = join_group(c, group, "", session_ms=bad)
            assert j is not None and j["error"] == INVALID_SESSION_TIMEOUT, (bad, j)
        member, gen = join_alone(c, group, topic_name)
        j = join_group(c2, group, "", protocols=[("range", subscription([topic_name]))])
        assert j is not None and j["error"] == GROUP_MAX_SIZE_REACHED, j
        assert heartbeat(c, group, gen, member) == NONE


def test_raw_offset_metadata_too_large(group_broker, topic_name):
    create_topic(group_broker, topic_name, 1)
    group = group_of(topic_name)
    with RawConn(group_broker) as c:
        find_coordinator(c, group)
        errs = offset_commit(c, group, -1, "", {topic_name: {0: 4}}, metadata="m" * 5000)
        assert errs == {(topic_name, 0): OFFSET_METADATA_TOO_LARGE}, errs
        err, got = offset_fetch(c, group, {topic_name: [0]})
        assert err == NONE and got[(topic_name, 0)][0] == -1, got
        assert offset_commit(c, group, -1, "", {topic_name: {0: 4}}, metadata="m" * 100) == {(topic_name, 0): NONE}
        err, got = offset_fetch(c, group, {topic_name: [0]})
        assert got == {(topic_name, 0): (4, NONE)}, got


def test_raw_offset_delete(group_broker, topic_name):
    other = f"{topic_name}-other"
    create_topic(group_broker, topic_name, 2)
    create_topic(group_broker, other, 1)
    group = group_of(topic_name)
    with RawConn(group_broker) as c:
        find_coordinator(c, group)
        err, _ = offset_delete(c, f"{group}-nope", {topic_name: [0]})
        assert err == GROUP_ID_NOT_FOUND, err
        assert offset_commit(c, group, -1, "", {topic_name: {0: 5, 1: 6}, other: {0: 7}}) == {
            (topic_name, 0): NONE, (topic_name, 1): NONE, (other, 0): NONE}
        # Empty group: offsets go.
        err, parts = offset_delete(c, group, {topic_name: [0]})
        assert err == NONE and parts == {(topic_name, 0): NONE}, (err, parts)
        err, got = offset_fetch(c, group, {topic_name: [0, 1], other: [0]})
        assert got == {(topic_name, 0): (-1, NONE), (topic_name, 1): (6, NONE), (other, 0): (7, NONE)}, got

        # A member subscribed to the topic protects its offsets; others may still go.
        member, gen = join_alone(c, group, topic_name)
        err, parts = offset_delete(c, group, {topic_name: [1], other: [0]})
        assert err == NONE and parts == {(topic_name, 1): GROUP_SUBSCRIBED_TO_TOPIC, (other, 0): NONE}, (err, parts)
        err, got = offset_fetch(c, group, {topic_name: [1], other: [0]})
        assert got == {(topic_name, 1): (6, NONE), (other, 0): (-1, NONE)}, got
        assert heartbeat(c, group, gen, member) == NONE


def test_raw_member_that_does_not_rejoin_is_dropped_after_rebalance_timeout(group_broker, topic_name):
    create_topic(group_broker, topic_name, 2)
    group = group_of(topic_name)
    protocols = [("range", subscription([topic_name]))]
    with RawConn(group_broker) as ca, RawConn(group_broker) as cb:
        find_coordinator(ca, group)
        # A: long session, 2 s rebalance timeout; it keeps heartbeating but never rejoins.
        first = join_group(ca, group, "", protocols=protocols, session_ms=30000, rebalance_ms=2000)
        assert first is not None and first["error"] == MEMBER_ID_REQUIRED, first
        ja = join_group(ca, group, first["member_id"], protocols=protocols, session_ms=30000, rebalance_ms=2000)
        assert ja is not None and ja["error"] == NONE, ja
        a = ja["member_id"]
        assert sync_group(ca, group, ja["generation"], a, [(a, assignment({topic_name: [0, 1]}))])[0] == NONE

        first = join_group(cb, group, "", protocols=protocols, session_ms=30000, rebalance_ms=2000)
        assert first is not None and first["error"] == MEMBER_ID_REQUIRED, first
        b = first["member_id"]
        # B's join starts a rebalance and waits for A, which is told to rejoin and does not.
        cid = cb.send_request(JOIN_GROUP, 5, Writer().s(group).i32(30000).i32(2000).s(b).s(None).s("consumer")
                              .array(protocols, lambda w, p: w.s(p[0]).bytes_(p[1])).done())
        assert heartbeat(ca, group, ja["generation"], a) == REBALANCE_IN_PROGRESS
        resp = cb.closed_or_response(wait=20.0)
        assert resp is not None and resp[0] == cid, resp
        r = Reader(resp[1])
        r.i32()
        err, gen, proto, leader, mid = r.i16(), r.i32(), r.s(), r.s(), r.s()
        members = r.array(lambda rr: (rr.s(), rr.s(), rr.bytes_()))
        assert (err, mid, leader, proto) == (NONE, b, b, "range"), (err, mid, leader, proto)
        assert gen == ja["generation"] + 1 and [m[0] for m in members] == [b], (gen, members)
        assert heartbeat(ca, group, ja["generation"], a) == UNKNOWN_MEMBER_ID
        assert sync_group(cb, group, gen, b, [(b, assignment({topic_name: [0, 1]}))])[0] == NONE
        assert heartbeat(cb, group, gen, b) == NONE


# ----------------------------------------------------------------------------------------------
# KIP-848 bad input: ConsumerGroupHeartbeat v0 (flexible: compact fields, request header v2)
# ----------------------------------------------------------------------------------------------

FENCED_MEMBER_EPOCH = 110
UNSUPPORTED_ASSIGNOR = 112
INVALID_REQUEST = 42


def cstr(v: str | None) -> bytes:
    if v is None:
        return uvarint(0)
    b = v.encode()
    return uvarint(len(b) + 1) + b


def cg_heartbeat(c: RawConn, group: str, member_id: str, epoch: int, topics: list[str] | None,
                 rebalance_ms: int = 10000, instance_id: str | None = None, assignor: str | None = None,
                 owned: list | None = None) -> dict | None:
    """ConsumerGroupHeartbeat v0 -> {error, member_id, epoch, interval_ms, assigned: partitions or None}."""
    body = (cstr(group) + cstr(member_id) + struct.pack(">i", epoch) + cstr(instance_id) + cstr(None)
            + struct.pack(">i", rebalance_ms)
            + (uvarint(0) if topics is None else uvarint(len(topics) + 1) + b"".join(cstr(t) for t in topics))
            + cstr(assignor)
            + (uvarint(0) if owned is None else uvarint(len(owned) + 1))  # only empty lists are sent
            + b"\x00")
    cid = c.next_id
    c.next_id += 1
    header = struct.pack(">hhi", CONSUMER_GROUP_HEARTBEAT, 0, cid) + kstr("raw") + b"\x00"
    c.send_raw(frame(header + body))
    resp = c.closed_or_response(wait=20.0)
    if resp is None:
        return None
    got, payload = resp
    assert got == cid, (got, cid)
    r = CReader(payload)
    r.uvarint()  # response header v1: tagged fields
    r.i32()  # throttle
    out = {"error": r.i16()}
    r.cstr()  # error message
    out["member_id"], out["epoch"], out["interval_ms"] = r.cstr(), r.i32(), r.i32()
    out["assigned"] = None
    if r.i8() >= 0:  # nullable struct: -1 absent
        parts = []
        for _ in range(r.uvarint() - 1):
            r.take(16)  # topic id
            parts += [r.i32() for _ in range(r.uvarint() - 1)]
            r.uvarint()  # topic's tagged fields
        r.uvarint()  # assignment's tagged fields
        out["assigned"] = sorted(parts)
    return out


class CReader(Reader):
    def uvarint(self) -> int:
        shift = out = 0
        while True:
            b = self.d[self.o]
            self.o += 1
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7

    def cstr(self):
        n = self.uvarint()
        if n == 0:
            return None
        v = self.d[self.o:self.o + n - 1].decode()
        self.o += n - 1
        return v

    def take(self, n: int) -> bytes:
        v = self.d[self.o:self.o + n]
        self.o += n
        return v


def test_raw_kip848_heartbeat_errors(group_broker, topic_name):
    if CONSUMER_GROUP_HEARTBEAT not in broker_api_versions(group_broker):
        pytest.skip("the broker does not advertise ConsumerGroupHeartbeat (KIP-848) in ApiVersions")
    create_topic(group_broker, topic_name, PARTITIONS)
    group = group_of(topic_name)
    with RawConn(group_broker) as c:
        find_coordinator(c, group)
        # Joining (epoch 0) needs a subscription, a rebalance timeout and an empty owned list.
        bad = cg_heartbeat(c, group, "", 0, None, owned=[])
        assert bad is not None and bad["error"] == INVALID_REQUEST, bad
        bad = cg_heartbeat(c, group, "", 0, [topic_name], rebalance_ms=-1, owned=[])
        assert bad is not None and bad["error"] == INVALID_REQUEST, bad
        bad = cg_heartbeat(c, group, "", 0, [topic_name], assignor="no-such-assignor", owned=[])
        assert bad is not None and bad["error"] == UNSUPPORTED_ASSIGNOR, bad
        bad = cg_heartbeat(c, group, "", 7, [topic_name])  # epoch > 0 without a member id
        assert bad is not None and bad["error"] == INVALID_REQUEST, bad

        joined = cg_heartbeat(c, group, "", 0, [topic_name], owned=[])
        assert joined is not None and joined["error"] == NONE, joined
        member, epoch = joined["member_id"], joined["epoch"]
        assert member and epoch >= 1 and joined["interval_ms"] == 500, joined
        # The lone member is given every partition, now or on its next heartbeat.
        assigned = joined["assigned"]
        if assigned is None:
            again = cg_heartbeat(c, group, member, epoch, None, owned=None)
            assert again is not None and again["error"] == NONE, again
            assigned, epoch = again["assigned"], again["epoch"]
        assert assigned == list(range(PARTITIONS)), assigned

        bad = cg_heartbeat(c, group, "no-such-member", epoch, None)
        assert bad is not None and bad["error"] == UNKNOWN_MEMBER_ID, bad
        bad = cg_heartbeat(c, group, member, epoch + 10, None)
        assert bad is not None and bad["error"] == FENCED_MEMBER_EPOCH, bad
        ok = cg_heartbeat(c, group, member, epoch, None)
        assert ok is not None and ok["error"] == NONE and ok["epoch"] == epoch, ok

        # Leaving (epoch -1) answers epoch -1; the member is gone afterwards.
        left = cg_heartbeat(c, group, member, -1, None)
        assert left is not None and left["error"] == NONE and left["epoch"] == -1, left
        gone = cg_heartbeat(c, group, member, epoch, None)
        assert gone is not None and gone["error"] == UNKNOWN_MEMBER_ID, gone


def test_kip848_live_group_survives_broker_kill9_without_rebalance(group_broker_proc, topic_name):
    """The coordinator stores a consumer-protocol group's state; after a kill -9 the members
    carry on heartbeating with their ids and epochs: no partition is revoked, lost or moved."""
    bootstrap = group_broker_proc.bootstrap
    if CONSUMER_GROUP_HEARTBEAT not in broker_api_versions(bootstrap):
        pytest.skip("the broker does not advertise ConsumerGroupHeartbeat (KIP-848) in ApiVersions")
    create_topic(bootstrap, topic_name, PARTITIONS)
    group, ledger = group_of(topic_name), Ownership()
    conf = {"group.protocol": "consumer", "session.timeout.ms": None, "heartbeat.interval.ms": None}
    a = Member("a", bootstrap, group, topic_name, ledger, **conf)
    members = [a]
    try:
        poll_until(members, lambda: a.owned == set(range(PARTITIONS)), "a alone owns all 6")
        b = Member("b", bootstrap, group, topic_name, ledger, **conf)
        members.append(b)
        poll_until(members, lambda: split_evenly([a.owned, b.owned]), "a and b own 3 each")
        before = {m.name: (set(m.owned), len(m.events)) for m in members}

        group_broker_proc.restart(hard=True)
        produce_spread(bootstrap, topic_name, 2, tag="after")
        poll_until(members, lambda: len(a.messages) + len(b.messages) >= 2 * PARTITIONS,
                   "the 12 records produced after the restart consumed")
        # A few more heartbeat periods (500 ms on this broker) to let any rebalance show.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for m in members:
                m.poll()
        after = {m.name: (set(m.owned), len(m.events)) for m in members}
        assert after == before, [m.events for m in members]
        assert not ledger.violations, ledger.violations
    finally:
        close_all(members)
