"""kafkajs (pure JavaScript client) consumer groups against kavka: node/groups.js runs two members
that share a 6-partition topic, then a third that resumes from their commits."""

import json
import shutil
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / "node"


def test_kafkajs_group_share_and_resume(group_broker, topic_name):
    node = shutil.which("node")
    assert node, "node is not installed"
    assert (NODE_DIR / "node_modules" / "kafkajs").is_dir(), "run `npm ci` in tests/interop/node (scripts/test.sh does)"
    proc = subprocess.run([node, "groups.js", group_broker, topic_name], cwd=NODE_DIR,
                          capture_output=True, timeout=120)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"kafkajs groups failed (exit {proc.returncode}):\n{err[-6000:]}\n{out[-2000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"] and "a new member resumes from the commits" in result["checked"], result
