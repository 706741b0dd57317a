"""The wire protocol spoken by hand: ApiVersions, unsupported versions, in-order pipelining, CRC
validation, and hostile input. Each hostile input gets an error response or a closed connection,
the broker stays alive with bounded memory, and a normal client works afterwards."""

import random
import socket
import struct
import threading
import time

import pytest

from helpers import (
    DeliveryLog,
    RawConn,
    admin,
    consume_partition,
    create_topic,
    fetch_v4_body,
    flush,
    frame,
    kstr,
    parse_api_versions_v0,
    parse_produce_v3,
    produce_v3_body,
    producer,
    record_batch,
    request_header_v1,
    uvarint,
)

RSS_LIMIT_KIB = 200 * 1024
UNSUPPORTED_VERSION = 35

REQUIRED_APIS = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 18: "ApiVersions",
    19: "CreateTopics", 20: "DeleteTopics", 21: "DeleteRecords", 32: "DescribeConfigs",
    33: "AlterConfigs", 37: "CreatePartitions", 44: "IncrementalAlterConfigs", 60: "DescribeCluster",
}


def api_versions(bootstrap) -> dict[int, tuple[int, int]]:
    with RawConn(bootstrap) as c:
        cid = c.send_request(18, 0, b"")
        resp = c.recv_response()
    assert resp is not None and resp[0] == cid
    err, apis = parse_api_versions_v0(resp[1])
    assert err == 0
    return apis


def assert_healthy(broker_proc, topic: str):
    """Alive, memory bounded, and a real client can still produce and consume."""
    assert broker_proc.alive, "broker died:\n" + broker_proc.log_tail()
    rss = broker_proc.rss_kib()
    assert rss < RSS_LIMIT_KIB, f"broker RSS {rss} KiB after hostile input (limit {RSS_LIMIT_KIB} KiB)"
    bs = broker_proc.bootstrap
    md = admin(bs).list_topics(timeout=10)
    assert len(md.brokers) == 1
    dl = DeliveryLog()
    p = producer(bs, acks="all", **{"linger.ms": 0})
    p.produce(topic, value=b"still-serving", on_delivery=dl)
    flush(p, timeout=30)
    assert not dl.errors, dl.errors
    (part, off, _, _) = dl.acked[0]
    assert consume_partition(bs, topic, part, off, 1)[0].value() == b"still-serving"


@pytest.fixture
def healthy_topic(broker_proc, topic_name):
    create_topic(broker_proc.bootstrap, topic_name, partitions=1)
    return topic_name


# --- well-formed requests ----------------------------------------------------------------------

def test_api_versions_v0_and_v3_advertise_required_apis(broker):
    apis = api_versions(broker)
    missing = {k: n for k, n in REQUIRED_APIS.items() if k not in apis}
    assert not missing, f"ApiVersions does not advertise {missing}"
    for key, (lo, hi) in apis.items():
        assert 0 <= lo <= hi, (key, lo, hi)
    assert apis[18][1] >= 3, "ApiVersions v3 (flexible) is what librdkafka 2.x uses"
    assert apis[0][0] <= 2, "old clients send Produce v2"
    assert apis[1][0] <= 2 and apis[1][1] >= 13, "Fetch v2 for old clients, v13+ for topic ids"
    assert apis[3][1] >= 12

    # ApiVersions v3: flexible request header (v2) and body; response header stays v0.
    body = uvarint(len("kavka-test") + 1) + b"kavka-test" + uvarint(len("1.0") + 1) + b"1.0" + uvarint(0)
    header = struct.pack(">hhi", 18, 3, 77) + kstr("raw") + uvarint(0)
    with RawConn(broker) as c:
        c.send_raw(frame(header + body))
        resp = c.recv_response()
    assert resp is not None and resp[0] == 77
    b = resp[1]
    (err,) = struct.unpack_from(">h", b, 0)
    assert err == 0
    off = 2
    n, off = read_uvarint(b, off)
    v3 = {}
    for _ in range(n - 1):
        key, lo, hi = struct.unpack_from(">hhh", b, off)
        off += 6
        tags, off = read_uvarint(b, off)
        assert tags == 0
        v3[key] = (lo, hi)
    assert v3 == apis, "ApiVersions v0 and v3 must advertise the same table"


def read_uvarint(b: bytes, off: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = b[off]
        off += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, off
        shift += 7


def test_unsupported_api_versions_version_gets_error_35(broker):
    """Kafka answers an ApiVersions request of a version it does not know with a v0 response
    carrying UNSUPPORTED_VERSION and its table, so the client can retry with a lower version."""
    with RawConn(broker) as c:
        cid = c.send_request(18, 99, b"\x00\x01\x02")
        resp = c.recv_response()
    assert resp is not None, "broker closed the connection instead of answering UNSUPPORTED_VERSION"
    assert resp[0] == cid
    err, apis = parse_api_versions_v0(resp[1])
    assert err == UNSUPPORTED_VERSION
    assert 18 in apis


def test_pipelined_requests_answered_in_order(broker):
    ids = list(range(1000, 1060))
    payload = b""
    for i, cid in enumerate(ids):
        if i % 2:
            body = struct.pack(">i", 0)  # Metadata v1: no topics
            payload += frame(request_header_v1(3, 1, cid) + body)
        else:
            payload += frame(request_header_v1(18, 0, cid))
    with RawConn(broker) as c:
        c.send_raw(payload)
        got = []
        for _ in ids:
            resp = c.recv_response()
            assert resp is not None, f"connection closed after {len(got)} responses"
            got.append(resp[0])
    assert got == ids


def test_corrupt_batch_rejected_valid_batch_accepted(broker_proc, healthy_topic):
    bs = broker_proc.bootstrap
    with RawConn(bs) as c:
        bad = record_batch([b"evil"], 1_700_000_000_000, corrupt_crc=True)
        cid = c.send_request(0, 3, produce_v3_body(healthy_topic, 0, bad))
        resp = c.recv_response()
        assert resp is not None and resp[0] == cid, "connection closed on a corrupt batch"
        ((topic, part, err, _),) = parse_produce_v3(resp[1])
        assert (topic, part, err) == (healthy_topic, 0, 2), "expected CORRUPT_MESSAGE (2)"

        good = record_batch([b"good-1", b"good-2"], 1_700_000_000_000)
        cid = c.send_request(0, 3, produce_v3_body(healthy_topic, 0, good))
        resp = c.recv_response()
        assert resp is not None and resp[0] == cid
        ((_, _, err, base),) = parse_produce_v3(resp[1])
        assert (err, base) == (0, 0)
    msgs = consume_partition(bs, healthy_topic, 0, 0, 2)
    assert [m.value() for m in msgs] == [b"good-1", b"good-2"]
    assert_healthy(broker_proc, healthy_topic)


def test_produce_to_unknown_partition(broker_proc, healthy_topic):
    with RawConn(broker_proc.bootstrap) as c:
        cid = c.send_request(0, 3, produce_v3_body(healthy_topic, 7, record_batch([b"x"], 1)))
        resp = c.recv_response()
    assert resp is not None and resp[0] == cid
    ((_, part, err, _),) = parse_produce_v3(resp[1])
    assert (part, err) == (7, 3), "expected UNKNOWN_TOPIC_OR_PARTITION (3)"


# --- hostile input -----------------------------------------------------------------------------

def test_garbage_bytes(broker_proc, healthy_topic):
    rng = random.Random(20261121)
    before = broker_proc.rss_kib()
    for size in (1, 3, 7, 64, 1000, 65536):
        with RawConn(broker_proc.bootstrap) as c:
            c.send_raw(bytes(rng.getrandbits(8) for _ in range(size)))
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            # Either a reply, or (far more likely) a closed connection; never a hang.
            c.closed_or_response(wait=10)
    # Printable garbage (an HTTP request) and an all-0xFF blob.
    for blob in (b"GET / HTTP/1.1\r\nHost: kavka\r\n\r\n", b"\xff" * 4096):
        with RawConn(broker_proc.bootstrap) as c:
            c.send_raw(blob)
            c.closed_or_response(wait=10)
    assert_healthy(broker_proc, healthy_topic)
    assert broker_proc.rss_kib() < before + 64 * 1024


def test_truncated_frame_then_close(broker_proc, healthy_topic):
    for claimed, sent in ((100, 10), (1000, 999), (20, 2)):
        c = RawConn(broker_proc.bootstrap)
        c.send_raw(struct.pack(">i", claimed) + request_header_v1(18, 0, 1)[: sent])
        c.close()
    # A truncated frame followed by a half-close: the broker must close its side too.
    with RawConn(broker_proc.bootstrap) as c:
        c.send_raw(struct.pack(">i", 100) + b"\x00\x12")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.closed_or_response(wait=10) is None
    assert_healthy(broker_proc, healthy_topic)


@pytest.mark.parametrize("prefix", [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x40000000],
                         ids=["2GiB", "int-min", "minus-1", "1GiB"])
def test_absurd_length_prefix(broker_proc, healthy_topic, prefix):
    before = broker_proc.rss_kib()
    with RawConn(broker_proc.bootstrap) as c:
        c.send_raw(struct.pack(">I", prefix) + request_header_v1(18, 0, 1) + b"\x00" * 1024)
        assert c.closed_or_response(wait=10) is None, "an absurd frame length must close the connection"
    assert_healthy(broker_proc, healthy_topic)
    assert broker_proc.rss_kib() < before + 64 * 1024


def test_many_large_partial_frames_keep_memory_bounded(broker_proc, healthy_topic):
    """Frames that claim a large (but maybe allowed) size and never finish must not make the
    broker reserve that memory up front."""
    conns = []
    try:
        for _ in range(16):
            c = RawConn(broker_proc.bootstrap)
            c.send_raw(struct.pack(">i", 90 * 1024 * 1024) + request_header_v1(0, 3, 1) + b"\x00" * 4096)
            conns.append(c)
        time.sleep(1.0)
        assert broker_proc.alive
        rss = broker_proc.rss_kib()
        assert rss < RSS_LIMIT_KIB, f"RSS {rss} KiB with 16 connections each claiming a 90 MiB frame"
    finally:
        for c in conns:
            c.close()
    assert_healthy(broker_proc, healthy_topic)


def test_pipelined_large_frames_behind_parked_fetch_keep_memory_bounded(broker_proc, healthy_topic, topic_name):
    """Responses on a connection go out in order, so requests pipelined behind a parked fetch
    wait. Their bytes must not pile up: four complete 60 MiB produce requests queued behind a
    long-poll fetch would hold 240 MiB if the broker read them all ahead."""
    big = 60 * 1024 * 1024
    idle = topic_name + "-idle"
    create_topic(broker_proc.bootstrap, idle, partitions=1)
    c = RawConn(broker_proc.bootstrap, timeout=30.0)
    try:
        # Offset 0 of an empty partition is its log end: the fetch parks for max_wait_ms.
        c.send_request(1, 4, fetch_v4_body(idle, 0, 0, max_wait_ms=20000))
        payload = frame(request_header_v1(0, 3, 99) + produce_v3_body(healthy_topic, 0, b"\x00" * big))

        def send_all():
            try:
                for _ in range(4):
                    c.send_raw(payload)
            except OSError:
                pass  # the test closes the socket while this is still blocked in sendall

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        time.sleep(3.0)
        assert broker_proc.alive
        rss = broker_proc.rss_kib()
        assert rss < RSS_LIMIT_KIB, f"RSS {rss} KiB with 4 x 60 MiB requests queued behind a parked fetch"
    finally:
        c.close()
    assert_healthy(broker_proc, healthy_topic)


def test_unknown_api_key(broker_proc, healthy_topic):
    for key in (9999, 32767, -1, 1000):
        with RawConn(broker_proc.bootstrap) as c:
            cid = c.send_request(key, 0, b"\x00" * 16)
            resp = c.closed_or_response(wait=10)
            if resp is not None:
                assert resp[0] == cid, "a response must carry the request's correlation id"
    assert_healthy(broker_proc, healthy_topic)


def test_unsupported_version_of_other_apis(broker_proc, healthy_topic):
    for key, version in ((3, 99), (0, 1000), (1, 32767), (19, -1)):
        with RawConn(broker_proc.bootstrap) as c:
            cid = c.send_request(key, version, b"\x00" * 32)
            resp = c.closed_or_response(wait=10)
            if resp is not None:
                assert resp[0] == cid
    assert_healthy(broker_proc, healthy_topic)


@pytest.mark.parametrize("count", [-2, -1000, 0x7FFFFFFF, 0x10000000], ids=["-2", "-1000", "int-max", "2^28"])
def test_bad_array_length_in_metadata(broker_proc, healthy_topic, count):
    before = broker_proc.rss_kib()
    with RawConn(broker_proc.bootstrap) as c:
        # Metadata v1: topics is a nullable array (-1 = all topics); other negatives are invalid,
        # huge counts are far larger than the frame.
        cid = c.send_request(3, 1, struct.pack(">i", count) + kstr("t"))
        resp = c.closed_or_response(wait=10)
        if resp is not None:
            assert resp[0] == cid
    with RawConn(broker_proc.bootstrap) as c:
        # Metadata v12 (flexible): compact array length as an unsigned varint, same trick.
        header = struct.pack(">hhi", 3, 12, 5) + kstr("raw") + uvarint(0)
        n = count + 1 if count > 0 else 0xFFFFFFFF
        c.send_raw(frame(header + uvarint(n) + b"\x00" * 8))
        resp = c.closed_or_response(wait=10)
        if resp is not None:
            assert resp[0] == 5
    assert_healthy(broker_proc, healthy_topic)
    assert broker_proc.rss_kib() < before + 64 * 1024


def test_negative_string_length_and_bad_client_id(broker_proc, healthy_topic):
    cases = [
        struct.pack(">hhih", 18, 0, 1, -5),                     # client_id length -5
        struct.pack(">hhih", 18, 0, 2, 30000) + b"abc",          # client_id longer than the frame
        struct.pack(">hhi", 3, 1, 3) + kstr("c") + struct.pack(">ih", 1, -7),  # topic name -7
        struct.pack(">hh", 18, 0),                               # header cut short
        b"",                                                     # empty frame
    ]
    for payload in cases:
        with RawConn(broker_proc.bootstrap) as c:
            c.send_raw(frame(payload))
            c.closed_or_response(wait=10)
    assert_healthy(broker_proc, healthy_topic)


def test_slowloris_byte_by_byte_request_still_answered(broker):
    """A request dribbled one byte at a time is still a request."""
    data = frame(request_header_v1(18, 0, 4242))
    with RawConn(broker) as c:
        for i in range(len(data)):
            c.send_raw(data[i:i + 1])
            time.sleep(0.01)
        resp = c.recv_response()
    assert resp is not None and resp[0] == 4242
    assert parse_api_versions_v0(resp[1])[0] == 0


def test_slow_consumer_does_not_stall_producer(broker_proc, topic_name):
    """A client that pipelines large fetches and never reads the answers only blocks itself."""
    bs = broker_proc.bootstrap
    big, other = topic_name + "-big", topic_name + "-other"
    create_topic(bs, big, partitions=1)
    create_topic(bs, other, partitions=1)
    dl = DeliveryLog()
    p = producer(bs, acks="all", **{"linger.ms": 5})
    for i in range(4000):
        p.produce(big, value=b"%06d" % i + b"z" * 1000, partition=0, on_delivery=dl)
    flush(p)
    assert len(dl.acked) == 4000

    slow = RawConn(bs)
    try:
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(30):
            slow.send_request(1, 4, fetch_v4_body(big, 0, 0, 100, max_bytes=4 * 1024 * 1024))
        time.sleep(0.5)

        dl2 = DeliveryLog()
        p2 = producer(bs, acks="all", **{"linger.ms": 0, "message.timeout.ms": 15000})
        for i in range(500):
            p2.produce(other, value=b"fast-%d" % i, on_delivery=dl2)
        assert p2.flush(20) == 0, "producer stalled behind a slow consumer's connection"
        assert not dl2.errors and len(dl2.acked) == 500
        msgs = consume_partition(bs, other, 0, 0, 500, timeout=20)
        assert msgs[-1].value() == b"fast-499"
        rss = broker_proc.rss_kib()
        assert rss < RSS_LIMIT_KIB, f"RSS {rss} KiB while a slow consumer has ~120 MiB of fetches pending"
    finally:
        slow.close()
    assert_healthy(broker_proc, other)
