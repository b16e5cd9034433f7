"""The server pool: reuse by key, one live server at a time, idle stop, dead-server cleanup,
and nothing left behind — with the real naive Transformers server on SmolLM2."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from servingbench.host.config import cell_spec, load_config
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.pool import ServerPool, key_hash

pytestmark = pytest.mark.servers
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def specs(smollm2_dir):
    cfg = load_config(ROOT / "configs" / "cpu.yaml")
    base = cell_spec(cfg, "transformers-naive", "smollm2-135m", "chat", "stream")
    a = dataclasses.replace(base, server=dataclasses.replace(base.server, model_dir=str(smollm2_dir)),
                            server_start_timeout_s=180)
    b = dataclasses.replace(a, server=dataclasses.replace(a.server, dtype="float32"))
    return a, b


def _gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def test_reuse_by_key_and_one_server_at_a_time(tmp_path, specs):
    a, b = specs
    pool = ServerPool(tmp_path / "servers")
    adapter = get_adapter("transformers-naive")
    try:
        h1 = pool.acquire(adapter, a, tmp_path / "a.log")
        assert not h1.reused and h1.startup_s > 0
        h1.close()
        h2 = pool.acquire(adapter, a, tmp_path / "a2.log")
        assert h2.reused and h2.proc.pid == h1.proc.pid and h2.proc.base_url == h1.proc.base_url
        h2.close()
        assert key_hash(a.server) != key_hash(b.server)
        h3 = pool.acquire(adapter, b, tmp_path / "b.log")  # another key: the first server is stopped
        assert not h3.reused and h3.proc.pid != h1.proc.pid
        assert _gone(h1.proc.pid)
        assert [s["key_hash"] for _, s in pool.states()] == [key_hash(b.server)]
        h3.close()
    finally:
        assert pool.stop_all() <= 1
    assert _gone(h3.proc.pid)
    assert not list((tmp_path / "servers").glob("*.json"))


def test_idle_server_stops_itself(tmp_path, specs):
    a, _ = specs
    pool = ServerPool(tmp_path / "servers", idle_timeout_s=2.0)
    h = pool.acquire(get_adapter("transformers-naive"), a, tmp_path / "a.log")
    state = pool.states()[0][1]
    h.close()
    assert _gone(h.proc.pid, timeout=30) and _gone(state["keeper_pid"], timeout=10)
    assert not pool.states()


def test_a_leased_server_is_not_idle_stopped(tmp_path, specs):
    a, _ = specs
    pool = ServerPool(tmp_path / "servers", idle_timeout_s=1.0)
    h = pool.acquire(get_adapter("transformers-naive"), a, tmp_path / "a.log")
    try:
        time.sleep(4)  # a long cell: the lease holder (this process) is alive
        assert h.proc.alive()
    finally:
        h.close()
        pool.stop_all()
    assert _gone(h.proc.pid)


def test_dead_server_is_cleaned_up_and_replaced(tmp_path, specs):
    a, _ = specs
    pool = ServerPool(tmp_path / "servers")
    adapter = get_adapter("transformers-naive")
    h1 = pool.acquire(adapter, a, tmp_path / "a.log")
    h1.close()
    os.kill(h1.proc.pid, signal.SIGKILL)
    assert _gone(h1.proc.pid)
    try:
        h2 = pool.acquire(adapter, a, tmp_path / "a2.log")
        assert not h2.reused and h2.proc.pid != h1.proc.pid
        h2.close()
    finally:
        pool.stop_all()
    assert _gone(h2.proc.pid)


def test_sigterm_to_the_keeper_stops_its_server(tmp_path, specs):
    a, _ = specs
    pool = ServerPool(tmp_path / "servers")
    h = pool.acquire(get_adapter("transformers-naive"), a, tmp_path / "a.log")
    state = pool.states()[0][1]
    h.close()
    os.kill(state["keeper_pid"], signal.SIGTERM)
    assert _gone(state["keeper_pid"]) and _gone(h.proc.pid)
    assert not pool.states()
    log = (tmp_path / "a.log").read_text()
    assert "servingbench: starting transformers-naive" in log
    assert json.dumps(state)  # state was plain JSON
