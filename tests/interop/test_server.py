"""`kavka server` as an operator meets it: properties file, overrides, bad and unknown keys,
clean shutdown on SIGTERM and SIGINT."""

import signal
import subprocess
import time

import pytest

from conftest import KAVKA_BIN, Broker, free_port
from helpers import admin, create_topic, producer, flush, DeliveryLog


def run_server_expecting_exit(args, timeout=15.0):
    proc = subprocess.Popen([str(KAVKA_BIN), "server", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        pytest.fail(f"kavka server {' '.join(args)} kept running; expected it to refuse to start:\n"
                    + out.decode(errors="replace")[-3000:])
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_clean_shutdown_on_signal(broker_proc, topic_name, sig):
    create_topic(broker_proc.bootstrap, topic_name, partitions=1)
    broker_proc.expected_exit = True
    broker_proc.proc.send_signal(sig)
    try:
        code = broker_proc.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kavka did not exit within 10 s of {sig.name}")
    assert code == 0, f"exit code {code} after {sig.name}:\n{broker_proc.log_tail()}"
    # And it comes back with its data.
    broker_proc.start()
    assert topic_name in admin(broker_proc.bootstrap).list_topics(timeout=10).topics


def test_properties_file(tmp_path, topic_name):
    port = free_port()
    data = tmp_path / "data"
    props = tmp_path / "server.properties"
    props.write_text(
        "# Apache Kafka style\n"
        "node.id=7\n"
        f"listeners=PLAINTEXT://127.0.0.1:{port}\n"
        f"log.dirs={data}\n"
        "num.partitions=2\n"
        "auto.create.topics.enable=true\n"
    )
    b = Broker(data, tmp_path / "kavka.log", config_file=props)
    b.port = port
    b.start()
    try:
        assert b.bootstrap == f"127.0.0.1:{port}"
        md = admin(b.bootstrap).list_topics(timeout=10)
        assert list(md.brokers) == [7], "node.id from the properties file"
        dl = DeliveryLog()
        p = producer(b.bootstrap, acks="all")
        p.produce(topic_name, value=b"auto", on_delivery=dl)
        flush(p)
        assert not dl.errors
        t = admin(b.bootstrap).list_topics(timeout=10).topics[topic_name]
        assert len(t.partitions) == 2, "num.partitions from the properties file"
    finally:
        assert b.stop() == 0


def test_override_beats_properties_file(tmp_path):
    port = free_port()
    props = tmp_path / "server.properties"
    props.write_text(f"listeners=PLAINTEXT://127.0.0.1:{free_port()}\nlog.dirs={tmp_path / 'ignored'}\nnode.id=1\n")
    b = Broker(tmp_path / "data", tmp_path / "kavka.log", overrides={"node.id": "3"}, config_file=props)
    b.port = port  # command() puts listeners/log.dirs overrides after the file
    b.start()
    try:
        md = admin(b.bootstrap).list_topics(timeout=10)
        assert list(md.brokers) == [3]
        assert (tmp_path / "data").is_dir() and not (tmp_path / "ignored").exists()
    finally:
        b.stop()


@pytest.mark.parametrize("key,value", [("num.partitions", "many"), ("log.retention.hours", "-x"),
                                       ("listeners", "nonsense"), ("message.max.bytes", "1e99")])
def test_bad_value_refuses_to_start(tmp_path, key, value):
    code, out = run_server_expecting_exit([
        "--override", f"listeners=PLAINTEXT://127.0.0.1:{free_port()}",
        "--override", f"log.dirs={tmp_path / 'data'}",
        "--override", f"{key}={value}",
    ])
    assert code != 0
    assert key in out, f"the error must name {key}:\n{out[-2000:]}"


def test_unknown_key_warns_but_starts(tmp_path):
    b = Broker(tmp_path / "data", tmp_path / "kavka.log", overrides={"no.such.setting": "1"})
    b.start()
    try:
        time.sleep(0.2)
        assert b.alive
        assert "no.such.setting" in b.log_path.read_text(errors="replace"), "unknown keys get a warning"
    finally:
        b.stop()
