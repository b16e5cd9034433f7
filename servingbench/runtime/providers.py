"""Where a cell gets its server: a fresh one it owns, or an external endpoint someone else runs.

A cell sees its server only through ``RunningServer`` (a small protocol: its address, log,
process id, liveness) and hands it back through ``ServerHandle.close``; what close does
(stop the whole tree, hand it back to the pool, nothing) belongs to the provider. The pooled
servers of ``servingbench.runtime.pool`` implement the same protocol. Runtime module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import httpx

from servingbench.runtime import provenance
from servingbench.runtime.frameworks.base import Adapter
from servingbench.runtime.lifecycle import ServerStartError, read_tail, start_server
from servingbench.runtime.spec import CellSpec


class RunningServer(Protocol):
    """What a cell uses of a ready server: where it answers, where it logs, which process it is."""

    log_path: Path

    @property
    def base_url(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def alive(self) -> bool: ...

    def command(self) -> list[str]: ...

    def log_tail(self, chars: int = 4000) -> str: ...


@dataclass
class ServerHandle:
    """A ready server and what the result records about it (fresh start or reused).

    ``close`` is what the cell calls when it is done (stop it, hand it back, or nothing);
    ``pooled``: a pool's server, whose prefix cache must be emptied before it is reused.
    """

    proc: RunningServer
    reused: bool
    startup_s: float | None
    started_at: str
    close: Callable[[], None]
    pooled: bool = False


ServerProvider = Callable[[Adapter, CellSpec, Path], ServerHandle]


def fresh_server(adapter: Adapter, spec: CellSpec, log_path: Path) -> ServerHandle:
    """Start a dedicated server for this cell (the default: no reuse); closing it stops its tree."""
    started_at = provenance.now_iso()
    proc = start_server(adapter, spec.server, log_path, spec.server_start_timeout_s)
    return ServerHandle(proc=proc, reused=False, startup_s=proc.startup_s, started_at=started_at, close=proc.stop)


class ExternalServer:
    """A server someone else runs: nothing to start, stop or monitor on this host."""

    def __init__(self, url: str, log_path: Path) -> None:
        self.base_url = url.rstrip("/")
        self.log_path = log_path
        self.pid: int | None = None

    def alive(self) -> bool:
        return True

    def command(self) -> list[str]:
        return []

    def log_tail(self, chars: int = 4000) -> str:
        return read_tail(self.log_path, chars)


def external_server(url: str) -> ServerProvider:
    """A provider that measures the server at ``url``; it must answer health first."""
    def provide(adapter: Adapter, spec: CellSpec, log_path: Path) -> ServerHandle:
        proc = ExternalServer(url, log_path)
        try:
            resp = httpx.get(proc.base_url + adapter.health_path, timeout=10.0, trust_env=False)
        except httpx.HTTPError as exc:
            raise ServerStartError("server_exited", f"{url} is not reachable: {exc}") from None
        if resp.status_code != 200:
            raise ServerStartError("server_exited", f"{url}{adapter.health_path} answered HTTP {resp.status_code}")
        return ServerHandle(proc=proc, reused=True, startup_s=None, started_at="", close=lambda: None)

    return provide
