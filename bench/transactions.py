#!/usr/bin/env python3
"""Exactly-once benchmark: what idempotence and transactions cost on one broker.

1. Produce throughput with enable.idempotence=false against true, in the same run on the same
   broker: the librdkafka load generator (bench/loadgen) `produce --acks all`, 100-byte
   records, 6 partitions, linger.ms=5, --produce-seconds each, alternating off/on for --rounds
   rounds (msgs/s, MB/s, ack latency p50/p99, broker CPU). Without the load generator the same
   is measured with confluent-kafka from Python (client-bound; the table says so).
2. Transactions per second: confluent-kafka transactional producers, each looping
   begin_transaction, 10 records of 100 bytes (one partition per producer), commit_transaction,
   for --txn-seconds or --txns transactions; with 1 producer and then --txn-producers
   producers in parallel (threads; librdkafka releases the GIL while it waits). Reports
   transactions/s, records/s and the begin-to-commit latency p50/p99 per transaction.

    .venv/bin/python bench/transactions.py                 # ~1.5 min on 2 cores
    .venv/bin/python bench/transactions.py --produce-seconds 5 --txn-seconds 5 --rounds 1

Needs target/release/kavka (or KAVKA_BIN); the load generator is bench/target/release/
kavka-loadgen (built by bench/run.sh; KAVKA_LOADGEN overrides). The broker is a plain
single-node `kavka server` on a free 127.0.0.1 port with a scratch directory under bench/target
(removed afterwards unless --keep or a failure). Every loop is bounded in count and time.
Results are appended as JSON lines to bench/target/transactions-results-<time>.jsonl.
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

from confluent_kafka import KafkaException, Producer  # noqa: E402

from cluster import LOGGER, Cluster, ClusterError  # noqa: E402

LOADGEN = Path(os.environ.get("KAVKA_LOADGEN", ROOT / "bench" / "target" / "release" / "kavka-loadgen"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
RECORD_BYTES = 100
TXN_RECORDS = 10


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


# --- 1. idempotence off / on ---------------------------------------------------------------------

def produce_loadgen(c: Cluster, topic: str, idempotent: bool, a) -> dict:
    pid = c.node(1).pid
    args = [str(LOADGEN), "--bootstrap-server", c.bootstrap, "--broker-pid", str(pid),
            "-X", f"enable.idempotence={'true' if idempotent else 'false'}",
            "produce", "--topic", topic, "--acks", "all", "--count", str(a.produce_count),
            "--seconds", str(a.produce_seconds), "--size", str(RECORD_BYTES), "--linger-ms", "5"]
    r = subprocess.run(args, capture_output=True, timeout=a.produce_seconds + 90)
    if r.returncode != 0:
        raise ClusterError(f"loadgen failed: {r.stderr.decode(errors='replace')[-2000:]}")
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    return {"tool": "loadgen", "idempotence": idempotent, **out}


def produce_python(c: Cluster, topic: str, idempotent: bool, a) -> dict:
    """The same measurement from Python when the load generator is not built (client-bound)."""
    pid = c.node(1).pid
    lat: list[float] = []
    acked = [0]
    failed = [0]
    last = [0.0]

    def report(err, msg, sent=None):
        now = time.monotonic()
        if err is None:
            acked[0] += 1
            last[0] = now
        else:
            failed[0] += 1

    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": idempotent, "queue.buffering.max.messages": 1000000,
                  "logger": LOGGER})
    payload = b"x" * RECORD_BYTES
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    deadline = t0 + a.produce_seconds
    sent = 0
    while sent < a.produce_count and time.monotonic() < deadline:
        stamp = time.monotonic()
        sample = sent % 100 == 0

        def cb(err, msg, stamp=stamp, sample=sample):
            report(err, msg)
            if sample and err is None:
                lat.append((time.monotonic() - stamp) * 1000)
        try:
            p.produce(topic, value=payload, partition=sent % a.partitions, on_delivery=cb)
            sent += 1
        except BufferError:
            p.poll(0.001)
        if sent % 1000 == 0:
            p.poll(0)
    p.flush(60)
    secs = max(1e-9, (last[0] or time.monotonic()) - t0)
    cores = (cpu_seconds(pid) - cpu0) / max(1e-9, time.monotonic() - t0)
    lat.sort()
    return {"tool": "confluent-kafka (python)", "idempotence": idempotent, "sent": sent, "acked": acked[0],
            "failed": failed[0], "seconds": secs, "msgs_per_s": acked[0] / secs,
            "mb_per_s": acked[0] * RECORD_BYTES / secs / 1e6, "ack_p50_ms": percentile(lat, 0.5),
            "ack_p99_ms": percentile(lat, 0.99), "broker_cores": cores}


# --- 2. transactions per second -------------------------------------------------------------------

def txn_worker(bootstrap: str, topic: str, partition: int, tid: str, max_txns: int, shared: dict) -> None:
    """One transactional producer: init, wait for the others (barrier), then transactions of
    TXN_RECORDS records until shared["stop_at"] or `max_txns`."""
    lat: list[float] = []
    errors: list[str] = []
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 0,
                  "acks": "all", "logger": LOGGER})
    payload = b"t" * RECORD_BYTES
    try:
        try:
            p.init_transactions(30)
        finally:
            shared["barrier"].wait(60)  # also when init failed: never leave the others waiting
        done = 0
        while done < max_txns and time.monotonic() < shared["stop_at"]:
            t0 = time.monotonic()
            try:
                p.begin_transaction()
                for _ in range(TXN_RECORDS):
                    p.produce(topic, value=payload, partition=partition)
                p.commit_transaction(30)
            except KafkaException as e:
                errors.append(str(e.args[0]))
                if len(errors) > 20:
                    break
                try:
                    p.abort_transaction(30)
                except KafkaException:
                    break
                continue
            lat.append((time.monotonic() - t0) * 1000)
            done += 1
    except Exception as e:  # noqa: BLE001 - reported in the results
        errors.append(repr(e))
    finally:
        p.purge(in_queue=True, in_flight=True, blocking=False)
        p.flush(1)
        shared["results"][tid] = {"latencies_ms": lat, "errors": errors}


def txn_rate(c: Cluster, topic: str, producers: int, a) -> dict:
    pid = c.node(1).pid
    shared: dict = {"results": {}}

    def window_opens() -> None:  # runs once, when every producer is initialised
        shared["t0"] = time.monotonic()
        shared["cpu0"] = cpu_seconds(pid)
        shared["stop_at"] = shared["t0"] + a.txn_seconds

    shared["barrier"] = threading.Barrier(producers, action=window_opens)
    threads = [threading.Thread(target=txn_worker, daemon=True,
                                args=(c.bootstrap, topic, i % a.partitions, f"bench-txn-{producers}-{i}",
                                      max(1, a.txns // producers), shared))
               for i in range(producers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(a.txn_seconds + 120)
    if "t0" not in shared:
        raise ClusterError(f"transactional producers never got ready: {shared['results']}")
    wall = max(1e-9, time.monotonic() - shared["t0"])
    cores = (cpu_seconds(pid) - shared["cpu0"]) / wall
    lat = sorted(x for r in shared["results"].values() for x in r["latencies_ms"])
    errors = [e for r in shared["results"].values() for e in r["errors"]]
    n = len(lat)
    return {"producers": producers, "txns": n, "seconds": wall, "txns_per_s": n / wall,
            "records_per_s": n * TXN_RECORDS / wall, "txn_p50_ms": percentile(lat, 0.5),
            "txn_p99_ms": percentile(lat, 0.99), "txn_mean_ms": statistics.fmean(lat) if lat else float("nan"),
            "broker_cores": cores, "errors": errors[:5], "error_count": len(errors)}


# --- main -----------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--produce-seconds", type=float, default=10.0)
    ap.add_argument("--produce-count", type=int, default=5_000_000)
    ap.add_argument("--rounds", type=int, default=2, help="off/on pairs of produce runs")
    ap.add_argument("--txn-seconds", type=float, default=10.0)
    ap.add_argument("--txns", type=int, default=200_000, help="upper bound on transactions per setup")
    ap.add_argument("--txn-producers", type=int, default=4, help="parallel producers of the second setup")
    ap.add_argument("--python-produce", action="store_true", help="measure produce from Python even if loadgen exists")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory and the broker log")
    a = ap.parse_args()

    (ROOT / "bench" / "target").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="transactions.", dir=ROOT / "bench" / "target"))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results_path = ROOT / "bench" / "target" / f"transactions-results-{stamp}.jsonl"
    results: list[dict] = []
    ok = False
    use_loadgen = LOADGEN.is_file() and not a.python_produce
    c = Cluster(work, n=1, quorum=False)
    try:
        c.start()
        c.create_topic("idem", partitions=a.partitions, replication_factor=1)
        c.create_topic("txn", partitions=a.partitions, replication_factor=1)
        tool = "loadgen" if use_loadgen else "confluent-kafka from Python (client-bound)"
        print(f"== produce acks=all, {RECORD_BYTES} B, {a.partitions} partitions, linger.ms=5, "
              f"{a.produce_seconds:.0f} s each, idempotence off/on x {a.rounds} ({tool})", flush=True)
        for rnd in range(a.rounds):
            for idem in (False, True):
                fn = produce_loadgen if use_loadgen else produce_python
                r = fn(c, "idem", idem, a)
                r.update({"label": "produce", "round": rnd + 1})
                results.append(r)
                print(f"   round {rnd + 1} idempotence={'on ' if idem else 'off'}: {r['msgs_per_s']:,.0f} msg/s "
                      f"({r['mb_per_s']:.1f} MB/s), ack p50 {r['ack_p50_ms']:.2f} ms p99 {r['ack_p99_ms']:.2f} ms, "
                      f"broker {r.get('broker_cores', float('nan')):.2f} cores", flush=True)
        for producers in sorted({1, a.txn_producers}):
            print(f"== transactions of {TXN_RECORDS} x {RECORD_BYTES} B records, {producers} producer(s), "
                  f"{a.txn_seconds:.0f} s", flush=True)
            r = txn_rate(c, "txn", producers, a)
            r["label"] = "transactions"
            results.append(r)
            print(f"   {r['txns_per_s']:,.0f} txn/s ({r['records_per_s']:,.0f} records/s), begin->commit "
                  f"p50 {r['txn_p50_ms']:.2f} ms p99 {r['txn_p99_ms']:.2f} ms, broker {r['broker_cores']:.2f} cores, "
                  f"{r['error_count']} errors {r['errors']}", flush=True)
        c.check_no_unexpected_exit()
        ok = True
    except Exception:
        print(c.log_tails(40), file=sys.stderr)
        raise
    finally:
        c.stop_all()
        with open(results_path, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
        if a.keep or not ok:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    print(f"\nraw results: {results_path}")
    failed = [r for r in results if r.get("label") == "transactions" and r["txns"] == 0]
    return 1 if failed else 0


def report(results: list[dict]) -> None:
    print()
    print(f"{'produce acks=all':<30} {'msgs/s':>12} {'MB/s':>7} {'ack p50 ms':>11} {'p99 ms':>8} {'broker cores':>13}")
    for r in results:
        if r.get("label") != "produce":
            continue
        name = f"idempotence {'on' if r['idempotence'] else 'off'} (round {r['round']})"
        print(f"{name:<30} {r['msgs_per_s']:>12,.0f} {r['mb_per_s']:>7.1f} {r['ack_p50_ms']:>11.2f} "
              f"{r['ack_p99_ms']:>8.2f} {r.get('broker_cores', float('nan')):>13.2f}")
    on = [r["msgs_per_s"] for r in results if r.get("label") == "produce" and r["idempotence"]]
    off = [r["msgs_per_s"] for r in results if r.get("label") == "produce" and not r["idempotence"]]
    if on and off:
        print(f"{'on / off (median of rounds)':<30} {statistics.median(on) / statistics.median(off):>12.2f}")
    print()
    print(f"{'transactions (10 x 100 B)':<30} {'txn/s':>12} {'records/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'broker cores':>13}")
    for r in results:
        if r.get("label") != "transactions":
            continue
        name = f"{r['producers']} producer{'s' if r['producers'] > 1 else ''}"
        print(f"{name:<30} {r['txns_per_s']:>12,.0f} {r['records_per_s']:>10,.0f} {r['txn_p50_ms']:>8.2f} "
              f"{r['txn_p99_ms']:>8.2f} {r['broker_cores']:>13.2f}")


if __name__ == "__main__":
    sys.exit(main())
