#!/usr/bin/env python3
"""Cluster benchmark: what replication costs, and how long a failover takes.

1. Produce throughput (msgs/s, MB/s) and end-to-end latency (p50/p99/p99.9) with acks=all, by
   the librdkafka load generator (bench/loadgen), against a single-node broker (RF=1, plain
   `kavka server` mode) and then against a 3-node cluster (RF=3, min.insync.replicas=2), in
   the same run on the same machine. CPU is summed over every kavka process.
2. Failover: in the 3-node cluster, kill -9 the leader of a 1-partition RF=3 topic while an
   idempotent acks=all producer (confluent-kafka) sends one record every --probe-interval-ms;
   the failover time is from the kill to the first acknowledgement of a record sent after the
   kill (only a new leader can have acknowledged it). The killed node is restarted and the ISR
   is full again before the next kill. Median and max over --kills kills.

    .venv/bin/python bench/cluster.py                  # ~5 min on 2 cores
    .venv/bin/python bench/cluster.py --kills 5 --produce-seconds 5 --e2e-seconds 5
    .venv/bin/python bench/cluster.py --session-timeout-ms 9000   # Kafka's default

Needs target/release/kavka (or KAVKA_BIN) and bench/target/release/kavka-loadgen (built by
bench/run.sh, or `CARGO_TARGET_DIR=bench/target cargo build --release --manifest-path
bench/loadgen/Cargo.toml`; KAVKA_LOADGEN overrides). Every wait is bounded; all traffic is on
127.0.0.1. Results are appended as JSON lines to bench/target/cluster-results-<time>.jsonl.
Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "interop"))

from confluent_kafka import Producer  # noqa: E402

from cluster import LOGGER, Cluster, ClusterError  # noqa: E402

LOADGEN = Path(os.environ.get("KAVKA_LOADGEN", ROOT / "bench" / "target" / "release" / "kavka-loadgen"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def loadgen(cluster: Cluster, args: list[str], timeout: float) -> dict:
    """One loadgen measurement; its JSON result plus the CPU of every kavka process."""
    pids = [n.pid for n in cluster.responsive()]
    before, t0 = cpu_seconds(pids), time.monotonic()
    r = subprocess.run([str(LOADGEN), "--bootstrap-server", cluster.bootstrap, *args],
                       capture_output=True, timeout=timeout)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise ClusterError(f"loadgen {' '.join(args)} failed: {r.stderr.decode(errors='replace')[-2000:]}")
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    out["kavka_cores_all_nodes"] = (cpu_seconds(pids) - before) / wall
    return out


def data_path(cluster: Cluster, label: str, a) -> dict:
    topic_p, topic_e = f"produce-{label}", f"e2e-{label}"
    rf = min(3, cluster.n)
    cluster.create_topic(topic_p, partitions=a.partitions, replication_factor=rf)
    cluster.create_topic(topic_e, partitions=1, replication_factor=rf)
    prod = loadgen(cluster, ["produce", "--topic", topic_p, "--acks", "all", "--size", str(a.record_bytes),
                             "--seconds", str(a.produce_seconds), "--count", str(a.produce_count)],
                   timeout=a.produce_seconds + 120)
    e2e = loadgen(cluster, ["e2e", "--topic", topic_e, "--acks", "all", "--rate", str(a.e2e_rate),
                            "--seconds", str(a.e2e_seconds), "--size", str(a.record_bytes)],
                  timeout=a.e2e_seconds + 120)
    return {"label": label, "brokers": cluster.n, "rf": rf, "produce": prod, "e2e": e2e}


class Prober:
    """Sends one small record every `interval` s (idempotent, acks=all) and keeps
    (send time, ack time) of every acknowledgement."""

    def __init__(self, bootstrap: str, topic: str, interval: float):
        self.topic = topic
        self.interval = interval
        self.acks: list[tuple[float, float]] = []
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                           "linger.ms": 0, "message.timeout.ms": 120000, "socket.timeout.ms": 5000,
                           "logger": LOGGER})
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        end = time.monotonic() + 3600  # bounded even if stop() is never called
        while not self._stop.is_set() and time.monotonic() < end:
            sent = time.monotonic()
            try:
                self.p.produce(self.topic, value=b"x", partition=0,
                               on_delivery=lambda err, msg, sent=sent: self._report(err, sent))
            except BufferError:
                pass
            self.p.poll(0)
            self._stop.wait(self.interval)

    def _report(self, err, sent: float) -> None:
        with self._lock:
            if err is None:
                self.acks.append((sent, time.monotonic()))
            else:
                self.errors += 1

    def first_ack_sent_after(self, t: float) -> float | None:
        with self._lock:
            acks = [acked for sent, acked in self.acks if sent >= t]
        return min(acks) if acks else None

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        self.p.flush(30)


def failover(cluster: Cluster, a) -> dict:
    topic = "failover"
    cluster.create_topic(topic, partitions=1, replication_factor=3)
    prober = Prober(cluster.bootstrap, topic, a.probe_interval_ms / 1000)
    prober.thread.start()
    kills = []
    try:
        for i in range(a.kills):
            cluster.wait_for_full_isr(timeout=60)
            leader = cluster.leader_of(topic)
            controller = cluster.controller_id()
            if leader not in cluster.nodes:
                raise ClusterError(f"no leader for {topic} before kill {i + 1}")
            killed_at = time.monotonic()
            cluster.kill(leader)
            acked_at = cluster.wait_for(f"an acknowledgement after kill {i + 1}",
                                        lambda: prober.first_ack_sent_after(killed_at), timeout=90,
                                        interval=0.01)
            new_leader = cluster.wait_for_leader(topic, not_in=(leader,), timeout=30)
            ms = (acked_at - killed_at) * 1000
            kills.append({"kill": i + 1, "killed": leader, "was_controller": leader == controller,
                          "new_leader": new_leader, "failover_ms": ms})
            print(f"  kill {i + 1}/{a.kills}: node {leader}{' (controller)' if leader == controller else ''}"
                  f" -> {new_leader}: {ms:.0f} ms", flush=True)
            cluster.start_node(leader, timeout=60)
    finally:
        prober.stop()
    times = [k["failover_ms"] for k in kills]
    return {"kills": kills, "failover_ms_median": statistics.median(times) if times else None,
            "failover_ms_max": max(times) if times else None, "probe_errors": prober.errors}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the produce topic")
    ap.add_argument("--record-bytes", type=int, default=100)
    ap.add_argument("--produce-seconds", type=float, default=10.0)
    ap.add_argument("--produce-count", type=int, default=5_000_000)
    ap.add_argument("--e2e-rate", type=int, default=5000)
    ap.add_argument("--e2e-seconds", type=float, default=10.0)
    ap.add_argument("--probe-interval-ms", type=float, default=5.0)
    ap.add_argument("--session-timeout-ms", type=int, default=3000,
                    help="broker.session.timeout.ms of the cluster (Kafka's default is 9000)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory and node logs")
    a = ap.parse_args()
    if not LOADGEN.is_file():
        print(f"{LOADGEN} not found: run bench/run.sh once, or build bench/loadgen (see --help)", file=sys.stderr)
        return 2
    (ROOT / "bench" / "target").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cluster.", dir=ROOT / "bench" / "target"))
    results_path = ROOT / "bench" / "target" / f"cluster-results-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"
    results = []
    ok = False
    try:
        print("== 1 broker, RF=1 (single-node mode)", flush=True)
        single = Cluster(work / "single", n=1, quorum=False)
        try:
            single.start()
            results.append(data_path(single, "1broker", a))
        finally:
            single.stop_all()
        print("== 3 brokers, RF=3, min.insync.replicas=2", flush=True)
        props = {"broker.session.timeout.ms": a.session_timeout_ms}
        trio = Cluster(work / "trio", n=3, extra_props=props)
        try:
            trio.start()
            results.append(data_path(trio, "3brokers", a))
            print(f"== failover: {a.kills} kills of the leader (broker.session.timeout.ms={a.session_timeout_ms})",
                  flush=True)
            fo = failover(trio, a)
            fo["session_timeout_ms"] = a.session_timeout_ms
            results.append({"label": "failover", **fo})
        except Exception:
            print(trio.log_tails(30), file=sys.stderr)
            raise
        finally:
            trio.stop_all()
        ok = True
    finally:
        with open(results_path, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
        if a.keep or not ok:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    print(f"\nraw results: {results_path}")
    return 0


def report(results: list[dict]) -> None:
    print()
    print(f"{'setup':<22} {'produce msgs/s':>15} {'MB/s':>7} {'kavka cores':>12} "
          f"{'e2e p50 ms':>11} {'p99 ms':>8} {'p99.9 ms':>9}")
    for r in results:
        if "produce" not in r:
            continue
        p, e = r["produce"], r["e2e"]
        setup = f"{r['brokers']} broker{'s' if r['brokers'] > 1 else ''}, RF={r['rf']}"
        print(f"{setup:<22} {p['msgs_per_s']:>15,.0f} {p['mb_per_s']:>7.1f} {p['kavka_cores_all_nodes']:>12.2f} "
              f"{e['p50_ms']:>11.2f} {e['p99_ms']:>8.2f} {e['p999_ms']:>9.2f}")
    for r in results:
        if r.get("label") == "failover" and r["kills"]:
            print(f"\nfailover over {len(r['kills'])} kills (broker.session.timeout.ms={r['session_timeout_ms']}): "
                  f"median {r['failover_ms_median']:.0f} ms, max {r['failover_ms_max']:.0f} ms; "
                  f"{sum(k['was_controller'] for k in r['kills'])} of the killed leaders were the active controller")


if __name__ == "__main__":
    sys.exit(main())
