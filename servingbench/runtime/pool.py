"""Pooled servers: one server kept up across the cells that share it.

The pool keeps one server up across the cells that share its key (arm, model, weights, dtype,
image, flags: ``ServerSpec.key()``), so a model's cells pay one start-up. Each pooled server
is owned by a small detached *keeper* process (``python -m servingbench.runtime.pool keep``) that
starts it in its own process group, copies its log with secrets redacted, and stops it when
no cell has used it for ``idle_timeout_s`` (so a killed Snakemake cannot hold a GPU for long),
when it is told to, or when the server dies. Cells and keepers talk through one JSON state
file per server under ``results/servers/``, guarded by a lock file. Runtime module.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil

from servingbench.runtime import provenance
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.frameworks.base import Adapter
from servingbench.runtime.lifecycle import ServerProcess, ServerStartError, read_tail
from servingbench.runtime.providers import ServerHandle, ServerProvider, fresh_server
from servingbench.runtime.redaction import redact, redact_server, remember
from servingbench.runtime.results import atomic_write_json
from servingbench.runtime.spec import CellSpec, ServerSpec

POOL_ENV = "SERVINGBENCH_POOL"  # set (to a state folder) to let cells share servers
IDLE_ENV = "SERVINGBENCH_POOL_IDLE_S"


def key_hash(server: ServerSpec) -> str:
    return hashlib.sha256(server.key().encode()).hexdigest()[:16]


class PooledServer:
    """A view of a server that a keeper owns: the cell may use and monitor it, not stop it."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.base_url = f"http://{state['host']}:{state['port']}"
        self.log_path = Path(state["log"])
        self.pid: int | None = int(state["server_pid"])
        self.startup_s = state.get("startup_s")
        self._command = list(state.get("command", []))

    def command(self) -> list[str]:
        return self._command

    def alive(self) -> bool:
        return _pid_alive(self.pid)

    def log_tail(self, chars: int = 4000) -> str:
        return read_tail(self.log_path, chars)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ServerPool:
    """The state folder of pooled servers (one GPU holds one model: at most one server lives)."""

    def __init__(self, state_dir: str | Path, idle_timeout_s: float = 600.0) -> None:
        self.dir = Path(state_dir)
        self.idle_timeout_s = idle_timeout_s

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def states(self) -> list[tuple[Path, dict[str, Any]]]:
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # a torn or foreign file: not a live server
        return out

    def _healthy(self, state: dict[str, Any], adapter: Adapter) -> bool:
        if state.get("status") != "ready" or not _pid_alive(state.get("keeper_pid")) \
                or not _pid_alive(state.get("server_pid")):
            return False
        try:
            url = f"http://{state['host']}:{state['port']}{adapter.health_path}"
            # Generous: a CPU-bound server can be slow to answer while the machine is loaded,
            # and a false "unhealthy" costs a restart.
            return httpx.get(url, timeout=30.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def _stop(self, path: Path, state: dict[str, Any], grace_s: float = 30.0) -> None:
        keeper = state.get("keeper_pid")
        if _pid_alive(keeper):
            with contextlib.suppress(ProcessLookupError):
                os.kill(keeper, signal.SIGTERM)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(keeper).wait(timeout=grace_s)
        # Whatever the keeper left (it was killed hard, say): the server's whole group.
        server = state.get("server_pid")
        if _pid_alive(server):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server, signal.SIGKILL)
        path.unlink(missing_ok=True)

    def stop_all(self) -> int:
        """Stop every pooled server; return how many there were."""
        if not self.dir.exists():
            return 0
        with self._locked():
            states = self.states()
            for path, state in states:
                self._stop(path, state)
        return len(states)

    def acquire(self, adapter: Adapter, spec: CellSpec, log_path: Path) -> ServerHandle:
        """A ready server for ``spec``: reuse a healthy one with the same key, else start one."""
        kh = key_hash(spec.server)
        with self._locked():
            for path, state in self.states():
                if state.get("key_hash") == kh and self._healthy(state, adapter):
                    self._touch(path, state, lease=os.getpid())
                    return self._handle(path, state, reused=True)
                self._stop(path, state)  # another model, or dead/unhealthy: make room
            path, state = self._start_keeper(spec, kh, log_path)
            self._touch(path, state, lease=os.getpid())
            return self._handle(path, state, reused=False)

    def _handle(self, path: Path, state: dict[str, Any], reused: bool) -> ServerHandle:
        return ServerHandle(proc=PooledServer(state), reused=reused, startup_s=state.get("startup_s"),
                            started_at=state.get("started_at", ""), close=lambda: self.release(path), pooled=True)

    def release(self, path: Path) -> None:
        with self._locked():
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                return
            self._touch(path, state, lease=None)

    @staticmethod
    def _touch(path: Path, state: dict[str, Any], lease: int | None) -> None:
        state["lease_pid"] = lease
        state["last_used"] = time.time()
        state["cells_served"] = state.get("cells_served", 0) + (1 if lease else 0)
        atomic_write_json(path, state)

    def _start_keeper(self, spec: CellSpec, kh: str, log_path: Path) -> tuple[Path, dict[str, Any]]:
        path = self.dir / f"{kh}.json"
        state = {"key_hash": kh, "key": redact_server(json.loads(spec.server.key())), "arm": spec.arm, "model": spec.model,
                 "status": "starting", "log": str(log_path), "requested_at": provenance.now_iso()}
        atomic_write_json(path, state)
        argv = [sys.executable, "-m", "servingbench.runtime.pool", "keep", "--state", str(path),
                "--spec", spec.to_json(), "--log", str(log_path), "--idle", str(self.idle_timeout_s)]
        # Its own session: the keeper outlives this cell job, as a pooled server must.
        keeper = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + spec.server_start_timeout_s + 60
        while time.monotonic() < deadline:
            time.sleep(0.25)
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if state.get("status") == "ready":
                return path, state
            if state.get("status") == "failed":
                path.unlink(missing_ok=True)
                raise ServerStartError(state.get("category", "error"), state.get("reason", "server failed"),
                                       state.get("log_tail", ""))
            if keeper.poll() is not None:
                path.unlink(missing_ok=True)
                raise ServerStartError("error", f"server keeper exited with code {keeper.returncode}")
        self._stop(path, {"keeper_pid": keeper.pid, **state})
        raise ServerStartError("start_timeout", "pooled server did not become ready in time")


def pool_from_env() -> ServerPool | None:
    state_dir = os.environ.get(POOL_ENV)
    if not state_dir:
        return None
    return ServerPool(state_dir, float(os.environ.get(IDLE_ENV, "600")))


def provider_from_env() -> ServerProvider:
    """The server pool when ``SERVINGBENCH_POOL`` names a state folder, else a fresh server."""
    pool = pool_from_env()
    return pooled_server(pool) if pool is not None else fresh_server


def pooled_server(pool: ServerPool) -> ServerProvider:
    """A provider that takes servers from ``pool`` (prefix caching on: fresh, unless the framework
    can empty its cache, which the cell then does first)."""

    def provide(adapter: Adapter, spec: CellSpec, log_path: Path) -> ServerHandle:
        if spec.server.prefix_caching and adapter.reset_prefix_cache_request(spec.server) is None:
            return fresh_server(adapter, spec, log_path)  # a reused cache would leak between cells
        return pool.acquire(adapter, spec, log_path)

    return provide


# -- the keeper -----------------------------------------------------------------------------
def keep(state_path: Path, spec: CellSpec, log_path: Path, idle_s: float) -> int:
    """Start the server, publish its address, and stop it when idle, told to, or dead."""
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__("now", True))
    adapter = get_adapter(spec.server.adapter_name)
    remember(dict(spec.server.env), spec.server.server_args)
    started_at = provenance.now_iso()
    proc = ServerProcess(adapter, spec.server, log_path)
    state = json.loads(state_path.read_text())
    state.update(keeper_pid=os.getpid(), started_at=started_at)
    try:
        proc.start()
        state.update(server_pid=proc.pid, host=proc.host, port=proc.port, command=proc.command())
        atomic_write_json(state_path, state)
        proc.wait_ready(spec.server_start_timeout_s)
    except ServerStartError as exc:
        proc.stop()
        state.update(status="failed", category=exc.category, reason=redact(str(exc)),
                     log_tail=redact(exc.log_tail[-2000:]))
        atomic_write_json(state_path, state)
        return 1
    except BaseException as exc:
        proc.stop()
        state.update(status="failed", category="error", reason=redact(f"{type(exc).__name__}: {exc}"))
        atomic_write_json(state_path, state)
        return 1
    state.update(status="ready", startup_s=proc.startup_s, last_used=time.time())
    atomic_write_json(state_path, state)
    try:
        while not stop["now"] and proc.alive():
            time.sleep(1.0)
            try:
                current = json.loads(state_path.read_text())
            except (OSError, ValueError):
                break  # state removed: we were stopped by the pool
            lease = current.get("lease_pid")
            if lease and _pid_alive(lease):
                continue
            if time.time() - float(current.get("last_used", 0)) > idle_s:
                break
    finally:
        proc.stop()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_path.read_text()).get("keeper_pid") == os.getpid():
                state_path.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m servingbench.runtime.pool")
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keep", help="(internal) own one pooled server")
    k.add_argument("--state", required=True)
    k.add_argument("--spec", required=True)
    k.add_argument("--log", required=True)
    k.add_argument("--idle", type=float, default=600.0)
    a = ap.parse_args(argv)
    return keep(Path(a.state), CellSpec.from_json(a.spec), Path(a.log), a.idle)


if __name__ == "__main__":
    sys.exit(main())
