"""Topic administration, configs, cluster description, partitions and DeleteRecords through the
admin APIs of confluent-kafka (librdkafka) and kafka-python."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)
from kafka import TopicPartition as KTopicPartition
from kafka.admin import ConfigResource as KConfigResource
from kafka.admin import KafkaAdminClient

from helpers import (
    DeliveryLog,
    admin,
    consume_partition,
    create_topic,
    flush,
    producer,
    wait_all,
    wait_for_topic,
)


def error_code(exc: BaseException) -> int:
    assert isinstance(exc, KafkaException), repr(exc)
    return exc.args[0].code()


DYNAMIC_TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def source(entry) -> int:
    """ConfigEntry.source as an int (the C extension may hand back a plain int or the enum)."""
    return int(getattr(entry.source, "value", entry.source))


def topic_configs(a, name) -> dict:
    res = ConfigResource(ResourceType.TOPIC, name)
    return wait_all(a.describe_configs([res]))[res]


def produce_n(bootstrap, topic, n, partition=0):
    dl = DeliveryLog()
    p = producer(bootstrap, acks="all")
    for i in range(n):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=partition, on_delivery=dl)
    flush(p)
    assert not dl.errors and len(dl.acked) == n, dl.errors
    return dl


# --- confluent-kafka AdminClient -------------------------------------------------------------

def test_confluent_create_describe_delete(broker, topic_name):
    a = admin(broker)
    wait_all(a.create_topics(
        [NewTopic(topic_name, num_partitions=3, replication_factor=1,
                  config={"retention.ms": "3600000", "cleanup.policy": "delete"})],
        operation_timeout=15,
    ))
    wait_for_topic(broker, topic_name, 3)

    desc = wait_all(a.describe_topics(TopicCollection([topic_name])))[topic_name]
    assert desc.name == topic_name
    assert str(desc.topic_id) not in ("", "AAAAAAAAAAAAAAAAAAAAAA"), "topic id must be a real UUID"
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    (node_id,) = a.list_topics(timeout=10).brokers
    for p in desc.partitions:
        assert p.leader.id == node_id
        assert [r.id for r in p.replicas] == [node_id]
        assert [r.id for r in p.isr] == [node_id]

    cfg = topic_configs(a, topic_name)
    assert cfg["retention.ms"].value == "3600000"
    assert source(cfg["retention.ms"]) == DYNAMIC_TOPIC
    assert cfg["cleanup.policy"].value == "delete"
    # Defaults are described too, like Kafka does.
    assert "segment.bytes" in cfg and "max.message.bytes" in cfg, sorted(cfg)
    assert source(cfg["segment.bytes"]) != DYNAMIC_TOPIC

    wait_all(a.delete_topics([topic_name], operation_timeout=15))
    deadline = time.monotonic() + 15
    while topic_name in a.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    assert topic_name not in a.list_topics(timeout=10).topics


def test_confluent_create_errors(broker, topic_name):
    a = admin(broker)
    create_topic(broker, topic_name, partitions=1)

    with pytest.raises(KafkaException) as e:
        wait_all(a.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)]))
    assert error_code(e.value) == KafkaError.TOPIC_ALREADY_EXISTS

    with pytest.raises(KafkaException) as e:
        wait_all(a.create_topics([NewTopic("bad name!", num_partitions=1, replication_factor=1)]))
    assert error_code(e.value) == KafkaError.TOPIC_EXCEPTION

    with pytest.raises(KafkaException) as e:
        wait_all(a.create_topics([NewTopic(topic_name + "-cfg", num_partitions=1, replication_factor=1,
                                           config={"retention.ms": "not-a-number"})]))
    assert error_code(e.value) == KafkaError.INVALID_CONFIG

    with pytest.raises(KafkaException) as e:
        wait_all(a.create_topics([NewTopic(topic_name + "-rf", num_partitions=1, replication_factor=3)]))
    assert error_code(e.value) == KafkaError.INVALID_REPLICATION_FACTOR

    with pytest.raises(KafkaException) as e:
        wait_all(a.delete_topics([topic_name + "-missing"], operation_timeout=10))
    assert error_code(e.value) == KafkaError.UNKNOWN_TOPIC_OR_PART

    listed = a.list_topics(timeout=10).topics
    for suffix in ("-cfg", "-rf"):
        assert topic_name + suffix not in listed


def test_confluent_alter_and_incremental_alter_configs(broker, topic_name):
    a = admin(broker)
    create_topic(broker, topic_name, partitions=1, config={"retention.ms": "1000000"})

    # AlterConfigs replaces the whole set of dynamic configs of the topic.
    res = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"segment.ms": "7200000"})
    wait_all(a.alter_configs([res]))
    cfg = topic_configs(a, topic_name)
    assert cfg["segment.ms"].value == "7200000"
    assert source(cfg["segment.ms"]) == DYNAMIC_TOPIC
    assert source(cfg["retention.ms"]) != DYNAMIC_TOPIC, (
        "AlterConfigs (non-incremental) must reset configs it does not mention"
    )

    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "5000000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    wait_all(a.incremental_alter_configs([res]))
    cfg = topic_configs(a, topic_name)
    assert cfg["retention.ms"].value == "5000000"
    assert source(cfg["retention.ms"]) == DYNAMIC_TOPIC
    assert source(cfg["segment.ms"]) != DYNAMIC_TOPIC

    bad = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "minus-one", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        wait_all(a.incremental_alter_configs([bad]))
    assert error_code(e.value) == KafkaError.INVALID_CONFIG
    assert topic_configs(a, topic_name)["retention.ms"].value == "5000000"


def test_confluent_describe_cluster(broker):
    a = admin(broker)
    result = a.describe_cluster(request_timeout=10).result(timeout=30)
    assert result.cluster_id
    assert len(result.nodes) == 1
    (node,) = result.nodes
    assert f"{node.host}:{node.port}" == broker
    assert result.controller is not None and result.controller.id == node.id
    # Metadata must agree with DescribeCluster.
    md = a.list_topics(timeout=10)
    assert md.cluster_id == result.cluster_id
    assert list(md.brokers) == [node.id]


def test_confluent_create_partitions(broker, topic_name):
    a = admin(broker)
    create_topic(broker, topic_name, partitions=2)
    wait_all(a.create_partitions([NewPartitions(topic_name, 5)], operation_timeout=15))
    wait_for_topic(broker, topic_name, 5)

    # The new partitions take writes and serve reads.
    dl = produce_n(broker, topic_name, 3, partition=4)
    assert [o for (_, o, _, _) in dl.acked] == [0, 1, 2]
    assert [m.value() for m in consume_partition(broker, topic_name, 4, 0, 3)] == [b"v0", b"v1", b"v2"]

    with pytest.raises(KafkaException) as e:
        wait_all(a.create_partitions([NewPartitions(topic_name, 3)]))
    assert error_code(e.value) == KafkaError.INVALID_PARTITIONS


def test_confluent_delete_records(broker, topic_name):
    a = admin(broker)
    create_topic(broker, topic_name, partitions=1)
    produce_n(broker, topic_name, 100)

    tp = TopicPartition(topic_name, 0, 40)
    res = wait_all(a.delete_records([tp]))
    (deleted,) = res.values()
    assert deleted.low_watermark == 40

    tp0 = TopicPartition(topic_name, 0)
    offsets = wait_all(a.list_offsets({tp0: OffsetSpec.earliest()}))
    assert offsets[tp0].offset == 40
    offsets = wait_all(a.list_offsets({tp0: OffsetSpec.latest()}))
    assert offsets[tp0].offset == 100

    # Reading below the log start offset is out of range; with earliest reset it starts at 40.
    msgs = consume_partition(broker, topic_name, 0, 0, 60, **{"auto.offset.reset": "earliest"})
    assert msgs[0].offset() == 40 and msgs[0].value() == b"v40"

    # Deleting up to the high watermark (-1) empties the partition.
    res = wait_all(a.delete_records([TopicPartition(topic_name, 0, -1)]))
    (deleted,) = res.values()
    assert deleted.low_watermark == 100

    # Beyond the high watermark is an error.
    with pytest.raises(KafkaException) as e:
        wait_all(a.delete_records([TopicPartition(topic_name, 0, 1000)]))
    assert error_code(e.value) == KafkaError.OFFSET_OUT_OF_RANGE


# --- kafka-python KafkaAdminClient ----------------------------------------------------------

@pytest.fixture
def kadmin(broker):
    a = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=15000)
    yield a
    a.close()


def test_kafka_python_topic_lifecycle(broker, kadmin, topic_name):
    res = kadmin.create_topics(
        {topic_name: {"num_partitions": 2, "replication_factor": 1, "configs": {"retention.ms": "86400000"}}},
        timeout_ms=15000,
    )
    assert [t["error_code"] for t in res["topics"]] == [0], res
    wait_for_topic(broker, topic_name, 2)
    assert topic_name in kadmin.list_topics()

    cfg = kadmin.describe_configs([KConfigResource("TOPIC", topic_name)], config_filter="all")
    entries = cfg["topic"][topic_name]
    assert entries["retention.ms"]["value"] == "86400000", entries.get("retention.ms")
    assert "cleanup.policy" in entries

    kadmin.alter_configs([KConfigResource("TOPIC", topic_name, {"retention.ms": "1234567"})])
    cfg = kadmin.describe_configs([KConfigResource("TOPIC", topic_name)], config_filter="all")
    assert cfg["topic"][topic_name]["retention.ms"]["value"] == "1234567"

    kadmin.create_partitions({topic_name: 4}, timeout_ms=15000)
    wait_for_topic(broker, topic_name, 4)

    kadmin.delete_topics([topic_name], timeout_ms=15000)
    deadline = time.monotonic() + 15
    while topic_name in kadmin.list_topics() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert topic_name not in kadmin.list_topics()


def test_kafka_python_describe_cluster_and_delete_records(broker, kadmin, topic_name):
    cluster = kadmin.describe_cluster()
    assert cluster["cluster_id"], cluster
    assert len(cluster["brokers"]) == 1, cluster
    assert cluster["controller_id"] == cluster["brokers"][0]["broker_id"], cluster

    create_topic(broker, topic_name, partitions=1)
    produce_n(broker, topic_name, 20)
    tp = KTopicPartition(topic_name, 0)
    res = kadmin.delete_records({tp: 7}, timeout_ms=15000)
    assert res[tp]["low_watermark"] == 7, res
    assert consume_partition(broker, topic_name, 0, 7, 13)[0].value() == b"v7"


def test_internal_topic_cannot_be_deleted_or_produced_to(broker):
    """__consumer_offsets holds every group's state: DeleteTopics answers
    INVALID_TOPIC_EXCEPTION and a client's produce to it is refused, as in Kafka."""
    from confluent_kafka import Consumer

    # The first FindCoordinator creates the topic.
    c = Consumer({"bootstrap.servers": broker, "group.id": "internal-topic-check"})
    try:
        c.committed([TopicPartition("__consumer_offsets", 0)], timeout=10)
    finally:
        c.close()
    wait_for_topic(broker, "__consumer_offsets", 50)
    a = admin(broker)
    fut = a.delete_topics(["__consumer_offsets"])["__consumer_offsets"]
    with pytest.raises(KafkaException) as e:
        fut.result(timeout=10)
    assert error_code(e.value) == KafkaError.TOPIC_EXCEPTION
    wait_for_topic(broker, "__consumer_offsets", 50)

    dl = DeliveryLog()
    p = producer(broker, acks="all", retries=0)
    p.produce("__consumer_offsets", key=b"k", value=b"v", partition=0, on_delivery=dl)
    flush(p)
    assert len(dl.errors) == 1, (dl.acked, dl.errors)
