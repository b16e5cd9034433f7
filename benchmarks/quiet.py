"""Was the machine quiet around a measured level? (the calibration's neighbour check)

A calibration figure is only the instrument's when nothing else ran on its cores. Around each
level the driver takes three readings and this module judges them:

- a probe just before and one just after the level, while every process of the benchmark is
  idle: the busy share of each core (``/proc/stat``: user, nice, system, irq, softirq, steal)
  is then all other work, and the CPU pressure share (``/proc/pressure/cpu``, "some": the
  share of time at least one task was runnable but waiting for a CPU) says whether work was
  queueing;
- during the level: each measurement core's busy share minus the benchmark's own CPU on it
  (the server's, the client's, the driver's), and the client's own run-queue wait where the
  client reports it (``/proc/self/task/*/schedstat``, the starvation check).

A level is quiet when every one of them is at or under its threshold (``Thresholds``);
otherwise ``assess`` says which were not, with the figures.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

# /proc/stat per-cpu columns: user nice system idle iowait irq softirq steal [guest guest_nice]
# (guest time is already inside user). Busy = everything but idle and iowait.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)


@dataclass(frozen=True)
class Thresholds:
    """Shares of one core (0-1) above which a reading means other work held the machine.

    10% of a core: a quiet VM shows 0-3% (kernel threads, monitoring); one neighbour process
    waking for a few ms every 20 ms already exceeds it. 5% run-queue wait: the level at which
    the previous calibration's rows started to move (RESULTS.md)."""

    other_busy: float = 0.10
    psi_some: float = 0.10
    runq_wait: float = 0.05


def parse_proc_stat(text: str, ticks_per_s: float) -> dict[int, float]:
    """Busy CPU seconds since boot per core number, from the text of /proc/stat."""
    out: dict[int, float] = {}
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if head.startswith("cpu") and head[3:].isdigit():
            cols = [int(x) for x in rest.split()]
            out[int(head[3:])] = sum(cols[i] for i in _BUSY_COLUMNS if i < len(cols)) / ticks_per_s
    return out


def parse_psi_some_us(text: str) -> int | None:
    """Total µs with some task waiting for a CPU, from the text of /proc/pressure/cpu."""
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                k, _, v = field.partition("=")
                if k == "total":
                    return int(v)
    return None


def sample() -> dict[str, Any]:
    """One reading: monotonic time, busy seconds per core, CPU pressure total (None where the
    kernel has no PSI)."""
    with open("/proc/stat") as fh:
        busy = parse_proc_stat(fh.read(), os.sysconf("SC_CLK_TCK"))
    try:
        with open("/proc/pressure/cpu") as fh:
            psi = parse_psi_some_us(fh.read())
    except OSError:
        psi = None
    return {"t_ns": time.monotonic_ns(), "busy_s": busy, "psi_some_us": psi}


def interval_shares(a: dict[str, Any], b: dict[str, Any], own_cpu_s: dict[int, float] | None = None
                    ) -> dict[str, Any]:
    """Between two readings: each core's busy share after taking off the benchmark's own CPU
    seconds on it (``own_cpu_s``: core → seconds), and the CPU pressure share."""
    wall = (b["t_ns"] - a["t_ns"]) / 1e9
    if wall <= 0:
        raise ValueError("readings out of order")
    own = own_cpu_s or {}
    # /proc/stat counts in clock ticks (10 ms): over a short interval a fully busy core can read
    # a tick or two above 100%, or own CPU (counted exactly) a little above the core's ticks.
    other = {core: min(1.0, max(0.0, (b["busy_s"][core] - a["busy_s"][core] - own.get(core, 0.0)) / wall))
             for core in a["busy_s"] if core in b["busy_s"]}
    psi = None
    if a.get("psi_some_us") is not None and b.get("psi_some_us") is not None:
        psi = (b["psi_some_us"] - a["psi_some_us"]) / 1e6 / wall
    return {"wall_s": wall, "other_busy": other, "psi_some": psi}


def probe(seconds: float = 0.4) -> dict[str, Any]:
    """Shares over ``seconds`` of idling: everything busy then is someone else's work."""
    a = sample()
    time.sleep(seconds)
    return interval_shares(a, sample())


def assess(probes: list[dict[str, Any]], window: dict[str, Any] | None, cores: list[int],
           runq_wait: float | None = None, limits: Thresholds = Thresholds()) -> dict[str, Any]:
    """Judge one level from its probes, its window reading (``interval_shares`` with the
    benchmark's own CPU taken off) and the client's run-queue wait share; only the cores the
    measurement used count. Returns ``quiet``, the ``reasons`` it is not, and the worst figures."""
    reasons = []

    def worst(readings: list[dict[str, Any]]) -> float | None:
        vals = [r["other_busy"][c] for r in readings for c in cores if c in r["other_busy"]]
        return max(vals) if vals else None

    probe_other = worst(probes)
    psis = [p["psi_some"] for p in probes if p.get("psi_some") is not None]
    probe_psi = max(psis) if psis else None
    window_other = worst([window]) if window else None
    if probe_other is not None and probe_other > limits.other_busy:
        reasons.append(f"other work before/after: {probe_other:.0%} of a core")
    if probe_psi is not None and probe_psi > limits.psi_some:
        reasons.append(f"CPU pressure before/after: {probe_psi:.0%}")
    if window_other is not None and window_other > limits.other_busy:
        reasons.append(f"other work during: {window_other:.0%} of a core")
    if runq_wait is not None and runq_wait > limits.runq_wait:
        reasons.append(f"client run-queue wait: {runq_wait:.0%}")
    return {"quiet": not reasons, "reasons": reasons, "probe_other_busy": probe_other,
            "probe_psi_some": probe_psi, "window_other_busy": window_other, "client_runq_wait": runq_wait}


def quietest(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """The attempt to publish: the first quiet one, else the one with the least other work
    (probes and window alike)."""
    for a in attempts:
        if a["quiet"]["quiet"]:
            return a

    def load(a: dict[str, Any]) -> float:
        q = a["quiet"]
        return max(v for v in (q["probe_other_busy"], q["window_other_busy"], q["probe_psi_some"], 0.0)
                   if v is not None)

    return min(attempts, key=load)
