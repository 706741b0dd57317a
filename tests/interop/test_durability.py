"""Restarts and kill -9: nothing acknowledged is lost, and metadata (topics, ids, configs, log
start offsets) comes back exactly."""

import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import TopicCollection, TopicPartition
from confluent_kafka.admin import ConfigResource, OffsetSpec, ResourceType

from helpers import DeliveryLog, admin, consume_all, consumer, create_topic, producer, wait_all


def produce_until(p, topic, dl, total, key_mod=101, stop=None):
    """Produce `total` numbered records, riding out a full local queue (bounded waits)."""
    for i in range(total):
        if stop is not None and stop.is_set():
            return i
        value = b"%09d" % i
        deadline = time.monotonic() + 60
        while True:
            try:
                p.produce(topic, key=b"k%d" % (i % key_mod), value=value, on_delivery=dl)
                break
            except BufferError:
                assert time.monotonic() < deadline, "producer queue stayed full for 60 s"
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    return total


def read_everything(bootstrap, topic, partitions) -> dict[tuple[int, int], bytes]:
    """(partition, offset) -> value for every record up to the high watermark."""
    c = consumer(bootstrap)
    try:
        hw = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=15) for p in range(partitions)}
    finally:
        c.close()
    for p, (lo, _) in hw.items():
        assert lo == 0, f"log start offset of {topic}[{p}] moved to {lo}"
    got = consume_all(bootstrap, topic, partitions, {p: hi for p, (_, hi) in hw.items()}, timeout=120)
    return {(m.partition(), m.offset()): m.value() for msgs in got.values() for m in msgs}


def assert_acked_readable(dl: DeliveryLog, stored: dict):
    missing = [(p, o, v) for (p, o, _, v) in dl.acked if stored.get((p, o)) != v]
    assert not missing, (
        f"{len(missing)} of {len(dl.acked)} acknowledged records lost or changed, first: "
        f"{[(p, o, v, stored.get((p, o))) for p, o, v in missing[:5]]}"
    )


def serve_callbacks_until_done(p, t: threading.Thread, timeout: float = 120.0):
    """Delivery callbacks run only inside poll()/flush(): keep polling while `t` works."""
    deadline = time.monotonic() + timeout
    while t.is_alive() and time.monotonic() < deadline:
        p.poll(0.05)
    t.join(timeout=1)


def wait_acked(dl: DeliveryLog, n: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while len(dl.acked) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(dl.acked) >= n, f"only {len(dl.acked)} acks before the restart point"


def test_graceful_restart_mid_produce_loses_nothing(broker_proc, topic_name):
    bs = broker_proc.bootstrap
    create_topic(bs, topic_name, partitions=3)
    dl = DeliveryLog()
    p = producer(bs, acks="all", **{"linger.ms": 5, "message.timeout.ms": 90000,
                                    "retry.backoff.ms": 100, "reconnect.backoff.max.ms": 500})
    restarted = {}

    def restart_midway():
        wait_acked(dl, 20_000)
        restarted["acked_before"] = len(dl.acked)
        broker_proc.restart()
        restarted["done"] = True

    t = threading.Thread(target=restart_midway, daemon=True)
    t.start()
    produce_until(p, topic_name, dl, 60_000)
    serve_callbacks_until_done(p, t)
    assert restarted.get("done"), "the broker restart did not complete"
    remaining = p.flush(90)
    assert remaining == 0, f"{remaining} records never delivered after the restart"
    assert not dl.errors, dl.errors[:5]
    assert len(dl.acked) == 60_000
    assert restarted["acked_before"] < 60_000, "restart happened after everything was acked"
    stored = read_everything(bs, topic_name, 3)
    assert_acked_readable(dl, stored)
    assert len(stored) >= 60_000


@pytest.mark.parametrize("flush_every", [None, "1"], ids=["os-buffered", "fsync-each"])
def test_kill9_with_acks_all_loses_no_acknowledged_record(broker_proc, topic_name, flush_every):
    if flush_every:
        broker_proc.overrides["log.flush.interval.messages"] = flush_every
        broker_proc.restart()
    bs = broker_proc.bootstrap
    create_topic(bs, topic_name, partitions=2)
    dl = DeliveryLog()
    p = producer(bs, acks="all", **{"linger.ms": 2, "message.timeout.ms": 90000,
                                    "retry.backoff.ms": 100, "reconnect.backoff.max.ms": 500})
    killed = {"acked_at_kill": []}
    total, kills, every = 150_000, 3, 25_000

    def kill_repeatedly():
        for k in range(kills):
            wait_acked(dl, (k + 1) * every)
            broker_proc.kill9()
            killed["acked_at_kill"].append(list(dl.acked))
            time.sleep(0.3)
            broker_proc.start()
        killed["done"] = True

    t = threading.Thread(target=kill_repeatedly, daemon=True)
    t.start()
    produce_until(p, topic_name, dl, total)
    serve_callbacks_until_done(p, t)
    assert killed.get("done"), "kill -9 and restart cycles did not complete"
    p.flush(90)
    # Delivery failures are allowed for records in flight at a kill; acknowledged ones must stay.
    stored = read_everything(bs, topic_name, 2)
    for snapshot in killed["acked_at_kill"]:
        before = DeliveryLog()
        before.acked = snapshot
        assert_acked_readable(before, stored)
    assert_acked_readable(dl, stored)
    assert len(killed["acked_at_kill"][-1]) < total, "the last kill must land mid-stream"


def test_restart_restores_topics_configs_and_records(broker_proc, topic_name):
    bs = broker_proc.bootstrap
    a_name, b_name, c_name = topic_name + "-a", topic_name + "-b", topic_name + "-c"
    create_topic(bs, a_name, partitions=3, config={"retention.ms": "123456789", "cleanup.policy": "delete"})
    create_topic(bs, b_name, partitions=1)
    create_topic(bs, c_name, partitions=1)
    a = admin(bs)
    wait_all(a.delete_topics([c_name], operation_timeout=15))

    dl = DeliveryLog()
    p = producer(bs, acks="all")
    for i in range(900):
        p.produce(a_name, key=b"k%d" % i, value=b"a%d" % i, on_delivery=dl)
        p.produce(b_name, value=b"b%d" % i, on_delivery=dl)
    assert p.flush(60) == 0 and not dl.errors
    b0 = TopicPartition(b_name, 0, 100)
    assert list(wait_all(a.delete_records([b0])).values())[0].low_watermark == 100

    def snapshot():
        adm = admin(bs)
        md = adm.list_topics(timeout=10)
        descs = wait_all(adm.describe_topics(TopicCollection([a_name, b_name])))
        res = ConfigResource(ResourceType.TOPIC, a_name)
        cfg = wait_all(adm.describe_configs([res]))[res]
        earliest = wait_all(adm.list_offsets({TopicPartition(b_name, 0): OffsetSpec.earliest()}))
        latest = {}
        for t, n in ((a_name, 3), (b_name, 1)):
            for part in range(n):
                tp = TopicPartition(t, part)
                latest[(t, part)] = list(wait_all(adm.list_offsets({tp: OffsetSpec.latest()})).values())[0].offset
        return {
            "topics": sorted(t for t in md.topics if not t.startswith("__")),
            "ids": {n: str(d.topic_id) for n, d in descs.items()},
            "partitions": {n: len(d.partitions) for n, d in descs.items()},
            "retention.ms": cfg["retention.ms"].value,
            "cleanup.policy": cfg["cleanup.policy"].value,
            "b.earliest": list(earliest.values())[0].offset,
            "latest": latest,
        }

    before = snapshot()
    assert c_name not in before["topics"]
    assert before["b.earliest"] == 100
    for hard in (False, True):
        broker_proc.restart(hard=hard)
        after = snapshot()
        assert after == before, f"state changed across a {'kill -9' if hard else 'graceful'} restart"

    per_part = defaultdict(list)
    for part, off, _, v in dl.acked:
        per_part[v[:1]].append((part, off, v))
    stored = read_everything(bs, a_name, 3)
    assert sorted(stored.items()) == sorted(((p_, o), v) for p_, o, v in per_part[b"a"])
    c = consumer(bs)
    try:
        c.assign([TopicPartition(b_name, 0, 100)])
        msgs = []
        deadline = time.monotonic() + 30
        while len(msgs) < 800 and time.monotonic() < deadline:
            msgs += [m for m in c.consume(1000, timeout=1.0) if m.error() is None]
    finally:
        c.close()
    assert [(m.offset(), m.value()) for m in msgs] == [(i, b"b%d" % i) for i in range(100, 900)]
