"""Metadata as seen by kcat, confluent-kafka and kafka-python, and auto-created topics."""

import json

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient

from helpers import (
    DeliveryLog,
    admin,
    close_kafka_python_producer,
    create_topic,
    flush,
    kcat,
    producer,
    wait_for_topic,
)


def test_kcat_lists_broker_and_topic(broker, topic_name):
    create_topic(broker, topic_name, partitions=3)
    out = kcat("-b", broker, "-L", "-J", "-m", "10").stdout
    md = json.loads(out)
    host, port = broker.split(":")
    assert [(b["name"]) for b in md["brokers"]] == [f"{host}:{port}"], md["brokers"]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic_name in topics, sorted(topics)
    t = topics[topic_name]
    assert "error" not in t or not t["error"], t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    broker_id = md["brokers"][0]["id"]
    for p in t["partitions"]:
        assert p["leader"] == broker_id
        assert [r["id"] for r in p["replicas"]] == [broker_id]
        assert [r["id"] for r in p["isrs"]] == [broker_id]


def test_kcat_metadata_for_one_topic(broker, topic_name):
    create_topic(broker, topic_name, partitions=2)
    md = json.loads(kcat("-b", broker, "-L", "-J", "-t", topic_name, "-m", "10").stdout)
    assert [t["topic"] for t in md["topics"]] == [topic_name]
    assert len(md["topics"][0]["partitions"]) == 2


def test_confluent_list_topics(broker, topic_name):
    create_topic(broker, topic_name, partitions=4)
    md = admin(broker).list_topics(timeout=10)
    assert len(md.brokers) == 1
    (b,) = md.brokers.values()
    assert f"{b.host}:{b.port}" == broker
    assert md.controller_id == b.id
    assert md.cluster_id, "cluster id must be set (Metadata v2+)"
    t = md.topics[topic_name]
    assert t.error is None
    assert sorted(t.partitions) == [0, 1, 2, 3]
    for p in t.partitions.values():
        assert p.error is None
        assert p.leader == b.id
        assert p.replicas == [b.id] and p.isrs == [b.id]


def test_metadata_without_auto_create_reports_unknown_topic(broker, topic_name):
    a = admin(broker, **{"allow.auto.create.topics": False})
    t = a.list_topics(topic=topic_name, timeout=10).topics.get(topic_name)
    assert t is not None and t.error is not None, t
    assert "UNKNOWN_TOPIC" in t.error.name(), t.error
    assert topic_name not in a.list_topics(timeout=10).topics


def test_auto_create_on_metadata(broker, topic_name):
    a = admin(broker, **{"allow.auto.create.topics": True})
    a.list_topics(topic=topic_name, timeout=10)
    # Kafka may answer the first request with LEADER_NOT_AVAILABLE while it creates the topic.
    wait_for_topic(broker, topic_name, 1)


def test_kafka_python_metadata(broker, topic_name):
    create_topic(broker, topic_name, partitions=3)
    a = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=10000)
    try:
        assert topic_name in a.list_topics()
        (t,) = a.describe_topics([topic_name])
        assert t["name"] == topic_name
        assert t["error_code"] == 0
        assert sorted(p["partition_index"] for p in t["partitions"]) == [0, 1, 2]
        cluster = a.describe_cluster()
        assert len(cluster["brokers"]) == 1, cluster
    finally:
        a.close()
    c = KafkaConsumer(bootstrap_servers=broker, request_timeout_ms=11000)
    try:
        assert c.partitions_for_topic(topic_name) == {0, 1, 2}
        assert topic_name in c.topics()
    finally:
        c.close()


def test_auto_create_on_produce(broker, topic_name):
    dl = DeliveryLog()
    p = producer(broker, acks="all")
    for i in range(10):
        p.produce(topic_name, key=b"k", value=b"v%d" % i, on_delivery=dl)
    flush(p)
    assert not dl.errors, dl.errors
    assert [o for (_, o, _, _) in dl.acked] == list(range(10))
    t = admin(broker).list_topics(timeout=10).topics[topic_name]
    assert t.error is None and sorted(t.partitions) == [0], "num.partitions defaults to 1"


@pytest.mark.broker_config(**{"num.partitions": "3"})
def test_auto_create_uses_num_partitions(broker, topic_name):
    # Idempotence (kafka-python's default) is covered by test_kafka_python_default_producer.
    p = KafkaProducer(bootstrap_servers=broker, request_timeout_ms=10000, enable_idempotence=False)
    try:
        # KafkaProducer's metadata request allows auto-creation.
        p.send(topic_name, b"x").get(timeout=30)
        assert p.partitions_for(topic_name) == {0, 1, 2}
    finally:
        close_kafka_python_producer(p)
    md = json.loads(kcat("-b", broker, "-L", "-J", "-t", topic_name, "-m", "10").stdout)
    assert len(md["topics"][0]["partitions"]) == 3


@pytest.mark.broker_config(**{"auto.create.topics.enable": "false"})
def test_auto_create_disabled(broker, topic_name):
    dl = DeliveryLog()
    p = producer(broker, **{"message.timeout.ms": 4000})
    p.produce(topic_name, value=b"nope", on_delivery=dl)
    p.flush(15)
    assert not dl.acked
    assert len(dl.errors) == 1, dl.errors
    assert topic_name not in admin(broker).list_topics(timeout=10).topics
