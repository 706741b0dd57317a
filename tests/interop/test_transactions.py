"""Transactions and the idempotent producer against one broker, with real clients
(confluent-kafka first, kafka-python) and requests spoken by hand.

- commit and abort (two producers interleaved): read_committed sees exactly the committed
  records in order, read_uncommitted all of them, control records neither;
- a read_committed consumer stops at an open transaction (the last stable offset) and goes on
  once it commits; an aborted one is skipped (Fetch's aborted_transactions);
- consume-transform-produce with send_offsets_to_transaction, 100k records, across a kill -9;
  transactional offsets visible only on commit (read_committed OffsetFetch, require_stable);
- a zombie producer is fenced by a new instance of its transactional.id and writes nothing;
- an idempotent producer whose connections are cut (proxy.CuttingProxy) writes no duplicate
  (confluent-kafka and kafka-python);
- bad input: EndTxn of an unknown transactional id, a sequence gap, an old epoch;
- `kavka transactions --list/--describe` and `kavka describe-producers`;
- a kill -9 in the middle of a transaction: after recovery and transaction.timeout.ms it is
  aborted and read_committed consumers pass it; a kill -9 right after EndTxn: the recovered
  coordinator completes the commit or abort it promised;
- kafka-python's transactional producer (commit, abort, send_offsets_to_transaction) and its
  read_committed consumer.

Each test runs its own broker (conftest) with short group and transaction timers; every wait
is bounded and a failure prints the broker's log tail.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import conftest
from conftest import GROUP_BROKER_CONFIG, KAVKA_BIN, Broker
from helpers import (
    DeliveryLog,
    RawConn,
    close_kafka_python_producer,
    consumer,
    create_topic,
    flush,
    producer,
)
from proxy import CuttingProxy
from txn_app import (
    FENCED_CODES,
    INVALID_PRODUCER_ID_MAPPING,
    NONE,
    OUT_OF_ORDER_SEQUENCE_NUMBER,
    CTP_PARTITIONS,
    CTP_RECORDS,
    TXN_BROKER_PROPS,
    TransformApp,
    add_partitions_to_txn,
    bounded_call,
    check_transformed,
    committed_offsets,
    discard_producer,
    end_txn,
    fetch_committed_v4,
    init_producer_id,
    list_offsets,
    produce_inputs,
    produce_txn,
    read_values,
    retry_txn_call,
    txn_producer,
    txn_record_batch,
    wait_coordinator,
)

TXN_BROKER_CONFIG = {**GROUP_BROKER_CONFIG, **TXN_BROKER_PROPS}


@pytest.fixture
def txn_broker_proc(request, tmp_path):
    """A running `Broker` with TXN_BROKER_CONFIG (plus any @pytest.mark.broker_config)."""
    marker = request.node.get_closest_marker("broker_config")
    overrides = {**TXN_BROKER_CONFIG, **(dict(marker.kwargs) if marker else {})}
    b = conftest._start_broker(request, tmp_path, overrides)
    yield b
    conftest._finish_broker(request, b)


@pytest.fixture
def txn_broker(txn_broker_proc) -> str:
    return txn_broker_proc.bootstrap


def fenced_or_fatal(err: KafkaError) -> bool:
    return err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                         KafkaError.INVALID_PRODUCER_EPOCH)


def kafka_error_of(e: BaseException) -> KafkaError | None:
    """The KafkaError an exception carries (directly or as its cause)."""
    while e is not None:
        if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError):
            return e.args[0]
        e = e.__cause__
    return None


def poll_values(c, seconds: float, until: int | None = None) -> list[bytes]:
    """Values a live consumer delivers within `seconds` (sooner once it has `until`)."""
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (until is None or len(out) < until):
        for m in c.consume(num_messages=1000, timeout=0.2):
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF or m.error().retriable():
                    continue
                raise AssertionError(f"consume error: {m.error()}")
            out.append(m.value())
    return out


def offsets_of(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """(high watermark, last stable offset) by ListOffsets v2 read_uncommitted / read_committed."""
    with RawConn(bootstrap) as c:
        e0, hw = list_offsets(c, topic, partition, 0)
        e1, lso = list_offsets(c, topic, partition, 1)
    assert (e0, e1) == (NONE, NONE), f"ListOffsets errors {e0}, {e1}"
    return hw, lso


# --- 1. commit and abort ---------------------------------------------------------------------

def test_commit_and_abort_read_committed_sees_only_committed(txn_broker, topic_name):
    """A commits three transactions; B aborts two whose records are interleaved with A's in the
    log (both open at once). read_committed: exactly A's records, in order; read_uncommitted:
    all of them; neither sees a control record, though each marker takes an offset."""
    bs = txn_broker
    parts, per = 2, 40
    create_topic(bs, topic_name, partitions=parts)
    a = txn_producer(bs, f"{topic_name}-A")
    b = txn_producer(bs, f"{topic_name}-B")
    a.init_transactions(30)
    b.init_transactions(30)
    dl = DeliveryLog()
    committed = {p: [] for p in range(parts)}
    everything = {p: [] for p in range(parts)}

    def write(prod, tag: str, rounds: range, keep: bool) -> None:
        for i in rounds:
            for p in range(parts):
                v = b"%s-p%d-%03d" % (tag.encode(), p, i)
                prod.produce(topic_name, value=v, partition=p, on_delivery=dl)
                everything[p].append(v)
                if keep:
                    committed[p].append(v)
        prod.flush(30)

    for k in range(3):
        a.begin_transaction()
        write(a, f"A{k}", range(0, per // 2), keep=True)
        if k < 2:  # B's transaction opens in the middle of A's and is aborted after A commits
            b.begin_transaction()
            write(b, f"B{k}", range(per), keep=False)
        write(a, f"A{k}", range(per // 2, per), keep=True)
        a.commit_transaction(30)
        if k < 2:
            write(b, f"B{k}-late", range(5), keep=False)
            b.abort_transaction(30)
    discard_producer(a)
    discard_producer(b)
    assert not dl.errors, dl.errors[:5]

    n_records = {p: len(everything[p]) for p in range(parts)}
    # Three commit markers of A and two abort markers of B per partition. As in Kafka, EndTxn
    # is answered once the coordinator has logged PrepareCommit/PrepareAbort; the markers
    # follow, so the last one may land just after commit_transaction() returned.
    want = [(n_records[p] + 5, n_records[p] + 5) for p in range(parts)]
    deadline = time.monotonic() + 15
    got = None
    while time.monotonic() < deadline:
        got = [offsets_of(bs, topic_name, p) for p in range(parts)]
        if got == want:
            break
        time.sleep(0.1)
    assert got == want, f"(HW, LSO) per partition {got}, expected {want}: records + 5 markers, no transaction open"

    rc = read_values(bs, topic_name, parts, "read_committed", expect=sum(len(v) for v in committed.values()))
    for p in range(parts):
        assert rc[p] == committed[p], (
            f"read_committed partition {p}: {len(rc[p])} records, expected {len(committed[p])}; "
            f"first unexpected {[v for v in rc[p] if v not in committed[p]][:3]}")
    ru = read_values(bs, topic_name, parts, "read_uncommitted", expect=sum(n_records.values()))
    for p in range(parts):
        assert sorted(ru[p]) == sorted(everything[p]), (
            f"read_uncommitted partition {p}: {len(ru[p])} records for {n_records[p]} produced")
        # Each producer's records keep their order.
        for tag in (b"A", b"B"):
            mine = [v for v in ru[p] if v.startswith(tag)]
            assert mine == [v for v in everything[p] if v.startswith(tag)], f"{tag!r} out of order in {p}"


# --- 2. the last stable offset -----------------------------------------------------------------

def test_read_committed_stops_at_open_transaction_then_commit_or_abort(txn_broker, topic_name):
    bs = txn_broker
    create_topic(bs, topic_name, partitions=1)
    plain = producer(bs, acks="all", **{"enable.idempotence": True})
    t = txn_producer(bs, f"{topic_name}-t")
    t.init_transactions(30)

    def write(prod, tag: bytes, n: int = 10) -> list[bytes]:
        vals = [b"%s-%02d" % (tag, i) for i in range(n)]
        for v in vals:
            prod.produce(topic_name, value=v, partition=0)
        flush(prod, 30)
        return vals

    before = write(plain, b"before")
    t.begin_transaction()
    opened = write(t, b"open")
    after = write(plain, b"after")
    assert offsets_of(bs, topic_name) == (30, 10), "(HW, LSO) with a transaction open at offset 10"
    with RawConn(bs) as c:
        f = fetch_committed_v4(c, topic_name, 0, 0)
    assert f["error"] == 0 and f["lso"] == 10 and f["hw"] == 30, f

    rc = consumer(bs, **{"isolation.level": "read_committed", "fetch.wait.max.ms": 100})
    ru = consumer(bs, **{"isolation.level": "read_uncommitted", "fetch.wait.max.ms": 100})
    try:
        rc.assign([TopicPartition(topic_name, 0, 0)])
        ru.assign([TopicPartition(topic_name, 0, 0)])
        assert poll_values(ru, 20, until=30) == before + opened + after
        got = poll_values(rc, 3)
        assert got == before, f"read_committed past the open transaction: {got}"

        t.commit_transaction(30)
        got = poll_values(rc, 20, until=20)
        assert got == opened + after, f"after the commit read_committed got {got}"
        assert offsets_of(bs, topic_name) == (31, 31), "(HW, LSO) after the commit marker"

        # An aborted transaction, with records of another producer after it.
        t.begin_transaction()
        doomed = write(t, b"doomed")
        later = write(plain, b"later")
        assert offsets_of(bs, topic_name) == (51, 31)
        got = poll_values(rc, 2)
        assert got == [], f"read_committed past the open transaction: {got}"
        t.abort_transaction(30)
        got = poll_values(rc, 20, until=10)
        assert got == later, f"after the abort read_committed got {got} (aborted records must be skipped)"
        assert poll_values(ru, 20, until=20) == doomed + later
        assert offsets_of(bs, topic_name) == (52, 52)
        with RawConn(bs) as c:
            f = fetch_committed_v4(c, topic_name, 0, 31)
        assert f["error"] == 0 and f["lso"] == 52, f
        firsts = [first for (_pid, first) in f["aborted"]]
        assert firsts == [31], f"aborted_transactions from offset 31: {f['aborted']}"
    finally:
        rc.close()
        ru.close()
        discard_producer(t)


# --- 3. consume-transform-produce across kill -9 ---------------------------------------------

@pytest.mark.timeout(180)
def test_consume_transform_produce_100k_across_broker_kill9(txn_broker_proc, topic_name):
    bs = txn_broker_proc.bootstrap
    in_topic, out_topic = f"{topic_name}-in", f"{topic_name}-out"
    create_topic(bs, in_topic, partitions=CTP_PARTITIONS)
    create_topic(bs, out_topic, partitions=CTP_PARTITIONS)
    inputs = produce_inputs(bs, in_topic, CTP_PARTITIONS, CTP_RECORDS)
    group = f"g-{topic_name}"
    app = TransformApp(bs, in_topic, out_topic, CTP_PARTITIONS, group, f"{topic_name}-ctp",
                       txn_records=2500)
    killed = []

    def hook(a: TransformApp, txn: int) -> None:
        # In the middle of the run and of a transaction: half its records handed to
        # librdkafka (some surely in flight), neither its offsets nor its commit sent.
        if not killed and sum(a.committed) >= CTP_RECORDS * 2 // 5:
            killed.append((txn, list(a.committed)))
            txn_broker_proc.kill9()
            txn_broker_proc.start()

    app.run(CTP_RECORDS, timeout=120, hook=hook)
    assert killed, "the broker was never killed"
    check_transformed(bs, in_topic, out_topic, CTP_PARTITIONS, inputs)
    assert committed_offsets(bs, group, in_topic, CTP_PARTITIONS) == [len(inputs[p]) for p in range(CTP_PARTITIONS)]
    print(f"commits {app.commits}, aborts {app.aborts}, producers {app.new_producers}, "
          f"commit retries {app.commit_retries}, stuck calls {app.stuck_calls}, killed at {killed}; events {app.events}")


def test_transactional_offsets_visible_only_on_commit(txn_broker, topic_name):
    """send_offsets_to_transaction: the group's offset is pending (a read_committed
    OffsetFetch, require_stable, does not return it) until the commit; an aborted
    transaction's offset never appears."""
    bs = txn_broker
    create_topic(bs, topic_name, partitions=1)
    group = f"g-{topic_name}"
    c = consumer(bs, **{"group.id": group, "isolation.level": "read_committed"})
    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        meta = c.consumer_group_metadata()
    finally:
        c.close()
    p = txn_producer(bs, f"{topic_name}-offsets")
    p.init_transactions(30)

    def committed_now(timeout: float = 15.0) -> int | str:
        try:
            return committed_offsets(bs, group, topic_name, 1, timeout=timeout)[0]
        except KafkaException as e:  # UNSTABLE_OFFSET_COMMIT retried until the timeout
            return str(e.args[0])

    p.begin_transaction()
    p.produce(topic_name, value=b"out", partition=0)
    p.send_offsets_to_transaction([TopicPartition(topic_name, 0, 42)], meta, 30)
    p.flush(30)
    pending = committed_now(timeout=4.0)
    assert pending != 42, "a pending transactional offset was visible before the commit"
    p.commit_transaction(30)
    assert committed_now() == 42

    p.begin_transaction()
    p.produce(topic_name, value=b"out2", partition=0)
    p.send_offsets_to_transaction([TopicPartition(topic_name, 0, 99)], meta, 30)
    p.abort_transaction(30)
    assert committed_now() == 42, "an aborted transaction's offset became visible"
    discard_producer(p)


# --- 4. zombie fencing ---------------------------------------------------------------------------

def test_zombie_producer_is_fenced_and_writes_nothing(txn_broker, topic_name):
    bs = txn_broker
    create_topic(bs, topic_name, partitions=1)
    tid = f"{topic_name}-x"
    fatal: list[KafkaError] = []
    a = txn_producer(bs, tid, error_cb=lambda e: fatal.append(e) if e.fatal() else None)
    a.init_transactions(30)
    a.begin_transaction()
    dl = DeliveryLog()
    for i in range(10):
        a.produce(topic_name, value=b"zombie-%02d" % i, partition=0, on_delivery=dl)
    flush(a, 30)
    assert not dl.errors and len(dl.acked) == 10

    b = txn_producer(bs, tid)
    b.init_transactions(30)  # bumps the epoch and aborts A's open transaction

    raised: list = []
    try:
        # confluent-kafka raises the fatal error from flush() itself (a KafkaException, or a
        # SystemError whose cause it is when a callback was running): either counts.
        a.produce(topic_name, value=b"zombie-late", partition=0)
        a.flush(15)
    except Exception as e:  # noqa: BLE001
        raised.append(kafka_error_of(e))
    try:
        a.commit_transaction(15)
        committed_by_zombie = True
    except Exception as e:  # noqa: BLE001
        committed_by_zombie = False
        raised.append(kafka_error_of(e))
    assert not committed_by_zombie, "the fenced producer's commit succeeded"
    errors = [e for e in raised if e is not None] + fatal
    assert len(raised) == len(errors), f"a non-Kafka error from the zombie: {raised}"
    assert any(fenced_or_fatal(e) for e in errors), f"no fenced/fatal error for the zombie: {errors}"

    b.begin_transaction()
    mine = [b"b-%02d" % i for i in range(5)]
    for v in mine:
        b.produce(topic_name, value=v, partition=0)
    b.commit_transaction(30)
    discard_producer(b)
    discard_producer(a)

    rc = read_values(bs, topic_name, 1, "read_committed", expect=5)
    assert rc[0] == mine, f"read_committed sees {rc[0]}"
    ru = read_values(bs, topic_name, 1, "read_uncommitted", expect=15)
    assert sorted(ru[0]) == sorted([b"zombie-%02d" % i for i in range(10)] + mine), ru[0]


# --- 5. idempotence under cut connections --------------------------------------------------------

@pytest.fixture
def proxied_broker(request, tmp_path):
    """A broker reachable only through a CuttingProxy: it advertises the proxy's port, so
    Metadata sends every client back through it. Yields (broker, proxy)."""
    proxy = CuttingProxy(upstream_port=0, cut_min_bytes=1_000, cut_max_bytes=8_000, cut_every_s=0.7)
    b = Broker(tmp_path / "data", tmp_path / "kavka.log",
               {"advertised.listeners": f"PLAINTEXT://127.0.0.1:{proxy.port}"})
    proxy.upstream = ("127.0.0.1", b.port)
    b.start()
    proxy.start()
    yield b, proxy
    proxy.close()
    conftest._finish_broker(request, b)


@pytest.mark.timeout(180)
def test_idempotent_producer_through_cutting_proxy_writes_no_duplicate(proxied_broker, topic_name):
    _broker, proxy = proxied_broker
    bs = proxy.address  # every client connection goes through the proxy
    parts, n = 2, 20_000
    create_topic(bs, topic_name, partitions=parts)
    acked: dict[int, dict[int, int]] = {p: {} for p in range(parts)}
    errors: list = []
    fatal: list = []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[msg.partition()][int(msg.value())] = msg.offset()

    p = producer(bs, acks="all", **{
        "enable.idempotence": True, "linger.ms": 2, "batch.num.messages": 100,
        "message.timeout.ms": 120000, "socket.timeout.ms": 5000, "request.timeout.ms": 5000,
        "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200, "retry.backoff.ms": 20,
        "error_cb": lambda e: fatal.append(e) if e.fatal() else None,
    })
    proxy.cutting = True
    t0 = time.monotonic()
    for seq in range(n):  # paced over ~8 s so that many connections are cut mid-stream
        while True:
            try:
                p.produce(topic_name, value=b"%08d" % seq, partition=seq % parts, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        if seq % 50 == 49:
            p.poll(0)
            pause = t0 + 8.0 * (seq + 1) / n - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    remaining = p.flush(120)
    proxy.cutting = False
    cuts = proxy.cuts
    assert not fatal, f"idempotent producer fatal error: {fatal}"
    assert remaining == 0, f"{remaining} records without a delivery report"
    assert not errors, f"delivery errors: {errors[:5]}"
    assert cuts >= 5, f"the proxy cut only {cuts} connections: the test proved nothing"
    assert sum(len(v) for v in acked.values()) == n

    got = read_values(bs, topic_name, parts, "read_uncommitted", expect=n, settle=1.0)
    for part in range(parts):
        seqs = [int(v) for v in got[part]]
        assert len(seqs) == len(set(seqs)), f"partition {part}: {len(seqs) - len(set(seqs))} duplicates"
        assert seqs == sorted(seqs), f"partition {part}: out of order"
        assert seqs == sorted(acked[part]), f"partition {part}: log {len(seqs)} != acked {len(acked[part])}"
        offsets = [acked[part][s] for s in seqs]
        assert offsets == list(range(len(seqs))), f"partition {part}: acknowledged offsets are not the log's"
    print(f"{cuts} connections cut, {proxy.connections} opened")


@pytest.mark.timeout(180)
def test_kafka_python_idempotent_producer_through_cutting_proxy(proxied_broker, topic_name):
    """kafka-python's idempotent producer (enable_idempotence, acks=all) under the same cuts:
    every acknowledged record exactly once, in order."""
    from kafka import KafkaProducer

    _broker, proxy = proxied_broker
    bs = proxy.address
    n = 5_000
    create_topic(bs, topic_name, partitions=1)
    p = KafkaProducer(bootstrap_servers=bs, enable_idempotence=True, acks="all", linger_ms=2,
                      batch_size=2048, request_timeout_ms=5000, max_block_ms=30000,
                      reconnect_backoff_ms=20, retry_backoff_ms=20, delivery_timeout_ms=120000)
    futures = []
    try:
        proxy.cutting = True
        t0 = time.monotonic()
        for seq in range(n):  # paced over ~5 s
            futures.append(p.send(topic_name, value=b"%08d" % seq, partition=0))
            if seq % 50 == 49:
                pause = t0 + 5.0 * (seq + 1) / n - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        bounded_call(lambda: p.flush(timeout=120), 130, "kafka-python flush")
        proxy.cutting = False
        offsets, errors = {}, []
        for seq, f in enumerate(futures):
            try:
                offsets[seq] = f.get(timeout=1).offset
            except Exception as e:  # noqa: BLE001 - collected for the assertion message
                errors.append((seq, repr(e)))
    finally:
        proxy.cutting = False
        close_kafka_python_producer(p)
    assert not errors, f"{len(errors)} records not acknowledged, first {errors[:3]}"
    assert proxy.cuts >= 3, f"the proxy cut only {proxy.cuts} connections"
    got = read_values(bs, topic_name, 1, "read_uncommitted", expect=n, settle=1.0)[0]
    seqs = [int(v) for v in got]
    assert len(seqs) == len(set(seqs)), f"{len(seqs) - len(set(seqs))} duplicates"
    assert seqs == list(range(n)), f"log holds {len(seqs)} records, not 0..{n - 1} in order"
    assert [offsets[s] for s in range(n)] == list(range(n)), "acknowledged offsets are not the log's"


# --- 6. bad input --------------------------------------------------------------------------------

def test_raw_end_txn_unknown_id_sequence_gap_and_old_epoch(txn_broker, topic_name):
    bs = txn_broker
    create_topic(bs, topic_name, partitions=1)
    tid = f"{topic_name}-raw"
    ts = int(time.time() * 1000)
    wait_coordinator(bs, tid)
    with RawConn(bs) as c:
        err = retry_txn_call("EndTxn", lambda: end_txn(c, f"{tid}-never-initialised", 4242, 0, True))
        assert err == INVALID_PRODUCER_ID_MAPPING, f"EndTxn of an unknown transactional id: {err}"
        err = retry_txn_call("AddPartitionsToTxn", lambda: add_partitions_to_txn(
            c, f"{tid}-never-initialised", 4242, 0, topic_name, [0]).get(0, -1))
        assert err == INVALID_PRODUCER_ID_MAPPING, f"AddPartitionsToTxn of an unknown id: {err}"

        err, pid, e0 = retry_txn_call("InitProducerId", lambda: init_producer_id(c, tid))
        assert err == NONE and pid >= 0 and e0 >= 0, (err, pid, e0)
        assert retry_txn_call("AddPartitionsToTxn", lambda: add_partitions_to_txn(
            c, tid, pid, e0, topic_name, [0]).get(0, -1)) == NONE
        acked = []
        err, base = produce_txn(c, tid, topic_name, 0, txn_record_batch([b"a", b"b"], ts, pid, e0, 0))
        assert (err, base) == (NONE, 0)
        acked += [b"a", b"b"]
        err, base = produce_txn(c, tid, topic_name, 0, txn_record_batch([b"c"], ts, pid, e0, 2))
        assert (err, base) == (NONE, 2)
        acked.append(b"c")
        err, _ = produce_txn(c, tid, topic_name, 0, txn_record_batch([b"gap"], ts, pid, e0, 9))
        assert err == OUT_OF_ORDER_SEQUENCE_NUMBER, f"a sequence gap: {err}"
        assert retry_txn_call("EndTxn", lambda: end_txn(c, tid, pid, e0, True)) == NONE

        # A new instance of the transactional id: same producer id, a higher epoch.
        err, pid1, e1 = retry_txn_call("InitProducerId", lambda: init_producer_id(c, tid))
        assert err == NONE and pid1 == pid and e1 > e0, (err, pid1, e1, pid, e0)
        err = add_partitions_to_txn(c, tid, pid, e0, topic_name, [0]).get(0, -1)
        assert err in FENCED_CODES, f"AddPartitionsToTxn with the old epoch: {err}"
        assert retry_txn_call("AddPartitionsToTxn", lambda: add_partitions_to_txn(
            c, tid, pid, e1, topic_name, [0]).get(0, -1)) == NONE
        err, base = produce_txn(c, tid, topic_name, 0, txn_record_batch([b"d"], ts, pid, e1, 0))
        assert err == NONE, f"produce with the new epoch: {err}"
        err, _ = produce_txn(c, tid, topic_name, 0, txn_record_batch([b"zombie"], ts, pid, e0, 3))
        assert err in FENCED_CODES, f"produce with the old epoch: {err}"
        err = end_txn(c, tid, pid, e0, True)
        assert err in FENCED_CODES, f"EndTxn with the old epoch: {err}"
        assert retry_txn_call("EndTxn", lambda: end_txn(c, tid, pid, e1, False)) == NONE

    # Nothing acknowledged is lost; nothing refused is there; the abort hides "d".
    ru = read_values(bs, topic_name, 1, "read_uncommitted", expect=4)
    assert ru[0] == acked + [b"d"], ru[0]
    rc = read_values(bs, topic_name, 1, "read_committed", expect=3)
    assert rc[0] == acked, rc[0]


# --- 7. CLI -----------------------------------------------------------------------------------------

def kavka_cli(*args: str, timeout: float = 30.0) -> str:
    r = subprocess.run([str(KAVKA_BIN), *args], capture_output=True, timeout=timeout)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, f"kavka {' '.join(args)} exited {r.returncode}:\n{r.stderr.decode(errors='replace')}\n{out}"
    return out


def test_cli_transactions_list_describe_and_describe_producers(txn_broker, topic_name):
    bs = txn_broker
    create_topic(bs, topic_name, partitions=1)
    tid = f"{topic_name}-cli"
    ts = int(time.time() * 1000)
    wait_coordinator(bs, tid)
    with RawConn(bs) as c:
        err, pid, epoch = retry_txn_call("InitProducerId", lambda: init_producer_id(c, tid))
        assert err == NONE
        assert retry_txn_call("AddPartitionsToTxn", lambda: add_partitions_to_txn(
            c, tid, pid, epoch, topic_name, [0]).get(0, -1)) == NONE
        assert produce_txn(c, tid, topic_name, 0, txn_record_batch([b"x", b"y"], ts, pid, epoch, 0)) == (NONE, 0)

        listed = kavka_cli("transactions", "--bootstrap-server", bs, "--list")
        assert tid in listed, f"--list does not show {tid}:\n{listed}"
        described = kavka_cli("transactions", "--bootstrap-server", bs, "--describe", "--transactional-id", tid)
        for want in (tid, "Ongoing", str(pid), topic_name):
            assert want in described, f"--describe lacks {want!r}:\n{described}"
        producers = kavka_cli("describe-producers", "--bootstrap-server", bs, "--topic", topic_name,
                              "--partition", "0")
        assert str(pid) in producers, f"describe-producers lacks producer id {pid}:\n{producers}"

        assert retry_txn_call("EndTxn", lambda: end_txn(c, tid, pid, epoch, True)) == NONE

    deadline = time.monotonic() + 20
    described = ""
    while time.monotonic() < deadline:
        described = kavka_cli("transactions", "--bootstrap-server", bs, "--describe", "--transactional-id", tid)
        if "CompleteCommit" in described:
            break
        time.sleep(0.3)
    assert "CompleteCommit" in described and str(pid) in described, f"after EndTxn:\n{described}"
    listed = kavka_cli("transactions", "--bootstrap-server", bs, "--list")
    assert tid in listed and "CompleteCommit" in listed, listed
    producers = kavka_cli("describe-producers", "--bootstrap-server", bs, "--topic", topic_name, "--partition", "0")
    assert str(pid) in producers, producers
    missing = subprocess.run([str(KAVKA_BIN), "transactions", "--bootstrap-server", bs, "--describe",
                              "--transactional-id", f"{tid}-missing"], capture_output=True, timeout=30)
    assert missing.returncode != 0 or b"Ongoing" not in missing.stdout, "an unknown id described as ongoing"


# --- 9. kill -9 mid-transaction, then the transaction timeout ----------------------------------------

def test_broker_kill9_mid_transaction_is_aborted_after_timeout(txn_broker_proc, topic_name):
    bs = txn_broker_proc.bootstrap
    create_topic(bs, topic_name, partitions=2)
    tid = f"{topic_name}-stuck"
    t = txn_producer(bs, tid, **{"transaction.timeout.ms": 5000})
    t.init_transactions(30)
    t.begin_transaction()
    for i in range(10):
        for p in range(2):
            t.produce(topic_name, value=b"stuck-%d-%02d" % (p, i), partition=p)
    flush(t, 30)
    plain = producer(bs, acks="all")
    after = {p: [b"after-%d-%02d" % (p, i) for i in range(10)] for p in range(2)}
    for p in range(2):
        for v in after[p]:
            plain.produce(topic_name, value=v, partition=p)
    flush(plain, 30)
    assert offsets_of(bs, topic_name, 0) == (20, 0)

    txn_broker_proc.kill9()
    txn_broker_proc.start()
    t0 = time.monotonic()
    # Recovery keeps the transaction open (LSO still at its first offset) until the
    # coordinator's timeout aborts it; then both partitions get an abort marker.
    deadline = t0 + 45
    last = None
    while time.monotonic() < deadline:
        try:
            last = [offsets_of(bs, topic_name, p) for p in range(2)]
        except (OSError, AssertionError) as e:
            last = repr(e)
        if last == [(21, 21), (21, 21)]:
            break
        time.sleep(0.5)
    assert last == [(21, 21), (21, 21)], (
        f"(HW, LSO) per partition {time.monotonic() - t0:.1f}s after the restart: {last}; expected "
        f"an abort marker after the stuck transaction (transaction.timeout.ms=5000)")
    rc = read_values(bs, topic_name, 2, "read_committed", expect=20)
    assert rc == after, f"read_committed after the timeout abort: {rc}"

    # The old producer cannot commit what was aborted.
    try:
        bounded_call(lambda: t.commit_transaction(15), 30, "commit_transaction of the timed-out producer")
        zombie_committed = True
    except KafkaException:
        zombie_committed = False
    assert not zombie_committed, "the timed-out transaction was committed after its abort"
    rc = read_values(bs, topic_name, 2, "read_committed", expect=20, settle=1.0)
    assert rc == after, f"read_committed after the old producer's commit attempt: {rc}"

    # The transactional id lives on: a new producer of it commits.
    t2 = txn_producer(bs, tid)
    t2.init_transactions(30)
    t2.begin_transaction()
    t2.produce(topic_name, value=b"fresh", partition=0)
    t2.commit_transaction(30)
    discard_producer(t2)
    rc = read_values(bs, topic_name, 2, "read_committed", expect=21)
    assert rc[0] == after[0] + [b"fresh"], rc[0]
    discard_producer(t)


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "abort"])
def test_broker_kill9_right_after_end_txn_completes_it(txn_broker_proc, topic_name, commit):
    """EndTxn answered (PrepareCommit/PrepareAbort logged), then kill -9 before the markers
    are surely written: after recovery the coordinator finishes what it promised. Committed:
    read_committed sees every record; aborted: none; either way the LSO reaches the HW."""
    bs = txn_broker_proc.bootstrap
    create_topic(bs, topic_name, partitions=2)
    tid = f"{topic_name}-end"
    ts = int(time.time() * 1000)
    wait_coordinator(bs, tid)
    values = {p: [b"v-%d-%02d" % (p, i) for i in range(10)] for p in range(2)}
    with RawConn(bs) as c:
        err, pid, epoch = retry_txn_call("InitProducerId", lambda: init_producer_id(c, tid))
        assert err == NONE
        errs = retry_txn_call("AddPartitionsToTxn", lambda: add_partitions_to_txn(c, tid, pid, epoch, topic_name, [0, 1]))
        assert errs == {0: NONE, 1: NONE}, errs
        for p in range(2):
            assert produce_txn(c, tid, topic_name, p, txn_record_batch(values[p], ts, pid, epoch, 0))[0] == NONE
        assert retry_txn_call("EndTxn", lambda: end_txn(c, tid, pid, epoch, commit)) == NONE
        txn_broker_proc.kill9()
    txn_broker_proc.start()

    # 10 records and the marker, nothing open. A marker written before the kill may be
    # written again by the recovered coordinator (Kafka does the same: a second marker of a
    # completed transaction is harmless), so the HW may be one more.
    def settled(got) -> bool:
        return isinstance(got, list) and all(hw == lso and hw in (11, 12) for hw, lso in got)
    deadline = time.monotonic() + 30
    got = None
    while time.monotonic() < deadline:
        try:
            got = [offsets_of(bs, topic_name, p) for p in range(2)]
        except (OSError, AssertionError) as e:
            got = repr(e)
        if settled(got):
            break
        time.sleep(0.3)
    assert settled(got), f"(HW, LSO) per partition after the restart: {got}, expected LSO = HW = 11 (or 12)"
    rc = read_values(bs, topic_name, 2, "read_committed", expect=20 if commit else None, settle=1.0)
    assert rc == (values if commit else {0: [], 1: []}), f"read_committed after the restart: {rc}"
    state = "CompleteCommit" if commit else "CompleteAbort"
    deadline = time.monotonic() + 20
    described = ""
    while time.monotonic() < deadline:
        described = kavka_cli("transactions", "--bootstrap-server", bs, "--describe", "--transactional-id", tid)
        if state in described:
            break
        time.sleep(0.3)
    assert state in described, f"after the restart:\n{described}"


# --- kafka-python ---------------------------------------------------------------------------------

def bounded(fn, timeout: float = 30.0):
    """kafka-python's commit/abort wait without a timeout: run them in a thread, bounded."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = e
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise AssertionError(f"{getattr(fn, '__name__', fn)} did not return within {timeout}s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


def test_kafka_python_transactions_commit_abort_and_send_offsets(txn_broker, topic_name):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as KTP

    bs = txn_broker
    create_topic(bs, topic_name, partitions=1)
    in_topic = f"{topic_name}-in"
    create_topic(bs, in_topic, partitions=1)
    p = KafkaProducer(bootstrap_servers=bs, transactional_id=f"{topic_name}-kp", enable_idempotence=True,
                      max_block_ms=30000, request_timeout_ms=15000)
    try:
        bounded(p.init_transactions)
        bounded(p.begin_transaction)
        for i in range(10):
            p.send(topic_name, value=b"kept-%02d" % i, partition=0)
        bounded(p.commit_transaction)
        bounded(p.begin_transaction)
        for i in range(10):
            p.send(topic_name, value=b"dropped-%02d" % i, partition=0)
        bounded(p.flush)
        bounded(p.abort_transaction)
        # send_offsets_to_transaction: the group's offset becomes visible with the commit.
        group = f"g-{topic_name}"
        bounded(p.begin_transaction)
        p.send(topic_name, value=b"with-offsets", partition=0)
        bounded(lambda: p.send_offsets_to_transaction({KTP(in_topic, 0): OffsetAndMetadata(7, "", -1)}, group))
        bounded(p.commit_transaction)
    finally:
        close_kafka_python_producer(p)

    kc = KafkaConsumer(bootstrap_servers=bs, isolation_level="read_committed", enable_auto_commit=False,
                       consumer_timeout_ms=3000, request_timeout_ms=15000)
    try:
        kc.assign([KTP(topic_name, 0)])
        kc.seek(KTP(topic_name, 0), 0)
        got = [m.value for m in kc]
    finally:
        kc.close()
    assert got == [b"kept-%02d" % i for i in range(10)] + [b"with-offsets"], got
    # confluent-kafka agrees, and read_uncommitted sees the aborted ones too.
    rc = read_values(bs, topic_name, 1, "read_committed", expect=11)
    assert rc[0] == got
    ru = read_values(bs, topic_name, 1, "read_uncommitted", expect=21)
    assert len(ru[0]) == 21
    assert committed_offsets(bs, group, in_topic, 1) == [7]
