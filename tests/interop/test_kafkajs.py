"""kafkajs (pure JavaScript client) against kavka: admin, produce, list offsets, fetch."""

import json
import shutil
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / "node"


def test_kafkajs_roundtrip(broker, topic_name):
    node = shutil.which("node")
    assert node, "node is not installed"
    assert (NODE_DIR / "node_modules" / "kafkajs").is_dir(), "run `npm ci` in tests/interop/node (scripts/test.sh does)"
    proc = subprocess.run([node, "roundtrip.js", broker, topic_name], cwd=NODE_DIR,
                          capture_output=True, timeout=120)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"kafkajs round trip failed (exit {proc.returncode}):\n{err[-6000:]}\n{out[-2000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"] and "fetch" in result["checked"], result
