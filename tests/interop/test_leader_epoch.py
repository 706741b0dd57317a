"""Leader epochs seen from outside: OffsetForLeaderEpoch (v2-4) sent by hand, the epoch stamped
into stored batches and kept in `leader-epoch-checkpoint` across a restart, and librdkafka, which
validates its position with OffsetForLeaderEpoch (KIP-320) once the broker advertises it."""

import struct
import time

from confluent_kafka import TopicPartition

from helpers import (
    DeliveryLog, RawConn, api_versions_v0_body, consume_partition, consumer, create_topic, flush,
    kstr, parse_api_versions_v0, producer, uvarint,
)

OFFSET_FOR_LEADER_EPOCH = 23
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75


def produce_n(bootstrap, topic, partition, n):
    dl = DeliveryLog()
    p = producer(bootstrap, acks="all")
    for i in range(n):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=partition, on_delivery=dl)
    flush(p)
    assert not dl.errors and len(dl.acked) == n, dl.errors[:3]


# Request: [(topic, [(partition, current_leader_epoch, leader_epoch)])]
def ofle_body(version, topics, replica_id=-1):
    if version >= 4:  # flexible: compact strings and arrays, tagged fields
        out = struct.pack(">i", replica_id) + uvarint(len(topics) + 1)
        for name, parts in topics:
            out += uvarint(len(name) + 1) + name.encode() + uvarint(len(parts) + 1)
            for p, cur, ep in parts:
                out += struct.pack(">iii", p, cur, ep) + b"\x00"
            out += b"\x00"
        return out + b"\x00"
    out = struct.pack(">i", replica_id) if version >= 3 else b""
    out += struct.pack(">i", len(topics))
    for name, parts in topics:
        out += kstr(name) + struct.pack(">i", len(parts))
        for p, cur, ep in parts:
            out += struct.pack(">iii", p, cur, ep)
    return out


def parse_ofle(version, body):
    """[((topic, partition), (error, leader_epoch, end_offset))] in response order"""
    flexible = version >= 4

    def read_len(off, compact):
        if not compact:
            (n,) = struct.unpack_from(">i", body, off)
            return n, off + 4
        n, shift = 0, 0
        while True:
            b = body[off]
            off += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n - 1, off

    off = 1 if flexible else 0  # response header v1 tagged fields (after the correlation id)
    off += 4  # throttle_time_ms
    out = []
    n_topics, off = read_len(off, flexible)
    for _ in range(n_topics):
        if flexible:
            ln, off = read_len(off, True)
        else:
            (ln,) = struct.unpack_from(">h", body, off)
            off += 2
        name = body[off:off + ln].decode()
        off += ln
        n_parts, off = read_len(off, flexible)
        for _ in range(n_parts):
            err, part, epoch, end = struct.unpack_from(">hiiq", body, off)
            off += 18
            if flexible:
                off += 1  # empty tagged fields
            out.append(((name, part), (err, epoch, end)))
        if flexible:
            off += 1
    return out


def ofle(bootstrap, version, topics, replica_id=-1):
    """{(topic, partition): (error, leader_epoch, end_offset)}"""
    return dict(ofle_list(bootstrap, version, topics, replica_id))


def ofle_list(bootstrap, version, topics, replica_id=-1):
    with RawConn(bootstrap) as c:
        header_extra = b""
        body = ofle_body(version, topics, replica_id)
        if version >= 4:
            # Request header v2: header v1 plus an empty tagged-field section.
            header_extra = b"\x00"
        cid = c.send_request(OFFSET_FOR_LEADER_EPOCH, version, header_extra + body)
        resp = c.recv_response()
        assert resp is not None, "broker closed the connection"
        rcid, rbody = resp
        assert rcid == cid
        return parse_ofle(version, rbody)


def test_offset_for_leader_epoch_by_hand(broker_proc, topic_name):
    bs = broker_proc.bootstrap
    with RawConn(bs) as c:
        c.send_request(18, 0, api_versions_v0_body())
        _, body = c.recv_response()
        err, apis = parse_api_versions_v0(body)
        assert err == 0 and apis.get(OFFSET_FOR_LEADER_EPOCH) == (2, 4), apis.get(OFFSET_FOR_LEADER_EPOCH)

    create_topic(bs, topic_name, partitions=2)
    produce_n(bs, topic_name, 0, 25)

    for version in (2, 3, 4):
        r = ofle(bs, version, [
            (topic_name, [(0, -1, 0), (1, -1, 0)]),
            ("no-such-topic", [(0, -1, 0)]),
        ])
        assert r[(topic_name, 0)] == (NONE, 0, 25), (version, r)
        # Partition 1 is empty: no epoch wrote to it yet.
        assert r[(topic_name, 1)] == (NONE, -1, -1), (version, r)
        assert r[("no-such-topic", 0)][0] == UNKNOWN_TOPIC_OR_PARTITION, (version, r)

    # Several questions about one partition in one request are answered in order.
    r = ofle_list(bs, 3, [(topic_name, [
        (0, 0, 0),    # our current epoch: checked and fine
        (0, 1, 0),    # a newer current epoch than the leader's
        (0, -2, 0),   # only -1 means "unchecked"; anything older is fenced
        (0, 0, 1),    # an epoch newer than any in the log: undefined
        (0, 0, -1),   # undefined epoch
        (7, -1, 0),   # no such partition
    ])], replica_id=1)
    assert [answer for _, answer in r] == [
        (NONE, 0, 25),
        (UNKNOWN_LEADER_EPOCH, -1, -1),
        (FENCED_LEADER_EPOCH, -1, -1),
        (NONE, -1, -1),
        (NONE, -1, -1),
        (UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
    ], r
    assert [tp for tp, _ in r] == [(topic_name, p) for p in (0, 0, 0, 0, 0, 7)]
    # The cache is on disk in Kafka's format and answers the same after a restart.
    checkpoint = broker_proc.data_dir / f"{topic_name}-0" / "leader-epoch-checkpoint"
    assert checkpoint.read_text() == "0\n1\n0 0\n"
    broker_proc.restart()
    bs = broker_proc.bootstrap
    assert ofle(bs, 4, [(topic_name, [(0, 0, 0)])])[(topic_name, 0)] == (NONE, 0, 25)
    produce_n(bs, topic_name, 0, 5)
    assert ofle(bs, 2, [(topic_name, [(0, 0, 0)])])[(topic_name, 0)] == (NONE, 0, 30)


def test_librdkafka_consumes_and_validates_positions(broker, topic_name):
    create_topic(broker, topic_name, partitions=1)
    produce_n(broker, topic_name, 0, 50)

    # Stored batches carry the partition's leader epoch (0 on a single node), which the
    # consumer sees and commits with its offsets.
    msgs = consume_partition(broker, topic_name, 0, 0, 50)
    assert [m.offset() for m in msgs] == list(range(50))
    assert {m.leader_epoch() for m in msgs} == {0}

    # A group member commits with the leader epoch; the next member starts from that
    # position, which librdkafka validates with OffsetForLeaderEpoch before fetching.
    group = f"{topic_name}-g"
    conf = {"group.id": group, "auto.offset.reset": "earliest"}
    c = consumer(broker, **conf)
    try:
        c.subscribe([topic_name])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 20 and time.monotonic() < deadline:
            for m in c.consume(num_messages=20 - len(got), timeout=1.0):
                assert m.error() is None, m.error()
                got.append(m)
        assert [m.offset() for m in got] == list(range(20))
        c.commit(message=got[-1], asynchronous=False)
        committed = c.committed([TopicPartition(topic_name, 0)], timeout=10)
        assert committed[0].offset == 20 and committed[0].leader_epoch == 0, committed
    finally:
        c.close()
    c = consumer(broker, **conf)
    try:
        c.subscribe([topic_name])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 30 and time.monotonic() < deadline:
            for m in c.consume(num_messages=30 - len(got), timeout=1.0):
                assert m.error() is None, m.error()
                got.append(m)
        assert [m.offset() for m in got] == list(range(20, 50))
    finally:
        c.close()

    # assign() with a leader epoch is validated the same way.
    c = consumer(broker)
    try:
        c.assign([TopicPartition(topic_name, 0, 45, leader_epoch=0)])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 5 and time.monotonic() < deadline:
            for m in c.consume(num_messages=5 - len(got), timeout=1.0):
                assert m.error() is None, m.error()
                got.append(m)
        assert [m.offset() for m in got] == list(range(45, 50))
    finally:
        c.close()


def test_librdkafka_detects_a_position_from_an_unknown_epoch(broker, topic_name, caplog):
    """A position claiming an epoch the log never had is one the leader cannot vouch for: the
    broker answers it undefined (-1, -1), and librdkafka logs log truncation and resets by
    auto.offset.reset, which proves it asked (offset 40 itself is valid and would be fetched)."""
    create_topic(broker, topic_name, partitions=1)
    produce_n(broker, topic_name, 0, 50)
    c = consumer(broker, **{"auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic_name, 0, 40, leader_epoch=3)])
        offsets = []
        deadline = time.monotonic() + 60
        while len(offsets) < 50 and time.monotonic() < deadline:
            for m in c.consume(num_messages=50, timeout=1.0):
                assert m.error() is None, m.error()
                offsets.append(m.offset())
        assert offsets == list(range(50)), offsets[:3]
        truncation = [r.getMessage() for r in caplog.records if "log truncation detected" in r.getMessage()]
        assert truncation and "broker end offset is -1" in truncation[0], truncation
    finally:
        c.close()
