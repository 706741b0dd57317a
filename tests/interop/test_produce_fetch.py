"""Produce (acks, codecs, keys, headers) and fetch (any offset, long polling), list offsets:
confluent-kafka as the workhorse, kafka-python and kcat as independent readers and writers."""

import json
import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    KafkaError,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

from helpers import (
    DeliveryLog,
    RawConn,
    admin,
    close_kafka_python_producer,
    consume_all,
    consume_partition,
    consumer,
    create_topic,
    fetch_v4_body,
    flush,
    kcat,
    kcat_json_lines,
    parse_fetch_v4,
    producer,
    wait_all,
)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
BULK_MESSAGES = 100_000
BULK_PARTITIONS = 3


def bulk_message(i: int, codec: str):
    key = b"key-%03d" % (i % 97)
    value = b"%08d|%s|payload-%d" % (i, codec.encode(), i % 13) + b"x" * (i % 40)
    headers = [("seq", b"%d" % i), ("codec", codec.encode()), ("empty", b"")]
    return key, value, headers


def seq_of(value: bytes) -> int:
    return int(value[:8])


def kafka_python_consumer(bootstrap, **conf):
    base = dict(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", request_timeout_ms=15000, consumer_timeout_ms=15000)
    base.update(conf)
    return KafkaConsumer(**base)


def kafka_python_read(bootstrap, topic, partition, start, count, timeout=30.0, **conf):
    c = kafka_python_consumer(bootstrap, **conf)
    try:
        tp = KTopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, start)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=1000, max_records=count - len(out)).values():
                out.extend(recs)
        assert len(out) == count, f"kafka-python read {len(out)} of {count} from {topic}[{partition}]@{start}"
        return out
    finally:
        c.close()


# --- acks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_acks(broker, topic_name, acks):
    create_topic(broker, topic_name, partitions=2)
    n = 2000
    dl = DeliveryLog()
    p = producer(broker, acks=acks)
    for i in range(n):
        p.produce(topic_name, key=b"k%d" % (i % 10), value=b"%06d" % i, on_delivery=dl)
    flush(p)
    assert not dl.errors, dl.errors[:5]
    assert len(dl.acked) == n
    if acks != "0":
        per_part = defaultdict(list)
        for part, off, _, _ in dl.acked:
            per_part[part].append(off)
        for offs in per_part.values():
            assert sorted(offs) == list(range(len(offs)))
    # acks=0 gets no response; wait (bounded) until the broker has appended everything.
    c = consumer(broker)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            hw = [c.get_watermark_offsets(TopicPartition(topic_name, part), timeout=10)[1] for part in (0, 1)]
            if sum(hw) >= n:
                break
            time.sleep(0.1)
    finally:
        c.close()
    assert sum(hw) == n, f"high watermarks {hw}, expected {n} records in total"
    got = consume_all(broker, topic_name, 2, {0: hw[0], 1: hw[1]})
    values = sorted(m.value() for msgs in got.values() for m in msgs)
    assert values == [b"%06d" % i for i in range(n)]


# --- 100k keyed messages with headers per codec ------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
def test_bulk_roundtrip_per_codec(broker, topic_name, codec):
    create_topic(broker, topic_name, partitions=BULK_PARTITIONS)
    dl = DeliveryLog()
    p = producer(broker, acks="all", **{
        "compression.type": codec, "linger.ms": 20, "batch.num.messages": 5000,
        "queue.buffering.max.messages": 200_000,
    })
    for i in range(BULK_MESSAGES):
        key, value, headers = bulk_message(i, codec)
        p.produce(topic_name, key=key, value=value, headers=headers, on_delivery=dl)
        if i % 20000 == 0:
            p.poll(0)
    flush(p, timeout=120)
    assert not dl.errors, dl.errors[:5]
    assert len(dl.acked) == BULK_MESSAGES

    # Where every acknowledged message must be.
    where: dict[int, tuple[int, int]] = {}
    key_partition: dict[bytes, int] = {}
    for part, off, key, value in dl.acked:
        where[seq_of(value)] = (part, off)
        assert key_partition.setdefault(key, part) == part, "one key, one partition"
    expected = defaultdict(int)
    for part, _ in where.values():
        expected[part] += 1
    for part in range(BULK_PARTITIONS):
        assert expected[part] > 0, f"partition {part} got nothing: keys must spread"

    got = consume_all(broker, topic_name, BULK_PARTITIONS, dict(expected), timeout=180)
    for part, msgs in got.items():
        assert [m.offset() for m in msgs] == list(range(len(msgs))), f"offsets of partition {part}"
        seqs = [seq_of(m.value()) for m in msgs]
        assert seqs == sorted(seqs), f"partition {part} out of produce order"
        for m in msgs:
            i = seq_of(m.value())
            key, value, headers = bulk_message(i, codec)
            assert where[i] == (part, m.offset())
            assert m.key() == key
            assert m.value() == value
            assert m.headers() == headers, (i, m.headers())
            ts_type, ts = m.timestamp()
            assert ts_type == TIMESTAMP_CREATE_TIME and ts > 0

    # Spot-check with independent readers: kafka-python (pure Python decoder) and kcat.
    part = 0
    sample = got[part][1000:1500]
    start = sample[0].offset()
    kp = kafka_python_read(broker, topic_name, part, start, len(sample))
    for want, rec in zip(sample, kp):
        assert (rec.offset, rec.key, rec.value) == (want.offset(), want.key(), want.value())
        assert [(k, v) for k, v in rec.headers] == want.headers()

    part = BULK_PARTITIONS - 1
    sample = got[part][-200:]
    out = kcat("-b", broker, "-C", "-t", topic_name, "-p", str(part), "-o", str(sample[0].offset()),
               "-c", str(len(sample)), "-e", "-J").stdout
    lines = kcat_json_lines(out)
    assert len(lines) == len(sample)
    for want, rec in zip(sample, lines):
        assert rec["offset"] == want.offset()
        assert rec["key"] == want.key().decode()
        assert rec["payload"] == want.value().decode()
        assert rec["headers"] == [x for k, v in want.headers() for x in (k, v.decode())]


# --- other producers ---------------------------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
def test_kcat_produce_keys_headers(broker, topic_name, codec):
    create_topic(broker, topic_name, partitions=1)
    lines = b"".join(b"key%d:value %d\n" % (i, i) for i in range(300))
    kcat("-b", broker, "-P", "-t", topic_name, "-p", "0", "-K", ":", "-z", codec,
         "-H", "origin=kcat", "-H", "n=1", "-X", "acks=all", input=lines)
    msgs = consume_partition(broker, topic_name, 0, 0, 300)
    for i, m in enumerate(msgs):
        assert m.offset() == i
        assert m.key() == b"key%d" % i
        assert m.value() == b"value %d" % i
        assert m.headers() == [("origin", b"kcat"), ("n", b"1")]


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_produce_keys_headers(broker, topic_name, codec):
    create_topic(broker, topic_name, partitions=2)
    p = KafkaProducer(bootstrap_servers=broker, acks="all", compression_type=codec, enable_idempotence=False,
                      linger_ms=5, request_timeout_ms=10000, delivery_timeout_ms=20000)
    try:
        futures = [
            p.send(topic_name, key=b"k%d" % (i % 7), value=b"kp-%d" % i,
                   headers=[("i", b"%d" % i), ("codec", str(codec).encode())])
            for i in range(500)
        ]
        p.flush(timeout=30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        close_kafka_python_producer(p)
    counts = defaultdict(int)
    for md in metas:
        counts[md.partition] += 1
    got = consume_all(broker, topic_name, 2, {0: counts[0], 1: counts[1]})
    by_value = {m.value(): m for msgs in got.values() for m in msgs}
    for i, md in enumerate(metas):
        m = by_value[b"kp-%d" % i]
        assert (m.partition(), m.offset()) == (md.partition, md.offset)
        assert m.key() == b"k%d" % (i % 7)
        assert m.headers() == [("i", b"%d" % i), ("codec", str(codec).encode())]


def test_kafka_python_default_producer(broker, topic_name):
    """kafka-python 3.x, like the Java client 3.x, enables idempotence by default: out of the box
    it needs InitProducerId and producer id/epoch/sequence handling in Produce."""
    create_topic(broker, topic_name, partitions=1)
    p = KafkaProducer(bootstrap_servers=broker, request_timeout_ms=10000, delivery_timeout_ms=20000)
    try:
        metas = [p.send(topic_name, key=b"k", value=b"idem-%d" % i) for i in range(20)]
        p.flush(timeout=30)
        assert [f.get(timeout=30).offset for f in metas] == list(range(20))
    finally:
        close_kafka_python_producer(p)
    assert [m.value() for m in consume_partition(broker, topic_name, 0, 0, 20)] == [b"idem-%d" % i for i in range(20)]


@pytest.mark.broker_config(**{"message.max.bytes": "20000"})
def test_message_too_large(broker, topic_name):
    create_topic(broker, topic_name, partitions=1)
    dl = DeliveryLog()
    p = producer(broker, acks="all", **{"compression.type": "none", "message.timeout.ms": 10000})
    p.produce(topic_name, value=b"x" * 50_000, on_delivery=dl)
    p.flush(20)  # the small record must not share the rejected batch
    p.produce(topic_name, value=b"small", on_delivery=dl)
    p.flush(20)
    assert [e.code() for e in dl.errors] == [KafkaError.MSG_SIZE_TOO_LARGE], dl.errors
    assert [(o, v) for (_, o, _, v) in dl.acked] == [(0, b"small")]


def test_log_append_time(broker, topic_name):
    create_topic(broker, topic_name, partitions=1, config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    dl = DeliveryLog()
    p = producer(broker, acks="all")
    for i in range(10):
        p.produce(topic_name, value=b"%d" % i, timestamp=1_000_000 + i, on_delivery=dl)
    flush(p)
    after = int(time.time() * 1000)
    for m in consume_partition(broker, topic_name, 0, 0, 10):
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME, m.timestamp()
        assert before - 1000 <= ts <= after + 1000, (before, ts, after)


# --- fetch from any offset ---------------------------------------------------------------------

def test_fetch_from_any_offset(broker, topic_name):
    create_topic(broker, topic_name, partitions=1)
    n = 1000
    dl = DeliveryLog()
    p = producer(broker, acks="all", **{"linger.ms": 20, "compression.type": "lz4"})
    for i in range(n):
        p.produce(topic_name, value=b"r%04d" % i, partition=0, on_delivery=dl)
        if i % 100 == 99:
            flush(p)  # several batches of different sizes
    flush(p)
    assert len(dl.acked) == n and not dl.errors

    for start in (0, 1, 99, 100, 333, 998, 999):
        count = min(5, n - start)
        msgs = consume_partition(broker, topic_name, 0, start, count)
        assert [m.offset() for m in msgs] == list(range(start, start + count))
        assert [m.value() for m in msgs] == [b"r%04d" % i for i in range(start, start + count)]

    recs = kafka_python_read(broker, topic_name, 0, 777, 3)
    assert [(r.offset, r.value) for r in recs] == [(i, b"r%04d" % i) for i in (777, 778, 779)]

    lines = kcat_json_lines(kcat("-b", broker, "-C", "-t", topic_name, "-p", "0", "-o", "512",
                                 "-c", "2", "-e", "-J").stdout)
    assert [(r["offset"], r["payload"]) for r in lines] == [(512, "r0512"), (513, "r0513")]

    # Beyond the log end offset: OFFSET_OUT_OF_RANGE, which the consumer resets to earliest.
    msgs = consume_partition(broker, topic_name, 0, 5000, 1, timeout=20, **{"auto.offset.reset": "earliest"})
    assert (msgs[0].offset(), msgs[0].value()) == (0, b"r0000")


def flush_one(bootstrap, topic, value, partition=0):
    dl = DeliveryLog()
    p = producer(bootstrap, acks="all", **{"linger.ms": 0})
    p.produce(topic, value=value, partition=partition, on_delivery=dl)
    flush(p)
    assert not dl.errors, dl.errors
    return dl.acked[0]


# --- long polling ------------------------------------------------------------------------------

def test_raw_fetch_parked_wakes_on_produce(broker, topic_name):
    create_topic(broker, topic_name, partitions=1)
    max_wait_ms = 5000
    with RawConn(broker, timeout=15) as conn:
        t0 = time.monotonic()
        cid = conn.send_request(1, 4, fetch_v4_body(topic_name, 0, 0, max_wait_ms, min_bytes=1))
        timer = threading.Timer(1.0, flush_one, args=(broker, topic_name, b"wake-up"))
        timer.start()
        try:
            resp = conn.recv_response()
        finally:
            timer.join(timeout=30)
        elapsed = time.monotonic() - t0
    assert resp is not None, "broker closed the connection on a Fetch v4"
    assert resp[0] == cid
    ((topic, part, err, hw, records),) = parse_fetch_v4(resp[1])
    assert (topic, part, err) == (topic_name, 0, 0)
    assert hw == 1 and b"wake-up" in records
    assert elapsed < max_wait_ms / 1000 - 0.5, f"parked fetch answered after {elapsed:.2f}s: not woken by the produce"


def test_raw_fetch_honours_max_wait(broker, topic_name):
    create_topic(broker, topic_name, partitions=1)
    with RawConn(broker, timeout=15) as conn:
        t0 = time.monotonic()
        cid = conn.send_request(1, 4, fetch_v4_body(topic_name, 0, 0, 1500, min_bytes=1))
        resp = conn.recv_response()
        elapsed = time.monotonic() - t0
    assert resp is not None and resp[0] == cid
    ((_, _, err, hw, records),) = parse_fetch_v4(resp[1])
    assert (err, hw, records) == (0, 0, b"")
    # A lower bound only: an empty fetch must park instead of returning at once.
    assert elapsed >= 1.0, f"empty fetch with max_wait_ms=1500 returned after {elapsed:.2f}s"


def test_raw_fetch_honours_min_bytes(broker, topic_name):
    create_topic(broker, topic_name, partitions=1)
    with RawConn(broker, timeout=15) as conn:
        t0 = time.monotonic()
        cid = conn.send_request(1, 4, fetch_v4_body(topic_name, 0, 0, 3000, min_bytes=100_000))
        flush_one(broker, topic_name, b"too-small-to-satisfy-min-bytes")
        resp = conn.recv_response()
        elapsed = time.monotonic() - t0
    assert resp is not None and resp[0] == cid
    ((_, _, err, hw, records),) = parse_fetch_v4(resp[1])
    assert err == 0 and hw == 1 and b"too-small-to-satisfy-min-bytes" in records
    assert elapsed >= 2.0, f"fetch with unmet min_bytes returned after {elapsed:.2f}s, before max_wait_ms=3000"


def test_consumer_long_poll_wakes_before_max_wait(broker, topic_name):
    """librdkafka parked in fetch.wait.max.ms=5000 receives a record produced ~1 s later well
    before that fetch's max wait elapses."""
    create_topic(broker, topic_name, partitions=1)
    fetches = {"count": 0, "changed_at": None}

    def on_stats(js):
        stats = json.loads(js)
        n = sum(b.get("req", {}).get("Fetch", 0) for b in stats.get("brokers", {}).values())
        if n != fetches["count"]:
            fetches["count"] = n
            fetches["changed_at"] = time.monotonic()

    c = consumer(broker, **{"fetch.wait.max.ms": 5000, "fetch.min.bytes": 1,
                            "statistics.interval.ms": 100, "stats_cb": on_stats})
    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        deadline = time.monotonic() + 15
        while fetches["count"] == 0 and time.monotonic() < deadline:
            assert c.poll(0.05) is None
        assert fetches["count"] > 0, "librdkafka never reported a Fetch request (stats 'req')"
        parked_count = fetches["count"]
        park_seen = fetches["changed_at"]
        while time.monotonic() < park_seen + 1.0:
            assert c.poll(0.05) is None
        assert fetches["count"] - parked_count <= 1, (
            f"{fetches['count'] - parked_count} Fetch requests in 1 s: the broker is not parking empty fetches"
        )
        fetch_issued = fetches["changed_at"]
        flush_one(broker, topic_name, b"long-poll")
        got = None
        deadline = time.monotonic() + 15
        while got is None and time.monotonic() < deadline:
            m = c.poll(0.05)
            if m is not None and m.error() is None:
                got = m
        received = time.monotonic()
    finally:
        c.close()
    assert got is not None and got.value() == b"long-poll"
    # The fetch in flight was issued at most ~0.2 s before `fetch_issued` was seen; a broker that
    # did not wake it would answer 5 s after its issue.
    assert received < fetch_issued + 4.0, (
        f"record arrived {received - fetch_issued:.2f}s after the parked fetch was issued (max wait 5 s)"
    )


# --- list offsets ------------------------------------------------------------------------------

def test_list_offsets_earliest_latest_timestamp(broker, topic_name):
    create_topic(broker, topic_name, partitions=1)
    base = 1_700_000_000_000
    dl = DeliveryLog()
    p = producer(broker, acks="all", **{"linger.ms": 10})
    for i in range(100):
        p.produce(topic_name, value=b"t%d" % i, partition=0, timestamp=base + i * 1000, on_delivery=dl)
        if i % 25 == 24:
            flush(p)
    flush(p)
    assert len(dl.acked) == 100

    tp = TopicPartition(topic_name, 0)
    c = consumer(broker)
    try:
        assert c.get_watermark_offsets(tp, timeout=10) == (0, 100)
        queries = {
            base - 5: 0,
            base: 0,
            base + 50_000: 50,
            base + 50_001: 51,
            base + 99_000: 99,
            base + 99_001: -1,  # later than every record: no offset
        }
        # One partition per request: a ListOffsets request may not name a partition twice.
        found = [c.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=10)[0].offset for ts in queries]
        assert found == list(queries.values())
        for m in consume_partition(broker, topic_name, 0, 50, 2):
            assert m.timestamp() == (TIMESTAMP_CREATE_TIME, base + m.offset() * 1000)
    finally:
        c.close()

    a = admin(broker)
    specs = {"earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest(),
             "ts": OffsetSpec.for_timestamp(base + 10_500)}
    got = {name: wait_all(a.list_offsets({TopicPartition(topic_name, 0): spec}))
           for name, spec in specs.items()}
    assert [list(r.values())[0].offset for r in got.values()] == [0, 100, 11]
    ts_info = list(got["ts"].values())[0]
    assert ts_info.timestamp == base + 11_000

    kc = kafka_python_consumer(broker)
    try:
        ktp = KTopicPartition(topic_name, 0)
        assert kc.beginning_offsets([ktp]) == {ktp: 0}
        assert kc.end_offsets([ktp]) == {ktp: 100}
        found = kc.offsets_for_times({ktp: base + 42_000})[ktp]
        assert (found.offset, found.timestamp) == (42, base + 42_000)
    finally:
        kc.close()

    out = kcat("-b", broker, "-Q", "-t", f"{topic_name}:0:{base + 7000}").stdout.decode()
    assert "offset 7" in out, out


def test_list_offsets_end_tracks_appends(broker, topic_name):
    create_topic(broker, topic_name, partitions=1)
    c = consumer(broker)
    try:
        tp = TopicPartition(topic_name, 0)
        assert c.get_watermark_offsets(tp, timeout=10) == (0, 0)
        flush_one(broker, topic_name, b"one")
        assert c.get_watermark_offsets(tp, timeout=10) == (0, 1)
        flush_one(broker, topic_name, b"two")
        assert c.get_watermark_offsets(tp, timeout=10) == (0, 2)
    finally:
        c.close()
