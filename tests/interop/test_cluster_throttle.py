"""`kavka reassign-partitions --throttle` (KIP-73) on a 3-node cluster, as real processes
(cluster.py): --execute sets the throttled replicas of the moving partition (leader side: its
current replica, follower side: the one being added) and the rates, and --verify removes the
topic's throttle once its reassignment is complete, as Kafka's tool does.

Every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from cluster import KAVKA_BIN, Cluster, ClusterError

CLI_TIMEOUT_S = 60
LEADER_REPLICAS = "leader.replication.throttled.replicas"
FOLLOWER_REPLICAS = "follower.replication.throttled.replicas"


@pytest.fixture
def cluster(request, tmp_path):
    c = Cluster(tmp_path / "cluster", 3, {}).start()
    yield c
    died = c.unexpected_exits()
    c.stop_all()
    rep = getattr(request.node, "rep_call", None)
    if died:
        pytest.fail("node(s) died during the test: "
                    + ", ".join(f"{n.node_id} (exit {n.proc.returncode})" for n in died)
                    + "\n" + c.log_tails(80))
    if rep is not None and rep.failed:
        print(c.log_tails(80))


def kavka(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(KAVKA_BIN), *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    if r.returncode != 0:
        raise ClusterError(f"kavka {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def throttled_replicas(c: Cluster, topic: str) -> tuple[str, str]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = c.admin().describe_configs([res])[res].result(timeout=10)
    return (entries[LEADER_REPLICAS].value or "", entries[FOLLOWER_REPLICAS].value or "")


def test_throttle_set_by_execute_and_removed_by_verify(cluster, tmp_path):
    c = cluster
    topic = "throttled"
    c.create_topic(topic, partitions=1, replication_factor=1, config={"min.insync.replicas": "1"})
    [source] = c.replicas_of(topic)
    target = next(i for i in sorted(c.nodes) if i != source)
    assert throttled_replicas(c, topic) == ("", "")

    plan = tmp_path / "reassign.json"
    plan.write_text(json.dumps(
        {"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": [target]}]}))
    out = kavka("reassign-partitions", "--bootstrap-server", c.bootstrap,
                "--reassignment-json-file", str(plan), "--execute",
                "--throttle", "50000000").stdout
    assert "The inter-broker throttle limit was set to 50000000 B/s" in out, out
    assert f"Successfully started partition reassignments for: {topic}-0" in out, out
    # Set before the reassignment starts, so already there whether or not it completed.
    assert throttled_replicas(c, topic) == (f"0:{source}", f"0:{target}")

    def completed():
        r = kavka("reassign-partitions", "--bootstrap-server", c.bootstrap,
                  "--reassignment-json-file", str(plan), "--verify")
        return f"Reassignment of partition {topic}-0 is completed." in r.stdout, r.stdout
    c.wait_for(f"the reassignment of {topic}-0 to [{target}]", lambda: completed()[0],
               timeout=60, interval=0.5)
    # The verify that saw it complete cleared the throttle; another one says so again.
    done, out = completed()
    assert done, out
    assert f"Clearing topic-level throttles on topics {topic}" in out, out
    assert "Clearing broker-level throttles on brokers" in out, out
    assert throttled_replicas(c, topic) == ("", "")
    assert c.replicas_of(topic) == [target]
