#!/usr/bin/env bash
# kavka benchmark: an independent librdkafka load generator against the release broker on
# 127.0.0.1, next to the machine's own limits (loopback TCP, disk write, fdatasync latency).
#
#   bench/run.sh            full run (~6 min on 2 cores)
#   bench/run.sh --quick    smaller counts and shorter runs (~4 min)
#   bench/run.sh --keep     keep the data directory and broker logs afterwards
#
# The last step runs bench/transactions.py (idempotence off/on, transactions per second) with
# the project's .venv (scripts/test.sh creates it); it is skipped when there is no .venv.
#
# Environment: KAVKA_BENCH_PORT (default 19392), KAVKA_BENCH_DIR (parent of the scratch data
# directory, default bench/target; it should be on the disk you want to measure, not tmpfs),
# KAVKA_BIN (use this broker binary instead of building target/release/kavka).
#
# Every loop is bounded in count and time, and all traffic goes to 127.0.0.1 only.
# Not part of CI.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    PRODUCE_COUNT=2000000; PRODUCE_SECS=8
    CONSUME_COUNT=1000000; CONSUME_SECS=20
    E2E_SECS=5; DD_MIB=256; BLAST_BYTES=$((2 << 30)); FSYNC_COUNT=500
    GROUP_BASELINE_SECS=3; GROUP_COMMIT_SECS=5
else
    PRODUCE_COUNT=5000000; PRODUCE_SECS=15
    CONSUME_COUNT=1000000; CONSUME_SECS=30
    E2E_SECS=10; DD_MIB=1024; BLAST_BYTES=$((4 << 30)); FSYNC_COUNT=2000
    GROUP_BASELINE_SECS=5; GROUP_COMMIT_SECS=10
fi
GROUP_MEMBERS=100; GROUP_PARTITIONS=200
IDLE_SETTLE_SECS=5

PORT=${KAVKA_BENCH_PORT:-19392}
ADDR=127.0.0.1:$PORT

log() { printf '\n== %s\n' "$*" >&2; }

# --- what the run needs -------------------------------------------------------------------
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! pkg-config --exists 'rdkafka >= 1.9.2' 2>/dev/null || ! command -v cc >/dev/null; then
    log "installing librdkafka-dev, pkg-config and a C toolchain"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librdkafka-dev pkg-config build-essential >/dev/null
fi

log "building the kavka release binary and the load generator"
if [ -n "${KAVKA_BIN:-}" ]; then
    KAVKA=$KAVKA_BIN
else
    (cd "$REPO" && cargo build --release -p kavka)
    KAVKA=${CARGO_TARGET_DIR:-$REPO/target}/release/kavka
fi
LG_TARGET=$REPO/bench/target
CARGO_TARGET_DIR=$LG_TARGET cargo build --release --manifest-path "$REPO/bench/loadgen/Cargo.toml"
LG=$LG_TARGET/release/kavka-loadgen

mkdir -p "${KAVKA_BENCH_DIR:-$REPO/bench/target}"
WORK=$(mktemp -d "${KAVKA_BENCH_DIR:-$REPO/bench/target}/run.XXXXXX")
RESULTS=$LG_TARGET/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl
: >"$RESULTS"
if [ "$(stat -f -c %T "$WORK")" = tmpfs ]; then
    echo "warning: $WORK is on tmpfs: disk figures will measure memory" >&2
fi

# --- broker lifecycle ---------------------------------------------------------------------
BROKER_PID=
BROKER_N=0
LAUNCH_NS=0

# start_broker DATA_DIR [--override k=v ...]: launches the broker in the background.
start_broker() {
    local dir=$1; shift
    BROKER_N=$((BROKER_N + 1))
    mkdir -p "$dir"
    LAUNCH_NS=$(date +%s%N)
    "$KAVKA" server \
        --override "listeners=PLAINTEXT://$ADDR" \
        --override "advertised.listeners=PLAINTEXT://$ADDR" \
        --override "log.dirs=$dir" \
        "$@" >"$WORK/broker-$BROKER_N.log" 2>&1 &
    BROKER_PID=$!
}

# wait_ready [SCENARIO [--tag k=v ...]]: blocks until the broker answers Metadata.
wait_ready() {
    local args=()
    if [ $# -gt 0 ]; then args=(--scenario "$1" --out "$RESULTS"); shift; fi
    if ! "$LG" --bootstrap-server "$ADDR" "${args[@]}" "$@" wait-ready \
        --since-epoch-ns "$LAUNCH_NS" --timeout-seconds 60 >/dev/null; then
        echo "broker did not become ready; its log:" >&2
        tail -n 30 "$WORK/broker-$BROKER_N.log" >&2 || true
        return 1
    fi
}

# stop_broker [KILL]: SIGTERM (or SIGKILL) and wait, bounded.
stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    local sig=${1:-TERM} t0 i
    t0=$(date +%s%N)
    # bash reports a background job killed by a signal on its own stderr: silence it.
    exec 3>&2 2>/dev/null
    kill -"$sig" "$BROKER_PID" || true
    for i in $(seq 1 600); do
        kill -0 "$BROKER_PID" || break
        sleep 0.1
    done
    if kill -0 "$BROKER_PID"; then
        echo "broker pid $BROKER_PID ignored SIGTERM for 60 s; killing it" >&3
        kill -KILL "$BROKER_PID" || true
    fi
    wait "$BROKER_PID" || true
    exec 2>&3 3>&-
    echo "broker stopped (SIG$sig) in $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&2
    BROKER_PID=
}

cleanup() {
    stop_broker KILL
    if [ "$KEEP" = 1 ]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# lg SCENARIO SUBCOMMAND ARGS...: one measurement; a failure is recorded, the run goes on.
lg() {
    local scenario=$1; shift
    "$LG" --bootstrap-server "$ADDR" --scenario "$scenario" --out "$RESULTS" \
        ${BROKER_PID:+--broker-pid "$BROKER_PID"} "$@" >/dev/null \
        || echo "scenario $scenario failed" >&2
}

create() { "$LG" --bootstrap-server "$ADDR" create-topic --topic "$1" --partitions "$2" ${3:+--topics "$3"} >/dev/null; }

# --- 1. the machine's own limits ----------------------------------------------------------
log "reference: loopback TCP, page-cache append and disk write (dd ${DD_MIB} MiB), fdatasync latency"
lg loopback_tcp tcp-blast --bytes "$BLAST_BYTES" --seconds 5
# Appending to a new file without sync: the kernel work a broker pays per byte before any
# fsync (page allocation and copy into the page cache), as wall time and system CPU time.
TIMEFORMAT='%R %S'
read -r pc_real pc_sys < <({ time dd if=/dev/zero of="$WORK/pc.tmp" bs=1M count="$DD_MIB" status=none; } 2>&1)
rm -f "$WORK/pc.tmp"
awk -v b=$((DD_MIB * 1048576)) -v r="$pc_real" -v s="$pc_sys" 'BEGIN {
    printf "{\"scenario\":\"page_cache_write\",\"bytes\":%d,\"seconds\":%.3f,\"mb_per_s\":%.1f,\"cpu_s_per_gb\":%.3f}\n", b, r, b / r / 1e6, s / (b / 1e9) }' \
    | tee -a "$RESULTS" >&2
t0=$(date +%s%N)
dd if=/dev/zero of="$WORK/dd.tmp" bs=1M count="$DD_MIB" conv=fdatasync status=none
t1=$(date +%s%N)
rm -f "$WORK/dd.tmp"
awk -v b=$((DD_MIB * 1048576)) -v ns=$((t1 - t0)) 'BEGIN {
    printf "{\"scenario\":\"disk_write\",\"bytes\":%d,\"seconds\":%.3f,\"mb_per_s\":%.1f}\n", b, ns / 1e9, b / (ns / 1e9) / 1e6 }' \
    | tee -a "$RESULTS" >&2
lg fsync fsync-latency --dir "$WORK" --count "$FSYNC_COUNT" --seconds 5

# --- 2. default durability: produce, consume, end-to-end latency --------------------------
DATA=$WORK/data
log "broker on $ADDR, data in $DATA (default durability: ack after write to the OS)"
start_broker "$DATA"
wait_ready startup_empty
create p1-acks1 1; create p6-acks1 6; create p1-acksall 1; create p6-acksall 6; create e2e 1

P=(--count "$PRODUCE_COUNT" --seconds "$PRODUCE_SECS" --size 100 --linger-ms 5)
log "produce 100-byte records, linger.ms=5"
lg produce_p1_acks1 produce --topic p1-acks1 --acks 1 "${P[@]}"
lg produce_p6_acks1 produce --topic p6-acks1 --acks 1 "${P[@]}"
lg produce_p1_acksall produce --topic p1-acksall --acks all "${P[@]}"
lg produce_p6_acksall produce --topic p6-acksall --acks all "${P[@]}"

log "consume ${CONSUME_COUNT} records from the beginning (assign, librdkafka defaults)"
lg consume_p1 consume --topic p1-acks1 --count "$CONSUME_COUNT" --seconds "$CONSUME_SECS"
lg consume_p6 consume --topic p6-acks1 --count "$CONSUME_COUNT" --seconds "$CONSUME_SECS"

log "end-to-end latency at a fixed rate, linger.ms=0"
lg e2e_10k e2e --topic e2e --rate 10000 --seconds "$E2E_SECS" --linger-ms 0
lg e2e_100k e2e --topic e2e --rate 100000 --seconds "$E2E_SECS" --linger-ms 0
stop_broker

# --- 3. restart over the existing log, then fsync-before-ack ------------------------------
LOG_MIB=$(du -sm "$DATA" | cut -f1)
log "restart over ${LOG_MIB} MiB of log, with log.flush.interval.messages=1"
start_broker "$DATA" --override log.flush.interval.messages=1
wait_ready restart --tag "log_mib=$LOG_MIB"
create p1-fsync 1; create p6-fsync 6
lg produce_p1_acksall_flush1 produce --topic p1-fsync --acks all "${P[@]}"
lg produce_p6_acksall_flush1 produce --topic p6-fsync --acks all "${P[@]}"

LOG_MIB=$(du -sm "$DATA" | cut -f1)
log "kill -9, then restart over ${LOG_MIB} MiB (recovery of the unflushed tail)"
stop_broker KILL
start_broker "$DATA"
wait_ready restart_unclean --tag "log_mib=$LOG_MIB"
stop_broker

# --- 4. idle memory with 1,000 partitions -------------------------------------------------
IDLE=$WORK/idle
log "idle RSS with 1,000 partitions (settle ${IDLE_SETTLE_SECS}s)"
start_broker "$IDLE"
wait_ready
create idle 1000
sleep "$IDLE_SETTLE_SECS"
lg idle_rss_1000p rss
stop_broker
start_broker "$IDLE"
wait_ready
sleep "$IDLE_SETTLE_SECS"
lg idle_rss_1000p_restarted rss
stop_broker

# --- 5. a 100-member consumer group -------------------------------------------------------
# group.initial.rebalance.delay.ms=0: Kafka's default (3 s, restarted by every new member) is a
# deliberate wait that would hide the coordinator's own time to a stable assignment.
GROUPS=$WORK/groups
log "consumer group: ${GROUP_MEMBERS} members on ${GROUP_PARTITIONS} partitions, then ${GROUP_COMMIT_SECS}s of OffsetCommit"
start_broker "$GROUPS" --override group.initial.rebalance.delay.ms=0
wait_ready
create group-bench "$GROUP_PARTITIONS"
lg group_100m_200p group --topic group-bench --partitions "$GROUP_PARTITIONS" --members "$GROUP_MEMBERS" \
    --baseline-seconds "$GROUP_BASELINE_SECS" --commit-seconds "$GROUP_COMMIT_SECS"
# The same with KIP-848 members (ConsumerGroupHeartbeat every 100 ms while the group forms).
lg group_100m_200p_kip848 group --protocol consumer --group kavka-loadgen-kip848 --topic group-bench \
    --partitions "$GROUP_PARTITIONS" --members "$GROUP_MEMBERS" \
    --baseline-seconds "$GROUP_BASELINE_SECS" --commit-seconds "$GROUP_COMMIT_SECS"
stop_broker

# --- 6. the table -------------------------------------------------------------------------
log "results ($RESULTS)"
"$LG" report "$RESULTS"

# --- 7. exactly-once: idempotence off/on, transactions per second (own broker, free port) ----
if [ -x "$REPO/.venv/bin/python" ]; then
    if [ "$QUICK" = 1 ]; then TXN_ARGS=(--produce-seconds 5 --txn-seconds 5 --rounds 1); else TXN_ARGS=(); fi
    log "exactly-once: bench/transactions.py ${TXN_ARGS[*]}"
    KAVKA_BIN=$KAVKA KAVKA_LOADGEN=$LG "$REPO/.venv/bin/python" "$REPO/bench/transactions.py" "${TXN_ARGS[@]}" \
        || echo "bench/transactions.py failed" >&2
else
    log "skipping bench/transactions.py: no $REPO/.venv (scripts/test.sh creates it)"
fi
