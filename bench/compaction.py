#!/usr/bin/env python3
"""Log cleaner throughput: MB/s of segments read and rewritten by one cleaning round.

Starts target/release/kavka on 127.0.0.1 with a scratch data directory, creates a compacted
topic (1 partition, 8 MiB segments, min.cleanable.dirty.ratio=0.01), produces RECORDS records
of VALUE_BYTES over KEYS keys with confluent-kafka (librdkafka), then waits for the broker's
"log cleaned" lines and prints what each round reports (bytes read and written, time, MB/s).

    .venv/bin/python bench/compaction.py [--records 400000] [--keys 10000] [--value-bytes 100]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
KAVKA_BIN = Path(os.environ.get("KAVKA_BIN", ROOT / "target" / "release" / "kavka"))
LINE = re.compile(r"log cleaned in ([0-9.]+) ms \(([0-9.]+) MB/s read\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--compression", default="none")
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="kavka-compaction-bench-"))
    port = free_port()
    log_path = scratch / "kavka.log"
    cmd = [str(KAVKA_BIN), "server",
           "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
           "--override", f"log.dirs={scratch / 'data'}",
           "--override", "log.cleaner.backoff.ms=200"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "NO_COLOR": "1"})
    try:
        bootstrap = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        a = AdminClient({"bootstrap.servers": bootstrap})
        topic = "compaction-bench"
        a.create_topics([NewTopic(topic, 1, 1, config={
            "cleanup.policy": "compact", "segment.bytes": str(8 << 20),
            "min.cleanable.dirty.ratio": "0.01"})])[topic].result(30)
        time.sleep(0.5)
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                      "compression.type": args.compression, "batch.size": 256 * 1024})
        value = b"v" * args.value_bytes
        started = time.monotonic()
        for i in range(args.records):
            while True:
                try:
                    p.produce(topic, key=f"key-{i % args.keys:08d}".encode(), value=value)
                    break
                except BufferError:
                    p.poll(0.01)
        # Roll the last updates out of the active segment.
        for i in range(20_000):
            try:
                p.produce(topic, key=f"filler-{i}".encode(), value=value)
            except BufferError:
                p.poll(0.05)
        assert p.flush(120) == 0
        print(f"produced {args.records} records in {time.monotonic() - started:.1f} s")
        deadline = time.monotonic() + 120
        rounds = []
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            rounds = [l for l in text.splitlines() if "log cleaned" in l]
            if rounds and time.monotonic() - started > 5:
                time.sleep(2)  # let a round in progress finish
                text = log_path.read_text(errors="replace")
                rounds = [l for l in text.splitlines() if "log cleaned" in l]
                break
            time.sleep(0.5)
        for l in rounds:
            m = LINE.search(l)
            fields = dict(re.findall(r"(\w+)=(\d+)", l))
            if m:
                print(f"round: {float(m.group(1)):8.1f} ms  {float(m.group(2)):7.1f} MB/s read  "
                      f"bytes_read={fields.get('bytes_read')} bytes_written={fields.get('bytes_written')} "
                      f"records_read={fields.get('records_read')} retained={fields.get('records_retained')}")
        if not rounds:
            print("no cleaning round within 120 s; broker log tail:")
            print("\n".join(log_path.read_text(errors="replace").splitlines()[-20:]))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
