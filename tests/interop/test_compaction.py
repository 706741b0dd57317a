"""Log compaction (cleanup.policy=compact) seen by real clients: the latest value of every key
survives at its original offset, older values go, tombstones stay for delete.retention.ms and
then go, a keyless record is refused with INVALID_RECORD, and all of it survives a restart.

The broker runs its cleaner every 100 ms (log.cleaner.backoff.ms); topics use 1 KiB segments
and min.cleanable.dirty.ratio=0.01 so a few hundred small records make the log due at once.
Every wait is a bounded poll loop."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, TopicPartition

from helpers import (
    DeliveryLog,
    admin,
    consumer,
    create_topic,
    flush,
    kcat,
    kcat_json_lines,
    producer,
)

CLEANER = {"log.cleaner.backoff.ms": 100}
DELETE_RETENTION_MS = 3000
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "1024",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": str(DELETE_RETENTION_MS),
    "file.delete.delay.ms": "0",
}
KEYS = [f"key-{i}" for i in range(5)]
UPDATES = 120
WAIT_S = 60.0


def small_batch_producer(bootstrap: str):
    # Batches must fit a 1 KiB segment: a handful of small records each.
    return producer(bootstrap, **{"batch.num.messages": 5, "linger.ms": 1, "compression.type": "none"})


def read_all(bootstrap: str, topic: str) -> list:
    """Every record of partition 0 from the start to the high watermark."""
    low, high = admin_watermarks(bootstrap, topic)
    if high <= low:
        return []
    c = consumer(bootstrap, **{"enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, 0, low)])
        out = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msgs = c.consume(num_messages=1000, timeout=1.0)
            done = False
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        done = True
                        continue
                    raise AssertionError(f"consume error: {m.error()}")
                out.append(m)
            if done or (out and out[-1].offset() >= high - 1):
                return out
        raise AssertionError(f"could not read {topic} up to {high} (got {len(out)} records)")
    finally:
        c.close()


def admin_watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def one_per_key(bootstrap: str, topic: str):
    """(done, records): done once every key of KEYS has exactly one record left (the filler
    after the updates keeps them all out of the active segment, which is never cleaned)."""
    recs = read_all(bootstrap, topic)
    keyed = [m for m in recs if m.key() in {k.encode() for k in KEYS}]
    return len(keyed) == len(KEYS), recs


def latest_by_key(records) -> dict:
    latest = {}
    for m in records:
        latest[m.key()] = (m.offset(), m.value())
    return latest


def wait_until(what: str, check, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = check()
        if ok:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last state: {last}")


def produce_updates(bootstrap: str, topic: str, tombstone_key: str | None) -> dict:
    """UPDATES values per key, then an optional tombstone, then filler that rolls the segment
    so every update is in a sealed, cleanable segment. Returns key -> (offset, value) acked."""
    log = DeliveryLog()
    p = small_batch_producer(bootstrap)
    for u in range(UPDATES):
        for k in KEYS:
            p.produce(topic, key=k.encode(), value=f"{k}-v{u}".encode(), on_delivery=log)
        p.poll(0)
    if tombstone_key is not None:
        p.produce(topic, key=tombstone_key.encode(), value=None, on_delivery=log)
    for i in range(40):
        p.produce(topic, key=f"filler-{i}".encode(), value=b"f", on_delivery=log)
    flush(p)
    assert not log.errors, log.errors[:3]
    return {k: (o, v) for (_, o, k, v) in sorted(log.acked, key=lambda a: a[1])}


@pytest.mark.broker_config(**CLEANER)
def test_latest_value_per_key_survives_at_its_offset(broker, topic_name):
    create_topic(broker, topic_name, 1, TOPIC_CONFIG)
    acked = produce_updates(broker, topic_name, tombstone_key=None)
    produced = UPDATES * len(KEYS) + 40

    recs = wait_until("the cleaner to keep one record per key", lambda: one_per_key(broker, topic_name))
    offsets = [m.offset() for m in recs]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert offsets[0] > 0, "the earliest updates are gone"
    low, high = admin_watermarks(broker, topic_name)
    assert (low, high) == (0, produced), "compaction moves neither the log start nor the end"
    latest = latest_by_key(recs)
    for k in KEYS:
        key = k.encode()
        # The latest value is there, at the offset the producer was given.
        assert latest[key] == acked[key], k
        assert latest[key][1] == f"{k}-v{UPDATES - 1}".encode()

    # kcat (librdkafka's consumer, from the beginning, offsets with gaps) sees the same.
    out = kcat("-C", "-b", broker, "-t", topic_name, "-p", "0", "-o", "beginning", "-e", "-J", "-q")
    seen = kcat_json_lines(out.stdout)
    assert [r["offset"] for r in seen] == offsets
    assert {r["key"]: r["payload"] for r in seen}[KEYS[0]] == f"{KEYS[0]}-v{UPDATES - 1}"

    # kafka-python (pure Python protocol stack) too: it must step over the gaps.
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    kc = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        kc.assign([KTP(topic_name, 0)])
        kc.seek_to_beginning()
        kp_offsets = []
        deadline = time.monotonic() + 30
        while len(kp_offsets) < len(offsets) and time.monotonic() < deadline:
            for batch in kc.poll(timeout_ms=500).values():
                kp_offsets += [r.offset for r in batch]
        assert kp_offsets == offsets
    finally:
        kc.close()


@pytest.mark.broker_config(**CLEANER)
def test_fetch_from_a_compacted_away_offset_returns_the_next_record(broker, topic_name):
    create_topic(broker, topic_name, 1, TOPIC_CONFIG)
    produce_updates(broker, topic_name, tombstone_key=None)
    wait_until("cleaning", lambda: one_per_key(broker, topic_name))
    survivors = [m.offset() for m in read_all(broker, topic_name)]
    gone = next(o for o in range(survivors[-1]) if o not in set(survivors))
    c = consumer(broker)
    try:
        c.assign([TopicPartition(topic_name, 0, gone)])
        first = None
        deadline = time.monotonic() + 20
        while first is None and time.monotonic() < deadline:
            for m in c.consume(num_messages=1, timeout=1.0):
                assert m.error() is None, m.error()
                first = m.offset()
        assert first == next(o for o in survivors if o > gone)
    finally:
        c.close()


@pytest.mark.broker_config(**CLEANER)
def test_tombstones_stay_for_delete_retention_then_vanish(broker, topic_name):
    create_topic(broker, topic_name, 1, TOPIC_CONFIG)
    dead = KEYS[2].encode()
    acked = produce_updates(broker, topic_name, tombstone_key=KEYS[2])

    def tombstone_only():
        recs = read_all(broker, topic_name)
        of_dead = [(m.offset(), m.value()) for m in recs if m.key() == dead]
        return of_dead == [acked[dead]], of_dead

    # First the key's values go and its tombstone (value None) remains ...
    wait_until("the tombstone to be the key's only record", tombstone_only)
    assert acked[dead][1] is None

    # ... then, delete.retention.ms after that cleaning, the tombstone goes too.
    def gone():
        recs = read_all(broker, topic_name)
        return not any(m.key() == dead for m in recs), len(recs)

    wait_until("the tombstone to expire", gone, timeout=DELETE_RETENTION_MS / 1000 + WAIT_S)
    latest = latest_by_key(read_all(broker, topic_name))
    for k in KEYS:
        if k.encode() != dead:
            assert latest[k.encode()] == acked[k.encode()]


@pytest.mark.broker_config(**CLEANER)
def test_keyless_record_is_refused_by_a_compacted_topic(broker, topic_name):
    create_topic(broker, topic_name, 1, TOPIC_CONFIG)
    log = DeliveryLog()
    p = producer(broker, **{"retries": 0, "message.timeout.ms": 10000})
    # Separate requests: a refused batch is refused whole.
    p.produce(topic_name, value=b"no key", on_delivery=log)
    flush(p)
    p.produce(topic_name, key=b"k", value=b"with key", on_delivery=log)
    flush(p)
    assert [e.code() for e in log.errors] == [KafkaError.INVALID_RECORD], log.errors
    assert [(k, v) for (_, _, k, v) in log.acked] == [(b"k", b"with key")]


@pytest.mark.broker_config(**CLEANER)
def test_compacted_log_survives_restart_and_kill(broker_proc, topic_name):
    b = broker_proc.bootstrap
    create_topic(b, topic_name, 1, TOPIC_CONFIG)
    acked = produce_updates(b, topic_name, tombstone_key=None)
    wait_until("cleaning", lambda: one_per_key(b, topic_name))
    before = [(m.offset(), m.key(), m.value()) for m in read_all(b, topic_name)]
    for hard in (False, True):
        broker_proc.restart(hard=hard)
        after = [(m.offset(), m.key(), m.value()) for m in read_all(b, topic_name)]
        # Another round may have run in between, never bringing anything back.
        assert set(after) <= set(before), f"hard={hard}"
        latest = {k: (o, v) for (o, k, v) in after}
        for k in KEYS:
            assert latest[k.encode()] == acked[k.encode()], f"hard={hard}"
    assert "panicked" not in broker_proc.log_tail(400)
    a = admin(b)
    assert topic_name in a.list_topics(timeout=10).topics


OFFSETS_BROKER = {
    **CLEANER,
    "offsets.topic.num.partitions": 1,
    "offsets.topic.segment.bytes": 1024,
    "group.initial.rebalance.delay.ms": 0,
}


@pytest.mark.broker_config(**OFFSETS_BROKER)
def test_consumer_offsets_topic_is_compacted_and_replays(broker_proc, topic_name):
    """Hundreds of commits of one partition's offset leave a handful of records in
    __consumer_offsets, and the coordinator still replays the latest after kill -9."""
    b = broker_proc.bootstrap
    create_topic(b, topic_name, 1)
    group = f"g-{topic_name}"
    commits = 300
    c = consumer(b, **{"group.id": group})
    try:
        for o in range(1, commits + 1):
            done = c.commit(offsets=[TopicPartition(topic_name, 0, o)], asynchronous=False)
            assert all(tp.error is None for tp in done), done
    finally:
        c.close()

    def compacted():
        recs = read_all(b, "__consumer_offsets")
        return len(recs) < commits // 4, len(recs)

    wait_until("__consumer_offsets to be compacted", compacted)
    low, high = admin_watermarks(b, "__consumer_offsets")
    assert high >= commits and low == 0

    broker_proc.restart(hard=True)
    deadline = time.monotonic() + WAIT_S
    last = None
    while time.monotonic() < deadline:
        c = consumer(b, **{"group.id": group})
        try:
            got = c.committed([TopicPartition(topic_name, 0)], timeout=10)
            last = got[0].offset
            if last == commits:
                break
        except Exception as e:  # the coordinator may still be loading
            last = e
        finally:
            c.close()
        time.sleep(0.2)
    assert last == commits, last
