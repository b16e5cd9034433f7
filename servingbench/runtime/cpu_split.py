"""CPUs for the client and for the server, apart (``run.client_cpus``).

The kit's client and the server it measures share the host's CPUs by default. Above ~100 req/s
on a 16-vCPU host the client became the ceiling of capacity searches (examples/h200-dummy), and
a busy client also slows a server whose front end is Python. With ``run.client_cpus: N`` the
client keeps the last N of the CPUs the measuring job may use (its affinity, as ``taskset`` or a
Snakemake lane set it) and the server and every process it starts get the rest, so neither
takes the other's cores. Linux only (``os.sched_setaffinity``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from servingbench.runtime.errors import UserError


class CpuSplitError(UserError):
    """The split cannot be made on this host: too few CPUs, or no affinity calls."""


@dataclass(frozen=True)
class CpuSplit:
    client: frozenset[int]
    server: frozenset[int]


def cpu_list(cpus: frozenset[int] | set[int]) -> str:
    """``0-11,14`` as taskset and /proc write it."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def split(client_cpus: int, allowed: set[int] | None = None) -> CpuSplit | None:
    """The last ``client_cpus`` CPUs of ``allowed`` (default: this process's affinity) for the
    client, the rest for the server; None when ``client_cpus`` is 0 (they share every CPU)."""
    if not client_cpus:
        return None
    if allowed is None:
        if not hasattr(os, "sched_getaffinity"):
            raise CpuSplitError("run.client_cpus: this platform cannot set CPU affinity (Linux only); set it to 0")
        allowed = os.sched_getaffinity(0)
    cpus = sorted(allowed)
    if client_cpus >= len(cpus):
        raise CpuSplitError(f"run.client_cpus: {client_cpus} of the {len(cpus)} CPUs this job may use "
                            f"({cpu_list(set(cpus))}) leaves none for the server; use at most {len(cpus) - 1}")
    return CpuSplit(client=frozenset(cpus[-client_cpus:]), server=frozenset(cpus[:-client_cpus]))


def affinity_text(pid: int | None) -> str | None:
    """The CPUs process ``pid`` (0: this thread) may run on, as ``cpu_list`` writes them; None
    where that cannot be read (no pid, a process gone, no affinity calls)."""
    if pid is None or not hasattr(os, "sched_getaffinity"):
        return None
    try:
        return cpu_list(os.sched_getaffinity(pid))
    except OSError:
        return None


@contextmanager
def client_affinity(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the block on ``cpus`` (nothing changes for None), then restore this process's affinity."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
