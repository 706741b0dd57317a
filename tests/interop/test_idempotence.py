"""The idempotent producer: InitProducerId, and Produce deduplicating retried batches by
producer id, epoch and sequence (Kafka's ProducerStateManager semantics)."""

import time

from helpers import (
    DeliveryLog,
    RawConn,
    consume_partition,
    create_topic,
    flush,
    init_producer_id_v0_body,
    parse_init_producer_id_v0,
    parse_produce_v3,
    produce_v3_body,
    producer,
    record_batch,
)

INIT_PRODUCER_ID = 22
PRODUCE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
INVALID_REQUEST = 42
# Current time: an old timestamp would let retention delete the segment (and with it the
# producer state, as in Kafka) at the restart.
TS = int(time.time() * 1000)


def init_producer_id(c: RawConn, transactional_id: str | None = None) -> tuple[int, int, int]:
    cid = c.send_request(INIT_PRODUCER_ID, 0, init_producer_id_v0_body(transactional_id))
    got_cid, body = c.recv_response()
    assert got_cid == cid
    return parse_init_producer_id_v0(body)


def produce(c: RawConn, topic: str, batch: bytes) -> tuple[int, int]:
    cid = c.send_request(PRODUCE, 3, produce_v3_body(topic, 0, batch))
    got_cid, body = c.recv_response()
    assert got_cid == cid
    [(_, _, err, base)] = parse_produce_v3(body)
    return err, base


def test_confluent_idempotent_producer_no_duplicates_in_order(broker, topic_name):
    create_topic(broker, topic_name, partitions=1)
    n = 50_000
    dl = DeliveryLog()
    p = producer(broker, **{"enable.idempotence": True, "acks": "all"})
    for i in range(n):
        p.produce(topic_name, value=b"v-%d" % i, partition=0, on_delivery=dl)
        if i % 10_000 == 0:
            p.poll(0)
    flush(p, 120)
    assert not dl.errors, dl.errors[:5]
    assert sorted(o for (_, o, _, _) in dl.acked) == list(range(n))
    values = [m.value() for m in consume_partition(broker, topic_name, 0, 0, n)]
    assert values == [b"v-%d" % i for i in range(n)]


def test_retried_batch_is_acked_with_original_offset_and_stored_once(broker_proc, topic_name):
    broker = broker_proc.bootstrap
    create_topic(broker, topic_name, partitions=1)
    with RawConn(broker) as c:
        err, pid, epoch = init_producer_id(c)
        assert (err, epoch) == (0, 0) and pid >= 0
        err2, pid2, _ = init_producer_id(c)
        assert err2 == 0 and pid2 != pid, "every InitProducerId gets a fresh id"
        # Something from another producer first, so the original offset is not 0.
        assert produce(c, topic_name, record_batch([b"other"], TS))[0] == 0
        first = record_batch([b"a", b"b"], TS, producer_id=pid, producer_epoch=0, base_sequence=0)
        err, base = produce(c, topic_name, first)
        assert (err, base) == (0, 1)
        assert produce(c, topic_name, first) == (0, 1), "the retry carries the first ack's offset"
        nxt = record_batch([b"c"], TS, producer_id=pid, producer_epoch=0, base_sequence=2)
        assert produce(c, topic_name, nxt) == (0, 3)
        gap = record_batch([b"x"], TS, producer_id=pid, producer_epoch=0, base_sequence=9)
        assert produce(c, topic_name, gap)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
    values = [m.value() for m in consume_partition(broker, topic_name, 0, 0, 4)]
    assert values == [b"other", b"a", b"b", b"c"]

    # The producer state survives a restart: the retry is still recognised.
    broker_proc.restart()
    broker = broker_proc.bootstrap
    with RawConn(broker) as c:
        assert produce(c, topic_name, nxt) == (0, 3)
        # A bumped epoch starts at sequence 0 and fences the old one.
        bumped = record_batch([b"d"], TS, producer_id=pid, producer_epoch=1, base_sequence=0)
        assert produce(c, topic_name, bumped) == (0, 4)
        zombie = record_batch([b"z"], TS, producer_id=pid, producer_epoch=0, base_sequence=3)
        assert produce(c, topic_name, zombie)[0] == INVALID_PRODUCER_EPOCH
        # A new id is never one handed out before the restart.
        err, pid3, _ = init_producer_id(c)
        assert err == 0 and pid3 > max(pid, pid2)
        # A transactional id is the transaction coordinator's (test_transactions.py): without
        # a FindCoordinator first it may still be loading (retriable), never INVALID_REQUEST.
        assert init_producer_id(c, "txn-1")[0] in (0, 14, 15, 16)
    values = [m.value() for m in consume_partition(broker, topic_name, 0, 0, 5)]
    assert values == [b"other", b"a", b"b", b"c", b"d"]
