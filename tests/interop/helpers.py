"""Shared helpers for the interop tests: admin shortcuts, produce/consume loops, kcat, and a
tiny raw Kafka wire codec for requests that no client library will send on purpose."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import struct
import subprocess
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ADMIN_TIMEOUT_S = 30.0
# librdkafka logs through Python logging instead of raw stderr, so pytest captures its lines per
# test (shown with a failure) rather than spraying "Connect to ... failed" after each broker stops.
RDKAFKA_LOGGER = logging.getLogger("librdkafka")


# ----------------------------------------------------------------------------------------------
# confluent-kafka (librdkafka)
# ----------------------------------------------------------------------------------------------

def admin(bootstrap: str, **conf) -> AdminClient:
    # librdkafka's default for producer-type handles (the admin client is one) is to ask for
    # auto-creation in Metadata; tests that want it say so explicitly.
    base = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000, "allow.auto.create.topics": False,
            "logger": RDKAFKA_LOGGER}
    base.update(conf)
    return AdminClient(base)


def wait_all(futures: dict, timeout: float = ADMIN_TIMEOUT_S) -> dict:
    """Resolve a dict of admin futures; raises the first error."""
    return {k: f.result(timeout=timeout) for k, f in futures.items()}


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None) -> None:
    a = admin(bootstrap)
    fs = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=15,
        request_timeout=20,
    )
    wait_all(fs)
    wait_for_topic(bootstrap, name, partitions)


def wait_for_topic(bootstrap: str, name: str, partitions: int, timeout: float = 15.0) -> None:
    """Poll metadata (bounded) until `name` has `partitions` partitions with a leader."""
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = a.list_topics(topic=name, timeout=5)
        t = md.topics.get(name)
        last = t
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not ready with {partitions} partitions: {last}")


def producer(bootstrap: str, **conf) -> Producer:
    base = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "socket.timeout.ms": 10000,
        "logger": RDKAFKA_LOGGER,
    }
    base.update(conf)
    return Producer(base)


class DeliveryLog:
    """Counts delivery reports; keeps (partition, offset, key, value) of every acknowledged one."""

    def __init__(self):
        self.acked: list[tuple[int, int, bytes | None, bytes | None]] = []
        self.errors: list[KafkaError] = []

    def __call__(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked.append((msg.partition(), msg.offset(), msg.key(), msg.value()))


def flush(p: Producer, timeout: float = 60.0) -> None:
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"


def consumer(bootstrap: str, **conf) -> Consumer:
    # group.id is mandatory for confluent-kafka's Consumer; these tests only assign() and never
    # commit, so no group API is exercised.
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": "kavka-interop-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "socket.timeout.ms": 10000,
        "logger": RDKAFKA_LOGGER,
    }
    base.update(conf)
    return Consumer(base)


def consume_partition(bootstrap: str, topic: str, partition: int, start: int, count: int,
                      timeout: float = 60.0, **conf) -> list:
    """Read exactly `count` records of one partition from offset `start` with assign()."""
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, partition, start)])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for m in c.consume(num_messages=min(10000, count - len(out)), timeout=1.0):
                if m.error() is not None:
                    raise AssertionError(f"consume error on {topic}[{partition}]: {m.error()}")
                out.append(m)
        assert len(out) == count, f"read {len(out)} of {count} records from {topic}[{partition}]@{start}"
        return out
    finally:
        c.close()


def consume_all(bootstrap: str, topic: str, partitions: int, expected: dict[int, int],
                timeout: float = 120.0, **conf) -> dict[int, list]:
    """Read `expected[p]` records from offset 0 of every partition with one assign() consumer."""
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: dict[int, list] = {p: [] for p in range(partitions)}
        want = sum(expected.values())
        got = 0
        deadline = time.monotonic() + timeout
        while got < want and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=1.0):
                if m.error() is not None:
                    raise AssertionError(f"consume error on {topic}: {m.error()}")
                out[m.partition()].append(m)
                got += 1
        counts = {p: len(v) for p, v in out.items()}
        assert counts == expected, f"records read per partition {counts} != produced {expected}"
        return out
    finally:
        c.close()


# ----------------------------------------------------------------------------------------------
# kcat
# ----------------------------------------------------------------------------------------------

def kcat_path() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    assert path, "kcat is not installed (scripts/test.sh installs it with apt-get)"
    return path


def kcat(*args: str, input: bytes | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [kcat_path(), *args], input=input, capture_output=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"kcat {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')[-4000:]}"
        )
    return proc


def kcat_json_lines(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# Raw Kafka wire protocol (for hostile-input and precise long-poll tests)
# ----------------------------------------------------------------------------------------------

def kstr(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request_header_v1(api_key: int, version: int, correlation_id: int, client_id: str = "raw") -> bytes:
    return struct.pack(">hhi", api_key, version, correlation_id) + kstr(client_id)


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


class RawConn:
    """A plain TCP connection speaking length-prefixed Kafka frames."""

    def __init__(self, bootstrap: str, timeout: float = 10.0):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.settimeout(timeout)
        self.next_id = 1

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data: bytes) -> bool:
        """Send bytes; False if the broker already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def send_request(self, api_key: int, version: int, body: bytes, client_id: str = "raw",
                     correlation_id: int | None = None) -> int:
        cid = self.next_id if correlation_id is None else correlation_id
        self.next_id += 1
        self.send_raw(frame(request_header_v1(api_key, version, cid, client_id) + body))
        return cid

    def _recv_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> bytes | None:
        """The next response frame's payload, or None if the broker closed the connection.
        Raises socket.timeout if nothing arrives within the socket timeout."""
        head = self._recv_exact(4)
        if head is None:
            return None
        (size,) = struct.unpack(">i", head)
        assert 0 <= size <= 64 * 1024 * 1024, f"absurd response size {size}"
        return self._recv_exact(size)

    def recv_response(self) -> tuple[int, bytes] | None:
        payload = self.recv_frame()
        if payload is None:
            return None
        (cid,) = struct.unpack(">i", payload[:4])
        return cid, payload[4:]

    def closed_or_response(self, wait: float = 10.0):
        """After hostile input: returns None if the broker closed the connection, else the
        (correlation_id, body) it answered. Fails if it neither answers nor closes in `wait`."""
        self.sock.settimeout(wait)
        try:
            return self.recv_response()
        except (socket.timeout, TimeoutError):
            raise AssertionError(f"broker neither answered nor closed the connection within {wait}s")


def api_versions_v0_body() -> bytes:
    return b""


def parse_api_versions_v0(body: bytes) -> tuple[int, dict[int, tuple[int, int]]]:
    """ApiVersions response v0 (also used by Kafka to answer an unsupported ApiVersions version)."""
    (error_code,) = struct.unpack_from(">h", body, 0)
    (n,) = struct.unpack_from(">i", body, 2)
    apis = {}
    off = 6
    for _ in range(max(n, 0)):
        key, lo, hi = struct.unpack_from(">hhh", body, off)
        apis[key] = (lo, hi)
        off += 6
    return error_code, apis


def fetch_v4_body(topic: str, partition: int, offset: int, max_wait_ms: int, min_bytes: int = 1,
                  max_bytes: int = 1 << 20) -> bytes:
    return (
        struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, 0)
        + struct.pack(">i", 1) + kstr(topic)
        + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
    )


def parse_fetch_v4(body: bytes) -> list[tuple[str, int, int, int, bytes]]:
    """-> [(topic, partition, error_code, high_watermark, records)]"""
    out = []
    off = 4  # throttle_time_ms
    (nt,) = struct.unpack_from(">i", body, off)
    off += 4
    for _ in range(nt):
        (tl,) = struct.unpack_from(">h", body, off)
        off += 2
        topic = body[off:off + tl].decode()
        off += tl
        (np_,) = struct.unpack_from(">i", body, off)
        off += 4
        for _ in range(np_):
            part, err, hw, _lso = struct.unpack_from(">ihqq", body, off)
            off += 22
            (na,) = struct.unpack_from(">i", body, off)
            off += 4 + max(na, 0) * 16
            (rl,) = struct.unpack_from(">i", body, off)
            off += 4
            records = body[off:off + max(rl, 0)]
            off += max(rl, 0)
            out.append((topic, part, err, hw, records))
    return out


# ----------------------------------------------------------------------------------------------
# Hand-built v2 RecordBatch and Produce v3 (to test CRC validation and ordering precisely)
# ----------------------------------------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record_batch(values: list[bytes], base_timestamp: int, corrupt_crc: bool = False,
                 producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    records = b""
    for i, v in enumerate(values):
        body = b"\x00" + varint(i) + varint(i) + varint(-1) + varint(len(v)) + v + varint(0)
        records += varint(len(body)) + body
    after_crc = (
        struct.pack(">hiqqqhii", 0, len(values) - 1, base_timestamp, base_timestamp + len(values) - 1,
                    producer_id, producer_epoch, base_sequence, len(values))
        + records
    )
    crc = crc32c(after_crc) ^ (0xDEADBEEF if corrupt_crc else 0)
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def produce_v3_body(topic: str, partition: int, records: bytes, acks: int = -1, timeout_ms: int = 10000) -> bytes:
    return (
        kstr(None) + struct.pack(">hi", acks, timeout_ms)
        + struct.pack(">i", 1) + kstr(topic)
        + struct.pack(">i", 1) + struct.pack(">i", partition)
        + struct.pack(">i", len(records)) + records
    )


def parse_produce_v3(body: bytes) -> list[tuple[str, int, int, int]]:
    """-> [(topic, partition, error_code, base_offset)]"""
    out = []
    off = 0
    (nt,) = struct.unpack_from(">i", body, off)
    off += 4
    for _ in range(nt):
        (tl,) = struct.unpack_from(">h", body, off)
        off += 2
        topic = body[off:off + tl].decode()
        off += tl
        (np_,) = struct.unpack_from(">i", body, off)
        off += 4
        for _ in range(np_):
            part, err, base, _lat = struct.unpack_from(">ihqq", body, off)
            off += 22
            out.append((topic, part, err, base))
    return out


def init_producer_id_v0_body(transactional_id: str | None = None, timeout_ms: int = 60000) -> bytes:
    return kstr(transactional_id) + struct.pack(">i", timeout_ms)


def parse_init_producer_id_v0(body: bytes) -> tuple[int, int, int]:
    """-> (error_code, producer_id, producer_epoch)"""
    _throttle, err, pid, epoch = struct.unpack_from(">ihqh", body, 0)
    return err, pid, epoch


def close_kafka_python_producer(p, timeout: float = 5.0) -> None:
    """Close a kafka-python producer even when its flush times out (the broker never answered),
    so no sender thread outlives the test and no finalizer retries the flush later."""
    try:
        p.close(timeout=timeout)
    except Exception:
        sender = getattr(p, "_sender", None)
        if sender is not None:
            sender.force_close()
        p._closed = True
