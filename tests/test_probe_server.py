"""scripts/device/probe_server.py starts an arm's server as a cell would, with other model-only
arguments, and says whether it served: a real naive server on SmolLM2 (CPU), ready with the
config's arguments and refused, with the server's own error, with an argument it does not know."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = REPO / "scripts" / "device" / "probe_server.py"


def _probe(tmp_path: Path, *model_args: str) -> tuple[int, dict]:
    cmd = [sys.executable, str(PROBE), str(REPO / "configs" / "cpu.yaml"), "transformers-naive", "smollm2-135m",
           "--timeout", "240", "--", *model_args]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def test_probe_serves_and_refuses_with_the_servers_reason(smollm2_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-135m").symlink_to(smollm2_dir)
    rc, out = _probe(tmp_path)
    assert rc == 0 and out["ready"] and out["startup_s"] > 0, out
    assert out["model_server_args"] == [] and "smollm2-135m" in " ".join(out["command"])
    rc, out = _probe(tmp_path, "--no-such-flag")
    assert rc == 1 and not out["ready"], out
    assert "--no-such-flag" in out["log_tail"] and out["model_server_args"] == ["--no-such-flag"]
