"""Shared pieces of the transaction interop tests (test_transactions*.py):

- the transactional request/response codecs spoken by hand (FindCoordinator v1,
  InitProducerId v0, AddPartitionsToTxn v0, EndTxn v0, Produce v3 with a transactional id,
  ListOffsets v2 and Fetch v4 with an isolation level) and a transactional RecordBatch;
- `TransformApp`: a consume-transform-produce loop with confluent-kafka's transactional
  producer and send_offsets_to_transaction, recovering the way Kafka documents (abort and
  rewind to the committed offsets on an abortable error, a new producer on a fatal one);
- readers that check what read_committed and read_uncommitted consumers see.

Free of pytest, like cluster.py. Every wait is bounded.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from helpers import RDKAFKA_LOGGER, RawConn, crc32c, kstr, varint

# --- API keys and Kafka error codes (org.apache.kafka.common.protocol.Errors) ----------------
PRODUCE, FETCH, LIST_OFFSETS = 0, 1, 2
FIND_COORDINATOR, INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, END_TXN = 10, 22, 24, 26

NONE = 0
NOT_COORDINATOR = 16
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
INVALID_REQUEST = 42
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
CONCURRENT_TRANSACTIONS = 51
PRODUCER_FENCED = 90
# Answers a client retries: the coordinator is being elected/loaded, or the previous
# transaction of this id is still completing (markers being written).
RETRIABLE_TXN = {COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
                 CONCURRENT_TRANSACTIONS}
FENCED_CODES = {INVALID_PRODUCER_EPOCH, PRODUCER_FENCED}

# Broker properties of the transaction tests: Kafka's transaction timers tuned down so that a
# stuck transaction is aborted within seconds, and fewer __transaction_state partitions than
# Kafka's 50 so that the first coordinator lookup is quick.
TXN_BROKER_PROPS = {
    "transaction.state.log.num.partitions": 4,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 1000,
    "transaction.remove.expired.transaction.cleanup.interval.ms": 60000,
}

TXN_ATTRIBUTE = 0x10  # RecordBatch attributes bit 4: transactional


# --- transactional record batch ----------------------------------------------------------------

def txn_record_batch(values: list[bytes], base_timestamp: int, producer_id: int, producer_epoch: int,
                     base_sequence: int, transactional: bool = True) -> bytes:
    """A v2 RecordBatch (no compression) with the transactional attribute set."""
    records = b""
    for i, v in enumerate(values):
        body = b"\x00" + varint(i) + varint(i) + varint(-1) + varint(len(v)) + v + varint(0)
        records += varint(len(body)) + body
    attributes = TXN_ATTRIBUTE if transactional else 0
    after_crc = (
        struct.pack(">hiqqqhii", attributes, len(values) - 1, base_timestamp,
                    base_timestamp + len(values) - 1, producer_id, producer_epoch, base_sequence,
                    len(values))
        + records
    )
    after_length = struct.pack(">ibI", 0, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


# --- raw requests ------------------------------------------------------------------------------

def _call(c: RawConn, api_key: int, version: int, body: bytes) -> bytes:
    cid = c.send_request(api_key, version, body)
    resp = c.recv_response()
    assert resp is not None, f"broker closed the connection on api {api_key} v{version}"
    got, payload = resp
    assert got == cid, f"correlation id {got} != {cid}"
    return payload


def find_coordinator(c: RawConn, key: str, key_type: int = 1) -> tuple[int, int, str, int]:
    """FindCoordinator v1 -> (error_code, node_id, host, port)."""
    body = _call(c, FIND_COORDINATOR, 1, kstr(key) + struct.pack(">b", key_type))
    _throttle, err = struct.unpack_from(">ih", body, 0)
    off = 6
    (ml,) = struct.unpack_from(">h", body, off)
    off += 2 + max(ml, 0)
    (node_id,) = struct.unpack_from(">i", body, off)
    off += 4
    (hl,) = struct.unpack_from(">h", body, off)
    host = body[off + 2:off + 2 + hl].decode()
    off += 2 + hl
    (port,) = struct.unpack_from(">i", body, off)
    return err, node_id, host, port


def init_producer_id(c: RawConn, transactional_id: str | None, timeout_ms: int = 60000) -> tuple[int, int, int]:
    """InitProducerId v0 -> (error_code, producer_id, producer_epoch)."""
    body = _call(c, INIT_PRODUCER_ID, 0, kstr(transactional_id) + struct.pack(">i", timeout_ms))
    _throttle, err, pid, epoch = struct.unpack_from(">ihqh", body, 0)
    return err, pid, epoch


def add_partitions_to_txn(c: RawConn, transactional_id: str, pid: int, epoch: int,
                          topic: str, partitions: list[int]) -> dict[int, int]:
    """AddPartitionsToTxn v0 for one topic -> {partition: error_code}."""
    req = (kstr(transactional_id) + struct.pack(">qh", pid, epoch)
           + struct.pack(">i", 1) + kstr(topic)
           + struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions))
    body = _call(c, ADD_PARTITIONS_TO_TXN, 0, req)
    off = 4
    (nt,) = struct.unpack_from(">i", body, off)
    off += 4
    out = {}
    for _ in range(nt):
        (tl,) = struct.unpack_from(">h", body, off)
        off += 2 + tl
        (np_,) = struct.unpack_from(">i", body, off)
        off += 4
        for _ in range(np_):
            p, err = struct.unpack_from(">ih", body, off)
            off += 6
            out[p] = err
    return out


def end_txn(c: RawConn, transactional_id: str, pid: int, epoch: int, commit: bool) -> int:
    """EndTxn v0 -> error_code."""
    body = _call(c, END_TXN, 0, kstr(transactional_id) + struct.pack(">qhb", pid, epoch, 1 if commit else 0))
    _throttle, err = struct.unpack_from(">ih", body, 0)
    return err


def produce_txn(c: RawConn, transactional_id: str | None, topic: str, partition: int, batch: bytes,
                acks: int = -1) -> tuple[int, int]:
    """Produce v3 (transactional_id set) of one batch -> (error_code, base_offset)."""
    req = (kstr(transactional_id) + struct.pack(">hi", acks, 10000)
           + struct.pack(">i", 1) + kstr(topic)
           + struct.pack(">i", 1) + struct.pack(">i", partition)
           + struct.pack(">i", len(batch)) + batch)
    body = _call(c, PRODUCE, 3, req)
    off = 4  # one topic
    (tl,) = struct.unpack_from(">h", body, off)
    off += 2 + tl + 4
    _p, err, base = struct.unpack_from(">ihq", body, off)
    return err, base


def list_offsets(c: RawConn, topic: str, partition: int, isolation_level: int,
                 timestamp: int = -1) -> tuple[int, int]:
    """ListOffsets v2 (latest by default) -> (error_code, offset). With isolation_level 1
    (read_committed) Kafka answers the last stable offset instead of the high watermark."""
    req = (struct.pack(">ib", -1, isolation_level) + struct.pack(">i", 1) + kstr(topic)
           + struct.pack(">i", 1) + struct.pack(">iq", partition, timestamp))
    body = _call(c, LIST_OFFSETS, 2, req)
    off = 4 + 4
    (tl,) = struct.unpack_from(">h", body, off)
    off += 2 + tl + 4
    _p, err, _ts, offset = struct.unpack_from(">ihqq", body, off)
    return err, offset


def fetch_committed_v4(c: RawConn, topic: str, partition: int, offset: int, isolation_level: int = 1,
                       max_wait_ms: int = 0) -> dict:
    """Fetch v4 of one partition -> {error, hw, lso, aborted: [(pid, first_offset)], records_bytes}."""
    req = (struct.pack(">iiiib", -1, max_wait_ms, 1, 1 << 20, isolation_level)
           + struct.pack(">i", 1) + kstr(topic)
           + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 1 << 20))
    body = _call(c, FETCH, 4, req)
    off = 4 + 4
    (tl,) = struct.unpack_from(">h", body, off)
    off += 2 + tl + 4
    _p, err, hw, lso = struct.unpack_from(">ihqq", body, off)
    off += 22
    (na,) = struct.unpack_from(">i", body, off)
    off += 4
    aborted = []
    for _ in range(max(na, 0)):
        aborted.append(struct.unpack_from(">qq", body, off))
        off += 16
    (rl,) = struct.unpack_from(">i", body, off)
    return {"error": err, "hw": hw, "lso": lso, "aborted": aborted, "records_bytes": max(rl, 0)}


def retry_txn_call(what: str, call: Callable[[], int | tuple], timeout: float = 30.0):
    """Repeats `call` while its error code (the int, or the first element) is retriable for a
    transactional client (coordinator loading or moving, previous transaction completing)."""
    deadline = time.monotonic() + timeout
    while True:
        result = call()
        err = result if isinstance(result, int) else result[0]
        if err not in RETRIABLE_TXN or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def wait_coordinator(bootstrap: str, transactional_id: str, timeout: float = 30.0) -> tuple[int, str]:
    """FindCoordinator key_type=1 until it answers without error -> (node_id, "host:port")."""
    deadline = time.monotonic() + timeout
    last = None
    hosts = bootstrap.split(",")
    i = 0
    while time.monotonic() < deadline:
        try:
            with RawConn(hosts[i % len(hosts)], timeout=5) as c:
                err, node, host, port = find_coordinator(c, transactional_id, 1)
            last = (err, node, host, port)
            if err == NONE and node >= 0:
                return node, f"{host}:{port}"
        except (OSError, AssertionError) as e:
            last = repr(e)
        i += 1
        time.sleep(0.2)
    raise AssertionError(f"no transaction coordinator for {transactional_id!r} within {timeout}s: last {last}")


# --- confluent-kafka clients -------------------------------------------------------------------

def txn_producer(bootstrap: str, transactional_id: str, **conf) -> Producer:
    base = {
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "linger.ms": 5,
        "socket.timeout.ms": 5000,
        "transaction.timeout.ms": 30000,
        "logger": RDKAFKA_LOGGER,
    }
    base.update(conf)
    return Producer(base)


class StuckCall(Exception):
    """A client call that did not return within its bound (it is left running in a daemon
    thread; its client object must then be abandoned, never destroyed from this thread)."""


def bounded_call(fn, timeout: float, what: str = "call"):
    """Runs `fn()` in a daemon thread and returns its result or raises its exception; raises
    StuckCall after `timeout`. librdkafka's transactional calls take a timeout but some waits
    inside them do not honour it (seen: send_offsets_to_transaction() blocked for good after
    a broker restart, waiting on the group coordinator it had cached), and a blocked C call
    cannot be interrupted by pytest-timeout's signal either."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e
    th = threading.Thread(target=run, name=f"bounded-{what}", daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise StuckCall(f"{what} did not return within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


def discard_producer(p: Producer) -> None:
    """Drops a producer without waiting on it: Producer.close() aborts an open transaction and
    then flushes without any bound (its argument is ignored), which hangs on a fenced producer
    or a broker that is down. Purge, serve the purged reports briefly, let it be destroyed."""
    try:
        p.purge(in_queue=True, in_flight=True, blocking=False)
        p.flush(1)
    except Exception:  # noqa: BLE001 - a fatal producer may refuse; it is thrown away anyway
        pass


def read_values(bootstrap: str, topic: str, partitions: int, isolation: str, expect: int | None = None,
                settle: float = 2.0, timeout: float = 60.0) -> dict[int, list[bytes]]:
    """Every record value of `topic` per partition from offset 0 as a consumer with
    isolation.level=`isolation` sees it. Reads until `expect` records (then `settle` more
    seconds to catch extras), or, with `expect` None, until nothing new arrives for `settle`."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "kavka-txn-reader",
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "socket.timeout.ms": 5000,
        "fetch.wait.max.ms": 100,
        "logger": RDKAFKA_LOGGER,
    })
    out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        got = 0
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if expect is not None and got >= expect and time.monotonic() - quiet_since >= settle:
                break
            if expect is None and time.monotonic() - quiet_since >= settle:
                break
            msgs = c.consume(num_messages=10000, timeout=0.2)
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF or m.error().retriable():
                        continue
                    raise AssertionError(f"consume error on {topic}: {m.error()}")
                out[m.partition()].append(m.value())
                got += 1
            if msgs:
                quiet_since = time.monotonic()
        return out
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int,
                      timeout: float = 15.0) -> list[int]:
    """The group's committed offsets as a read_committed consumer fetches them (OffsetFetch
    with require_stable: librdkafka retries UNSTABLE_OFFSET_COMMIT until `timeout`)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "isolation.level": "read_committed", "logger": RDKAFKA_LOGGER})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=timeout)
        return [tp.offset for tp in tps]
    finally:
        c.close()


# The consume-transform-produce tests: 100k input records over 4 partitions.
CTP_PARTITIONS = 4
CTP_RECORDS = 100_000


def produce_inputs(bootstrap: str, topic: str, partitions: int, total: int) -> dict[int, list[bytes]]:
    """`total` records round-robin over the partitions, values p<partition>-<index>."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                  "batch.num.messages": 10000, "logger": RDKAFKA_LOGGER})
    inputs: dict[int, list[bytes]] = {i: [] for i in range(partitions)}
    for i in range(total):
        part = i % partitions
        v = b"p%d-%07d" % (part, i)
        inputs[part].append(v)
        while True:
            try:
                p.produce(topic, value=v, partition=part)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(60)
    assert left == 0, f"{left} input records undelivered after 60s"
    return inputs



class TransformApp:
    """Consume-transform-produce, exactly once: reads `in_topic` (assign() of every partition,
    group `group` for the offsets, read_committed), writes b"out-" + value to the same
    partition of `out_topic`, and commits the input positions with send_offsets_to_transaction
    in the same transaction, `txn_records` input records per transaction.

    Recovery as Kafka documents it: a retriable commit failure is retried; an abortable error
    aborts the transaction and rewinds the consumer to the committed offsets; a fatal error
    (fenced, or the transaction timed out on the broker) makes a new producer with the same
    transactional.id, whose init_transactions fences the old one and completes or aborts its
    transaction, then rewinds. A transactional call that does not return within its bound
    (librdkafka can block for good, see bounded_call) abandons the producer for a new one.
    `hook(app, txn_index)` runs in the middle of producing each transaction's records, to
    inject faults there."""

    def __init__(self, bootstrap: str, in_topic: str, out_topic: str, partitions: int, group: str,
                 transactional_id: str, txn_records: int = 2500, op_timeout: float = 20.0,
                 producer_conf: dict | None = None):
        self.bootstrap = bootstrap
        self.in_topic = in_topic
        self.out_topic = out_topic
        self.partitions = partitions
        self.group = group
        self.transactional_id = transactional_id
        self.txn_records = txn_records
        self.op_timeout = op_timeout
        self.producer_conf = dict(producer_conf or {})
        self.commits = 0
        self.aborts = 0
        self.new_producers = 0
        self.commit_retries = 0
        self.events: list[str] = []  # what went wrong and how it was handled, for failure messages
        self.fatal_errors: list[KafkaError] = []
        self.producer: Producer | None = None
        self.abandoned: list[Producer] = []  # stuck in a call: never destroyed
        self.stuck_calls = 0
        self.consumer: Consumer | None = None
        self.committed: list[int] = [0] * partitions

    def log(self, what: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {what}")

    def _error_cb(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal_errors.append(err)

    def _call(self, what: str, fn):
        """A transactional API call bounded at op_timeout + 5 s (see bounded_call)."""
        return bounded_call(fn, self.op_timeout + 5, what)

    def _abandon_producer(self) -> None:
        """A producer stuck inside a call: kept referenced (destroying it would block on the
        stuck call) and replaced; the next init_transactions fences it."""
        if self.producer is not None:
            self.abandoned.append(self.producer)
            self.producer = None

    def _make_producer(self, deadline: float) -> None:
        if self.producer is not None:
            discard_producer(self.producer)
            self.producer = None
        self.new_producers += 1
        p = txn_producer(self.bootstrap, self.transactional_id, error_cb=self._error_cb,
                         **self.producer_conf)
        while True:
            timeout = min(self.op_timeout, max(1.0, deadline - time.monotonic()))
            try:
                bounded_call(lambda: p.init_transactions(timeout), timeout + 15, "init_transactions")
                self.producer = p
                return
            except StuckCall as e:
                raise AssertionError(f"{e}\nevents: {self.events[-20:]}") from None
            except KafkaException as e:
                err = e.args[0]
                self.log(f"init_transactions: {err}")
                if err.fatal() or time.monotonic() > deadline:
                    raise AssertionError(f"init_transactions failed: {err}\nevents: {self.events[-20:]}") from None
                time.sleep(0.5)

    def _rewind(self, deadline: float) -> None:
        """Assigns every input partition at its committed offset (0 when none yet)."""
        assert self.consumer is not None
        while True:
            try:
                tps = self.consumer.committed(
                    [TopicPartition(self.in_topic, p) for p in range(self.partitions)],
                    timeout=min(10.0, max(1.0, deadline - time.monotonic())))
                break
            except KafkaException as e:
                self.log(f"committed(): {e.args[0]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"could not read committed offsets: {e}\nevents: {self.events[-20:]}") from None
                time.sleep(0.5)
        self.committed = [max(tp.offset, 0) for tp in tps]
        self.consumer.unassign()
        self.consumer.assign([TopicPartition(self.in_topic, p, o) for p, o in enumerate(self.committed)])

    def _batch(self, want: int, deadline: float) -> list:
        assert self.consumer is not None
        out = []
        empty_polls = 0
        while len(out) < want and empty_polls < 3 and time.monotonic() < deadline:
            msgs = self.consumer.consume(num_messages=min(want - len(out), 5000), timeout=0.3)
            if not msgs:
                empty_polls += 1
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF or m.error().retriable():
                        continue
                    raise AssertionError(f"input consume error: {m.error()}")
                out.append(m)
        return out

    def _produce(self, msgs: list, on_half=None) -> None:
        """Produces the transformed records; `on_half()` runs once half of them are handed to
        librdkafka (some surely in flight). A local queue that stays full for op_timeout (the
        broker gone for good) counts as a stuck call."""
        assert self.producer is not None
        half = len(msgs) // 2
        for i, m in enumerate(msgs):
            if i == half and on_half is not None:
                on_half()
            give_up = time.monotonic() + self.op_timeout
            while True:
                try:
                    self.producer.produce(self.out_topic, value=b"out-" + m.value(), key=m.key(),
                                          partition=m.partition())
                    break
                except BufferError:
                    if time.monotonic() > give_up:
                        raise StuckCall(f"produce queue full for {self.op_timeout:.0f}s") from None
                    self.producer.poll(0.05)
        self.producer.poll(0)

    def _positions(self, msgs: list) -> list[TopicPartition]:
        """Next offset per input partition after this transaction's records (and the
        positions of partitions that had none, so the commit is complete)."""
        nxt = list(self.committed)
        for m in msgs:
            nxt[m.partition()] = max(nxt[m.partition()], m.offset() + 1)
        return [TopicPartition(self.in_topic, p, o) for p, o in enumerate(nxt)]

    def run(self, total: int, timeout: float,
            hook: Callable[["TransformApp", int], None] | None = None) -> None:
        """Until the committed input offsets add up to `total` (every input record processed
        and its output committed). Raises AssertionError with the event log on timeout."""
        deadline = time.monotonic() + timeout
        self.consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "socket.timeout.ms": 5000,
            "fetch.wait.max.ms": 100,
            "logger": RDKAFKA_LOGGER,
        })
        try:
            self._make_producer(deadline)
            self._rewind(deadline)
            txn = 0
            while sum(self.committed) < total:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"consume-transform-produce did not finish in {timeout}s: committed input "
                        f"offsets {self.committed} (sum {sum(self.committed)} of {total}), {self.commits} "
                        f"commits, {self.aborts} aborts, {self.new_producers} producers\n"
                        f"events: {self.events[-30:]}")
                msgs = self._batch(self.txn_records, deadline)
                if not msgs:
                    continue
                txn += 1
                stage = "begin"
                try:
                    self.producer.begin_transaction()
                    stage = "produce"
                    self._produce(msgs, None if hook is None else (lambda: hook(self, txn)))
                    positions = self._positions(msgs)
                    stage = "send_offsets"
                    meta = self.consumer.consumer_group_metadata()
                    producer = self.producer
                    self._call("send_offsets_to_transaction", lambda: producer.send_offsets_to_transaction(
                        positions, meta, self.op_timeout))
                    stage = "commit"
                    self._commit()
                    self.committed = [tp.offset for tp in positions]
                    self.commits += 1
                except KafkaException as e:
                    err = e.args[0]
                    self.log(f"txn {txn} failed at {stage}: {err} (fatal={err.fatal()}, "
                             f"abortable={err.txn_requires_abort()}, retriable={err.retriable()})")
                    self._recover(err, deadline)
                except StuckCall as e:
                    self.stuck_calls += 1
                    self.log(f"txn {txn}: {e}: abandoning the producer")
                    self._abandon_producer()
                    self._make_producer(deadline)
                    self._rewind(deadline)
        finally:
            try:
                self.consumer.close()
            except Exception:  # noqa: BLE001
                pass
            if self.producer is not None:
                discard_producer(self.producer)
                self.producer = None

    def _commit(self) -> None:
        """commit_transaction, retried while librdkafka says the error is retriable (the
        outcome is then unknown and a retry completes it; bounded)."""
        for attempt in range(6):
            try:
                producer = self.producer
                self._call("commit_transaction", lambda: producer.commit_transaction(self.op_timeout))
                return
            except KafkaException as e:
                err = e.args[0]
                if not err.retriable() or err.fatal() or err.txn_requires_abort() or attempt == 5:
                    raise
                self.commit_retries += 1
                self.log(f"commit retry after {err}")
                time.sleep(0.2)

    def _recover(self, err: KafkaError, deadline: float) -> None:
        if err.txn_requires_abort() and not err.fatal():
            try:
                producer = self.producer
                self._call("abort_transaction", lambda: producer.abort_transaction(self.op_timeout))
                self.aborts += 1
                self._rewind(deadline)
                return
            except KafkaException as e:
                self.log(f"abort_transaction failed: {e.args[0]}: new producer")
            except StuckCall as e:
                self.stuck_calls += 1
                self.log(f"{e}: abandoning the producer")
                self._abandon_producer()
        # Fatal (fenced, timed out on the broker) or an unknown state: a new producer. Its
        # init_transactions completes or aborts whatever the old one left open.
        self._make_producer(deadline)
        self._rewind(deadline)


def check_transformed(bootstrap: str, in_topic: str, out_topic: str, partitions: int,
                      inputs: dict[int, list[bytes]], timeout: float = 60.0) -> None:
    """The output topic, read_committed, is exactly b"out-" + every input value, partition by
    partition in input order: nothing lost, nothing twice."""
    total = sum(len(v) for v in inputs.values())
    got = read_values(bootstrap, out_topic, partitions, "read_committed", expect=total, settle=1.0,
                      timeout=timeout)
    for p in range(partitions):
        want = [b"out-" + v for v in inputs[p]]
        have = got[p]
        if have != want:
            seen: dict[bytes, int] = {}
            for v in have:
                seen[v] = seen.get(v, 0) + 1
            dupes = [v for v, n in seen.items() if n > 1]
            missing = [v for v in want if v not in seen]
            first_diff = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
            raise AssertionError(
                f"{out_topic}[{p}]: {len(have)} committed output records for {len(want)} inputs; "
                f"{len(dupes)} duplicated (first {dupes[:3]}), {len(missing)} missing (first {missing[:3]}), "
                f"first difference at index {first_diff}: "
                f"{have[first_diff:first_diff + 2]} vs {want[first_diff:first_diff + 2]}")
