"""Clients pinned to old protocol versions: kafka-python with api_version=(0, 10, 0) sends
Produce v2 / Fetch v2 with message format v1 (magic 1), and with api_version=(0, 9) Produce v1 /
Fetch v1 with magic 0. Their message sets must be stored as v2 batches (readable by modern
clients) and modern batches must be down-converted for them."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

from helpers import DeliveryLog, close_kafka_python_producer, consume_partition, create_topic, flush, producer

OLD_VERSIONS = [(0, 10, 0), (0, 9)]


def old_read(bootstrap, topic, partition, start, count, api_version, timeout=15.0):
    c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=api_version, group_id=None,
                      enable_auto_commit=False, request_timeout_ms=10000)
    try:
        tp = KTopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, start)  # explicit position: no ListOffsets needed
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=1000, max_records=count - len(out)).values():
                out.extend(recs)
        assert len(out) == count, f"api_version={api_version} read {len(out)} of {count} records"
        return out
    finally:
        c.close()


@pytest.mark.parametrize("codec", [None, "gzip"])
@pytest.mark.parametrize("api_version", OLD_VERSIONS, ids=lambda v: "v" + "_".join(map(str, v)))
def test_old_client_roundtrip(broker, topic_name, api_version, codec):
    create_topic(broker, topic_name, partitions=1)
    p = KafkaProducer(bootstrap_servers=broker, api_version=api_version, acks="all",
                      compression_type=codec, linger_ms=5, request_timeout_ms=5000,
                      delivery_timeout_ms=10000)
    n = 200
    ts0 = 1_700_000_000_000
    try:
        futures = [p.send(topic_name, key=b"old-k%d" % i, value=b"old-v%d" % i, partition=0,
                          timestamp_ms=ts0 + i) for i in range(n)]
        metas = [f.get(timeout=30) for f in futures]
    finally:
        close_kafka_python_producer(p)
    assert [m.offset for m in metas] == list(range(n))

    # Read back with the same old protocol.
    recs = old_read(broker, topic_name, 0, 0, n, api_version)
    assert [(r.offset, r.key, r.value) for r in recs] == [(i, b"old-k%d" % i, b"old-v%d" % i) for i in range(n)]
    if api_version >= (0, 10, 0):
        assert [r.timestamp for r in recs] == [ts0 + i for i in range(n)]

    # A modern client sees the same records, now in v2 batches.
    msgs = consume_partition(broker, topic_name, 0, 0, n)
    assert [(m.offset(), m.key(), m.value()) for m in msgs] == [(i, b"old-k%d" % i, b"old-v%d" % i) for i in range(n)]
    if api_version >= (0, 10, 0):
        assert [m.timestamp()[1] for m in msgs] == [ts0 + i for i in range(n)]

    # Reading from the middle with the old protocol.
    recs = old_read(broker, topic_name, 0, 150, 50, api_version)
    assert recs[0].offset == 150 and recs[-1].offset == 199


@pytest.mark.parametrize("codec", ["none", "gzip"])
@pytest.mark.parametrize("api_version", OLD_VERSIONS, ids=lambda v: "v" + "_".join(map(str, v)))
def test_old_client_reads_modern_batches(broker, topic_name, api_version, codec):
    create_topic(broker, topic_name, partitions=1)
    dl = DeliveryLog()
    p = producer(broker, acks="all", **{"compression.type": codec, "linger.ms": 10})
    for i in range(300):
        # Headers do not exist before magic 2; down-conversion drops them.
        p.produce(topic_name, key=b"new-k%d" % i, value=b"new-v%d" % i, partition=0,
                  timestamp=1_700_000_000_000 + i, headers=[("h", b"x")], on_delivery=dl)
    flush(p)
    assert len(dl.acked) == 300
    recs = old_read(broker, topic_name, 0, 0, 300, api_version)
    assert [(r.offset, r.key, r.value) for r in recs] == [(i, b"new-k%d" % i, b"new-v%d" % i) for i in range(300)]
    recs = old_read(broker, topic_name, 0, 123, 10, api_version)
    assert [r.offset for r in recs] == list(range(123, 133))
