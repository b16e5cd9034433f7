"""Start a framework's server, know when it is ready, and stop its whole process tree.

The server runs in its own process group (its own session) so that one signal reaches every
process it spawned (vLLM runs as 3-4 processes); anything that escaped the group is found with
psutil and killed too. Its output goes through a redacting copier into a log file, so a server
that echoes its environment cannot leak a token into ``results/``. Runtime module.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Mapping

import httpx
import psutil

from servingbench.runtime.cpu_split import split
from servingbench.runtime.frameworks.base import Adapter, Launch
from servingbench.runtime.redaction import redact_argv, redact_bytes, secret_values
from servingbench.runtime.spec import ServerSpec

_OOM = re.compile(r"out of memory|CUDA error: out of memory|OutOfMemoryError|Cannot allocate memory|"
                  r"not enough (GPU |KV cache )?memory|No available memory for the cache blocks|"
                  r"MemoryError: Memory footprint \d+ is more than available memory", re.I)
_PORT = re.compile(r"address already in use|Errno 98", re.I)


class ServerStartError(RuntimeError):
    """The server did not become ready. ``category`` is one of the failure-record categories."""

    def __init__(self, category: str, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.category = category
        self.log_tail = log_tail


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (another process may still take it: see start retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _copy_redacted(src: IO[bytes], dst: IO[bytes], secrets: list[str]) -> None:
    """Copy the server's output to its log, credentials masked. When the log cannot be written
    (a full disk), keep draining the pipe: a server blocked on a full pipe would stall the cell."""
    writable = True
    for line in iter(src.readline, b""):
        if not writable:
            continue
        try:
            dst.write(redact_bytes(line, secrets))
            dst.flush()
        except (OSError, ValueError):
            writable = False
    src.close()


def out_of_memory(log_text: str) -> bool:
    """Whether a server's log says it ran out of (GPU or host) memory."""
    return _OOM.search(log_text) is not None


def read_tail(log_path: Path, chars: int = 4000) -> str:
    """The last ``chars`` characters of a log file ("" if it cannot be read)."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - chars))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def classify_failure(log_tail: str, default: str) -> str:
    if _OOM.search(log_tail):
        return "out_of_memory"
    if _PORT.search(log_tail):
        return "port_in_use"
    return default


class ServerProcess:
    """One framework server started as a child process in its own process group."""

    def __init__(self, adapter: Adapter, server: ServerSpec, log_path: str | Path,
                 host: str = "127.0.0.1", port: int | None = None) -> None:
        self.adapter, self.server = adapter, server
        self.host, self.port = host, port or free_port(host)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.launch: Launch | None = None
        self.started_wall: float = 0.0
        self.startup_s: float | None = None
        self._copier: threading.Thread | None = None
        self._known_pids: set[int] = set()
        self._env: Mapping[str, str] | None = None  # the server's environment (its secrets are masked)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        """The argv it runs with, secrets redacted (what result files record)."""
        assert self.launch is not None
        return redact_argv(self.launch.argv, secret_values(self._env, self.launch.argv))

    def start(self) -> None:
        self.launch = self.adapter.launch(self.server, self.host, self.port)
        env = dict(os.environ)
        env.update(self.launch.env)
        env.update(dict(self.server.env))
        self._env = env
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"# servingbench: starting {self.server.arm} on port {self.port}: "
                  f"{' '.join(self.command())}\n".encode())
        log.flush()
        cpus = split(self.server.client_cpus)
        pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus.server))  # inherited by its children
        self.started_wall = time.time()
        self._t0 = time.perf_counter()
        # start_new_session: its own process group, so stop() reaches every descendant.
        self.proc = subprocess.Popen(self.launch.argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=pin)
        self._copier = threading.Thread(target=_copy_redacted, args=(self.proc.stdout, log,
                                                                          secret_values(env, self.launch.argv)),
                                        daemon=True, name=f"log-{self.server.arm}")
        self._copier.start()

    def log_tail(self, chars: int = 4000) -> str:
        return read_tail(self.log_path, chars)

    def wait_ready(self, timeout_s: float) -> float:
        """Poll health, then send one tiny real request; return start-up seconds."""
        assert self.proc is not None
        deadline = self._t0 + timeout_s
        with httpx.Client(base_url=self.base_url, trust_env=False, timeout=10.0) as client:
            while True:
                self._remember_tree()
                if self.proc.poll() is not None:
                    self._raise_exited()
                try:
                    if client.get(self.adapter.health_path).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() > deadline:
                    raise ServerStartError("start_timeout",
                                           f"server not healthy after {timeout_s:g} s", self.log_tail())
                time.sleep(0.5)
            req = self.adapter.readiness_request(self.server)
            while True:
                try:
                    resp = client.request(req.method, req.path, json=req.json,
                                          timeout=max(5.0, deadline - time.perf_counter()))
                    if resp.status_code < 400:
                        break
                    detail = f"HTTP {resp.status_code}: {resp.text[:300]}"
                except httpx.HTTPError as exc:
                    detail = f"{type(exc).__name__}: {exc}"
                if self.proc.poll() is not None:
                    self._raise_exited()
                tail = self.log_tail()
                if _OOM.search(tail):  # e.g. a batching worker that died: every request would 503
                    raise ServerStartError("out_of_memory",
                                           f"server out of memory at its first request ({detail})", tail)
                if time.perf_counter() > deadline:
                    raise ServerStartError("start_timeout", f"readiness request failed: {detail}", tail)
                time.sleep(1.0)
        self.startup_s = time.perf_counter() - self._t0
        self._remember_tree()
        return self.startup_s

    def _raise_exited(self) -> None:
        assert self.proc is not None
        if self._copier:
            self._copier.join(timeout=5)
        tail = self.log_tail()
        category = classify_failure(tail, "server_exited")
        last = [ln for ln in tail.strip().splitlines() if ln.strip()][-1:] or ["(empty log)"]
        what = {"out_of_memory": "out of memory", "port_in_use": f"port {self.port} already in use"}.get(
            category, f"exited with code {self.proc.returncode}")
        raise ServerStartError(category, f"server {what} during start-up; last log line: {last[0][:300]}", tail)

    def _remember_tree(self) -> None:
        for p in self.tree():
            self._known_pids.add(p.pid)

    def tree(self) -> list[psutil.Process]:
        """The server process and all its descendants that are alive now."""
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever of the tree is left."""
        if self.proc is None:
            return
        self._remember_tree()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        survivors = []
        for pid in self._known_pids:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    survivors.append(p)
            except psutil.NoSuchProcess:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in survivors:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(survivors, timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self._copier:
            self._copier.join(timeout=5)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(adapter: Adapter, server: ServerSpec, log_path: str | Path, timeout_s: float,
                 host: str = "127.0.0.1", attempts: int = 2) -> ServerProcess:
    """Start and wait for readiness; on a port race, retry once on a new port. Stops on failure."""
    for attempt in range(attempts):
        proc = ServerProcess(adapter, server, log_path, host=host)
        try:
            proc.start()
            proc.wait_ready(timeout_s)
            return proc
        except ServerStartError as exc:
            proc.stop()
            if exc.category != "port_in_use" or attempt == attempts - 1:
                raise
        except BaseException:
            proc.stop()
            raise
    raise AssertionError("unreachable")
