"""The partition log seen from outside: segments roll and stay readable across a restart, and
retention by size and by time moves the log start offset without touching the active segment."""

import struct
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from helpers import DeliveryLog, consume_partition, consumer, create_topic, flush, producer, record_batch


def produce_n(bootstrap, topic, n, timestamp=None, size=40):
    dl = DeliveryLog()
    p = producer(bootstrap, acks="all", **{"linger.ms": 5, "batch.num.messages": 200})
    for i in range(n):
        kw = {"timestamp": timestamp} if timestamp is not None else {}
        p.produce(topic, key=b"k%d" % i, value=(b"%08d|" % i).ljust(size, b"."), partition=0, on_delivery=dl, **kw)
        if i % 5000 == 4999:
            p.poll(0)
    flush(p, timeout=60)
    assert not dl.errors and len(dl.acked) == n, dl.errors[:3]
    return dl


def watermarks(bootstrap, topic):
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def wait_log_start_moves(bootstrap, topic, timeout=30.0):
    """Bounded wait until the log start offset has moved and then held still for a second."""
    deadline = time.monotonic() + timeout
    lo, hi = watermarks(bootstrap, topic)
    # Retention may already have moved it before the first look.
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        nlo, hi = watermarks(bootstrap, topic)
        if nlo != lo or nlo == 0:
            lo, stable_since = nlo, time.monotonic()
        elif time.monotonic() - stable_since >= 1.0:
            break
    return lo, hi


def partition_dir(data_dir: Path, topic: str) -> Path:
    d = data_dir / f"{topic}-0"
    assert d.is_dir(), f"no partition directory {d} (Kafka layout: <log.dirs>/<topic>-<partition>)"
    return d


@pytest.mark.broker_config(**{"log.segment.bytes": "16384"})
def test_segments_roll_and_stay_readable_across_restart(broker_proc, topic_name):
    bs = broker_proc.bootstrap
    create_topic(bs, topic_name, partitions=1)
    n = 20_000
    produce_n(bs, topic_name, n)

    logs = sorted(partition_dir(broker_proc.data_dir, topic_name).glob("*.log"))
    assert len(logs) > 10, f"expected many 16 KiB segments, found {[p.name for p in logs]}"
    for seg in logs:
        assert len(seg.stem) == 20 and seg.stem.isdigit(), f"segment {seg.name} not named by base offset"
    assert logs[0].stem == "0" * 20

    def check_reads():
        msgs = consume_partition(bs, topic_name, 0, 0, n, timeout=60)
        assert [m.offset() for m in msgs] == list(range(n))
        assert all(m.value().startswith(b"%08d|" % m.offset()) for m in msgs)
        for start in (1, 4321, 12_345, n - 1):
            (m,) = consume_partition(bs, topic_name, 0, start, 1)
            assert m.offset() == start and m.value().startswith(b"%08d|" % start)

    check_reads()
    broker_proc.restart()
    assert watermarks(bs, topic_name) == (0, n)
    check_reads()
    broker_proc.restart(hard=True)
    assert watermarks(bs, topic_name) == (0, n)
    check_reads()


@pytest.mark.broker_config(**{"log.retention.check.interval.ms": "500", "log.segment.delete.delay.ms": "0"})
def test_retention_by_size(broker_proc, topic_name):
    bs = broker_proc.bootstrap
    create_topic(bs, topic_name, partitions=1,
                 config={"segment.bytes": "16384", "retention.bytes": "65536"})
    n = 20_000
    produce_n(bs, topic_name, n)
    lo, hi = wait_log_start_moves(bs, topic_name)
    assert hi == n, "retention must never touch the log end"
    assert lo > 0, "size-based retention never advanced the log start offset"
    assert n - lo < 10_000, f"{n - lo} records (~{(n - lo) * 60} bytes) kept with retention.bytes=65536"
    msgs = consume_partition(bs, topic_name, 0, lo, n - lo, timeout=30)
    assert msgs[0].offset() == lo and msgs[-1].offset() == n - 1
    total = sum(p.stat().st_size for p in partition_dir(broker_proc.data_dir, topic_name).glob("*.log"))
    assert total < 65536 + 2 * 16384, f"{total} bytes of segments left"


@pytest.mark.broker_config(**{"log.retention.check.interval.ms": "500", "log.segment.delete.delay.ms": "0"})
def test_retention_by_time(broker_proc, topic_name):
    bs = broker_proc.bootstrap
    create_topic(bs, topic_name, partitions=1,
                 config={"segment.bytes": "16384", "retention.ms": "60000"})
    day_ago = int(time.time() * 1000) - 86_400_000
    produce_n(bs, topic_name, 5000, timestamp=day_ago)
    produce_n(bs, topic_name, 10)  # fresh records: the segments holding them must stay
    lo, hi = wait_log_start_moves(bs, topic_name)
    assert hi == 5010
    assert lo > 0, "time-based retention never deleted segments of day-old records"
    assert lo <= 5000, "fresh records were deleted"
    msgs = consume_partition(bs, topic_name, 0, 5000, 10)
    assert [m.value()[:9] for m in msgs] == [b"%08d|" % i for i in range(10)]


@pytest.mark.parametrize("tail", ["partial-header", "bad-crc-batch", "zeros"])
def test_torn_tail_is_truncated_on_restart(broker_proc, topic_name, tail):
    """A crash mid-write leaves a torn batch at the end of the active segment: recovery truncates
    it instead of refusing to start, keeps every complete batch, and appends continue after it."""
    bs = broker_proc.bootstrap
    create_topic(bs, topic_name, partitions=1)
    produce_n(bs, topic_name, 1000)
    broker_proc.kill9()

    seg = sorted(partition_dir(broker_proc.data_dir, topic_name).glob("*.log"))[-1]
    if tail == "partial-header":
        torn = struct.pack(">qi", 1000, 500) + b"\x00\x00\x00\x00\x02" + b"\xab" * 20
    elif tail == "bad-crc-batch":
        torn = bytearray(record_batch([b"torn-1", b"torn-2"], int(time.time() * 1000)))
        torn[-3] ^= 0xFF  # flip payload bits: the CRC no longer matches
        torn = bytes(torn)
    else:
        torn = b"\x00" * 4096  # preallocated-but-unwritten space
    with open(seg, "ab") as f:
        f.write(torn)

    broker_proc.start()
    assert watermarks(bs, topic_name) == (0, 1000)
    msgs = consume_partition(bs, topic_name, 0, 0, 1000)
    assert [m.offset() for m in msgs] == list(range(1000))
    dl = produce_n(bs, topic_name, 10)
    assert [o for (_, o, _, _) in dl.acked] == list(range(1000, 1010))
    assert [m.offset() for m in consume_partition(bs, topic_name, 0, 995, 15)] == list(range(995, 1010))
