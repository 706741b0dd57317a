#!/usr/bin/env bash
# The project's one test command (README, .ci/run): on a fresh Debian-like machine it installs
# what the tests need (kcat, a Python venv, kafkajs), builds the release binary, runs every Rust
# test, then the interop suite that drives the real binary with real Kafka clients.
# Idempotent: installs are skipped when already in place. Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

VENV="$ROOT/.venv"
NODE_DIR="$ROOT/tests/interop/node"
REQUIREMENTS="$ROOT/tests/interop/requirements.txt"
LOG_DIR="$ROOT/target/test-logs"
# The whole interop run is bounded; each test is bounded again by pytest-timeout (pytest.ini).
INTEROP_TIMEOUT_S="${KAVKA_INTEROP_TIMEOUT_S:-1200}"

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install manually: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

install_kcat() {
    if command -v kcat >/dev/null; then
        echo "kcat present: $(command -v kcat)"
        return
    fi
    step "installing kcat (librdkafka) with apt-get"
    apt_install kcat
    command -v kcat >/dev/null || die "kcat still missing after apt-get install kcat"
}

install_venv() {
    local stamp="$VENV/.kavka-requirements.sha256"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(sha "$REQUIREMENTS")" ]; then
        echo "venv up to date: $VENV"
        return
    fi
    step "creating Python venv at $VENV"
    command -v python3 >/dev/null || apt_install python3 python3-venv
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 ships without ensurepip unless python3-venv is installed.
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV" || die "python3 -m venv failed"
    fi
    "$VENV/bin/python" -m pip install -q -r "$REQUIREMENTS" || die "pip install -r $REQUIREMENTS failed"
    sha "$REQUIREMENTS" >"$stamp"
}

install_node_deps() {
    local stamp="$NODE_DIR/node_modules/.kavka-lock.sha256"
    if ! command -v npm >/dev/null; then
        step "installing nodejs and npm with apt-get"
        apt_install nodejs npm
    fi
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(sha "$NODE_DIR/package-lock.json")" ]; then
        echo "node_modules up to date: $NODE_DIR/node_modules"
        return
    fi
    step "installing kafkajs with npm ci"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $NODE_DIR failed"
    sha "$NODE_DIR/package-lock.json" >"$stamp"
}

# --- results -------------------------------------------------------------------------------
declare -a SUMMARY=()
TOTAL_PASSED=0
TOTAL_FAILED=0
FAILED=0

record() { # name status seconds detail
    SUMMARY+=("$(printf '%-14s %-7s %5ss  %s' "$1" "$2" "$3" "$4")")
    if [ "$2" != "ok" ]; then FAILED=1; fi
}

print_summary() {
    printf '\n==================== kavka test summary ====================\n'
    local line
    for line in "${SUMMARY[@]}"; do printf '%s\n' "$line"; done
    printf '============================================================\n'
    printf 'summary: %d passed, %d failed\n' "$TOTAL_PASSED" "$TOTAL_FAILED"
}

# --- install -------------------------------------------------------------------------------
mkdir -p "$LOG_DIR"
step "installing test dependencies"
install_kcat
install_venv
install_node_deps
command -v cargo >/dev/null || die "cargo not found (the Rust toolchain must be installed)"

# --- build ---------------------------------------------------------------------------------
step "cargo build --release"
start=$SECONDS
if cargo build --release; then
    record "cargo build" ok $((SECONDS - start)) "target/release/kavka"
else
    record "cargo build" FAILED $((SECONDS - start)) "see the compiler output above"
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
    print_summary
    exit 1
fi
[ -x target/release/kavka ] || die "cargo build --release did not produce target/release/kavka"

# --- Rust tests ----------------------------------------------------------------------------
step "cargo test --release --workspace"
start=$SECONDS
set +e
cargo test --release --workspace 2>&1 | tee "$LOG_DIR/cargo-test.log"
rc=${PIPESTATUS[0]}
set -e
passed=$({ grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$LOG_DIR/cargo-test.log" || true; } | awk '{s += $4} END {print s + 0}')
failed=$({ grep -Eo '[0-9]+ failed;' "$LOG_DIR/cargo-test.log" || true; } | awk '{s += $1} END {print s + 0}')
TOTAL_PASSED=$((TOTAL_PASSED + passed))
TOTAL_FAILED=$((TOTAL_FAILED + failed))
if [ "$rc" -eq 0 ]; then
    record "cargo test" ok $((SECONDS - start)) "$passed passed"
else
    [ "$failed" -gt 0 ] || TOTAL_FAILED=$((TOTAL_FAILED + 1))
    record "cargo test" FAILED $((SECONDS - start)) "exit $rc, $passed passed, $failed failed"
fi

# --- interop -------------------------------------------------------------------------------
step "pytest tests/interop (real clients against target/release/kavka)"
start=$SECONDS
junit="$LOG_DIR/interop-junit.xml"
rm -f "$junit"
set +e
KAVKA_BIN="$ROOT/target/release/kavka" timeout --signal=TERM --kill-after=30 "$INTEROP_TIMEOUT_S" \
    "$VENV/bin/pytest" -q -p no:cacheprovider --junitxml="$junit" tests/interop
rc=$?
set -e
read -r ipassed ifailed < <("$VENV/bin/python" - "$junit" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 0); sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(tests - bad - skipped, bad)
EOF
)
TOTAL_PASSED=$((TOTAL_PASSED + ipassed))
TOTAL_FAILED=$((TOTAL_FAILED + ifailed))
case "$rc" in
    0) record "interop" ok $((SECONDS - start)) "$ipassed passed" ;;
    5) TOTAL_FAILED=$((TOTAL_FAILED + 1))
       record "interop" FAILED $((SECONDS - start)) "pytest collected no tests (exit 5)" ;;
    124|137) TOTAL_FAILED=$((TOTAL_FAILED + 1))
       record "interop" FAILED $((SECONDS - start)) "timed out after ${INTEROP_TIMEOUT_S}s" ;;
    *) [ "$ifailed" -gt 0 ] || TOTAL_FAILED=$((TOTAL_FAILED + 1))
       record "interop" FAILED $((SECONDS - start)) "exit $rc, $ipassed passed, $ifailed failed" ;;
esac

print_summary
exit "$FAILED"
