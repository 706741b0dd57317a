"""kafkajs (pure JavaScript client) transactions against kavka: node/transactions.js commits and
aborts, reads with readUncommitted false and true, and commits group offsets with sendOffsets."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from txn_app import TXN_BROKER_PROPS

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.mark.broker_config(**TXN_BROKER_PROPS)
def test_kafkajs_transactions_commit_abort_read_committed_and_send_offsets(group_broker, topic_name):
    node = shutil.which("node")
    assert node, "node is not installed"
    assert (NODE_DIR / "node_modules" / "kafkajs").is_dir(), "run `npm ci` in tests/interop/node (scripts/test.sh does)"
    proc = subprocess.run([node, "transactions.js", group_broker, topic_name], cwd=NODE_DIR,
                          capture_output=True, timeout=150)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"kafkajs transactions failed (exit {proc.returncode}):\n{err[-6000:]}\n{out[-2000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"] and "sendOffsets commits with the transaction" in result["checked"], result
