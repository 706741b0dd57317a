"""Fixtures that run the real `kavka` release binary on an ephemeral port.

Every test gets its own broker and data directory (`broker` yields "host:port";
`broker_proc` yields the `Broker` handle with restart / kill -9 / RSS helpers), so a
broker crash in one test cannot cascade into the next. Every wait is bounded.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import socket
import subprocess
import time
import traceback
import uuid
from pathlib import Path

import pytest

# CPython 3.11 keeps the ast constructor's recursion counter in per-interpreter state. When a
# kafka-python background thread or a finalizer formats a traceback (traceback computes its ^^^
# carets with ast.parse) while pytest parses source for a failure report, the counter is corrupted
# and pytest dies with "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905,
# pytest #10874), losing the whole run. Carets are cosmetic: turn them off.
if hasattr(traceback, "_extract_caret_anchors_from_line_segment"):
    traceback._extract_caret_anchors_from_line_segment = lambda segment: None

ROOT = Path(__file__).resolve().parents[2]
KAVKA_BIN = Path(os.environ.get("KAVKA_BIN", ROOT / "target" / "release" / "kavka"))
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    """Resident set size of a live process, from /proc/<pid>/status (VmRSS, in KiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


_LIVE: set = set()  # Popen objects of brokers started and not yet reaped


def _kill_live_brokers() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()


def _on_sigterm(signum, frame):
    # The outer `timeout` of scripts/test.sh ends a stuck run with SIGTERM: take the brokers
    # (each in its own session) down with us, then die of the same signal.
    _kill_live_brokers()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


atexit.register(_kill_live_brokers)
signal.signal(signal.SIGTERM, _on_sigterm)


class Broker:
    """One kavka broker process bound to 127.0.0.1:<port> with its data in `data_dir`."""

    def __init__(self, data_dir: Path, log_path: Path, overrides: dict | None = None,
                 config_file: Path | None = None):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self.overrides = dict(overrides or {})
        self.config_file = config_file
        self.proc: subprocess.Popen | None = None
        self.expected_exit = False
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        props = {
            "listeners": f"PLAINTEXT://{self.bootstrap}",
            "log.dirs": str(self.data_dir),
            **self.overrides,
        }
        cmd = [str(KAVKA_BIN), "server"]
        if self.config_file is not None:
            cmd.append(str(self.config_file))
        for key, value in props.items():
            cmd += ["--override", f"{key}={value}"]
        return cmd

    def start(self, timeout: float = READY_TIMEOUT_S) -> "Broker":
        if not KAVKA_BIN.is_file():
            pytest.fail(f"{KAVKA_BIN} not found: run `cargo build --release` first")
        assert not self.alive, "broker already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"\n----- start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "RUST_BACKTRACE": "1", "NO_COLOR": "1"},
        )
        log.close()
        _LIVE.add(self.proc)
        self.starts += 1
        self.expected_exit = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"kavka exited with {self.proc.returncode} before accepting connections:\n"
                    + self.log_tail()
                )
            if port_accepts(self.host, self.port):
                return self
            time.sleep(0.05)
        self.kill9()
        pytest.fail(f"kavka did not accept connections on {self.bootstrap} within {timeout}s:\n" + self.log_tail())

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code (None if killed)."""
        if self.proc is None:
            return None
        self.expected_exit = True
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None
        finally:
            _LIVE.discard(self.proc)

    def kill9(self) -> None:
        if self.proc is None:
            return
        self.expected_exit = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        _LIVE.discard(self.proc)

    def restart(self, hard: bool = False) -> "Broker":
        """Stop (SIGTERM, or kill -9 when `hard`) and start again on the same port and data dir."""
        if hard:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _start_broker(request, tmp_path: Path, overrides: dict | None = None):
    b = Broker(tmp_path / "data", tmp_path / "kavka.log", overrides)
    b.start()
    return b


def _finish_broker(request, b: Broker):
    died = b.proc is not None and b.proc.poll() is not None and not b.expected_exit
    b.stop()
    rep = getattr(request.node, "rep_call", None)
    if died:
        pytest.fail(f"kavka died during the test (exit {b.proc.returncode}):\n" + b.log_tail())
    if rep is not None and rep.failed:
        print(f"----- kavka log tail ({b.log_path}):\n{b.log_tail()}")


@pytest.fixture
def broker_proc(request, tmp_path):
    """A running `Broker`; tests may restart or kill -9 it. Overrides via @pytest.mark.broker_config."""
    marker = request.node.get_closest_marker("broker_config")
    overrides = dict(marker.kwargs) if marker else {}
    b = _start_broker(request, tmp_path, overrides)
    yield b
    _finish_broker(request, b)


@pytest.fixture
def broker(broker_proc) -> str:
    """Bootstrap address "127.0.0.1:<port>" of a fresh broker."""
    return broker_proc.bootstrap


@pytest.fixture
def topic_name(request):
    """A unique, valid topic name derived from the test name."""
    base = re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


class _RepeatFilter(logging.Filter):
    """Lets each distinct client log line through a few times per test: a client retrying against
    a broker that keeps closing the connection would otherwise log tens of thousands of lines."""

    LIMIT = 5

    def __init__(self):
        super().__init__()
        self.seen: dict = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        self.seen[key] = self.seen.get(key, 0) + 1
        return self.seen[key] <= self.LIMIT


_REPEAT_FILTER = _RepeatFilter()


@pytest.fixture(autouse=True)
def _limit_repeated_client_logs():
    _REPEAT_FILTER.seen.clear()
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and (name == "kafka" or name.startswith(("kafka.", "librdkafka"))):
            if _REPEAT_FILTER not in lg.filters:
                lg.addFilter(_REPEAT_FILTER)
    yield


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "broker_config(**props): extra server properties for the broker fixture"
    )


# Consumer-group tests: Kafka's group timeouts are tuned for production (a 3 s initial rebalance
# delay, a 6 s minimum session); these make a rebalance take well under a second and an
# abandoned member's eviction a few seconds, so the group tests stay short. Keys follow Kafka's.
GROUP_BROKER_CONFIG = {
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
    "group.max.session.timeout.ms": 60000,
    "offsets.topic.num.partitions": 4,
    "offsets.retention.minutes": 10080,
    "offsets.retention.check.interval.ms": 600000,
    # KIP-848 (group.protocol=consumer): heartbeat and session tuned down the same way.
    "group.consumer.heartbeat.interval.ms": 500,
    "group.consumer.session.timeout.ms": 6000,
}


@pytest.fixture
def group_broker_proc(request, tmp_path):
    """A running `Broker` with GROUP_BROKER_CONFIG (plus any @pytest.mark.broker_config)."""
    marker = request.node.get_closest_marker("broker_config")
    overrides = {**GROUP_BROKER_CONFIG, **(dict(marker.kwargs) if marker else {})}
    b = _start_broker(request, tmp_path, overrides)
    yield b
    _finish_broker(request, b)


@pytest.fixture
def group_broker(group_broker_proc) -> str:
    """Bootstrap address of a fresh broker with short group timeouts (GROUP_BROKER_CONFIG)."""
    return group_broker_proc.bootstrap
