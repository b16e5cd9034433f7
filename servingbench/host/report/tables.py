"""Per-task tables of every metric, and the server start-up table."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any

from servingbench.host import intervals
from servingbench.host.aggregate import unit_of
from servingbench.runtime.records import WINDOW as W, GpuSummary, Stats, WindowSummary
from servingbench.host.report.data import ReportData
from servingbench.runtime.typed_json import fields_of

STATS = ("p50", "p90", "p99", "mean")
# (metric, heading, unit) of the per-request distributions, in reading order.
LATENCY = [(m, heading, unit_of(m)) for m, heading in (
    (W.ttft_ms, "TTFT"), (W.tpot_ms, "TPOT"), (W.itl_ms, "ITL per token"), (W.event_gap_ms, "Event gap"),
    (W.e2e_ms, "E2E latency"))]
# Per-request distributions of the second table: decode speed and the client's own queueing.
RATE = [(m, heading, unit_of(m)) for m, heading in ((W.output_tok_s, "Output tokens/s per request"),
                                                     (W.queue_ms, "Queue wait"))]


@dataclass
class TaskRow:
    arm: str
    mode: str
    concurrency: int | None
    status: str
    reason: str
    source: str
    stats: dict[str, dict[str, float | None]] = field(default_factory=dict)  # metric -> stat -> value
    hidden: dict[str, dict[str, str | None]] = field(default_factory=dict)  # metric -> stat -> why not shown
    values: dict[str, Any] = field(default_factory=dict)  # single figures


def task_tables(data: ReportData) -> dict[str, list[TaskRow]]:
    """task -> one row per model x arm x mode x concurrency level (failed and missing cells too)."""
    out: dict[str, list[TaskRow]] = {}
    for task in data.cfg.tasks:
        rows: list[TaskRow] = []
        for model in data.cfg.models:
            for arm in data.arms:
                for mode in data.cfg.modes:
                    e = data.entry("cell", arm, model, task, mode)
                    if e is None:
                        continue
                    if e.status != "ok":
                        rows.append(TaskRow(arm, mode, None, e.status, e.reason, data.source(e),
                                            values={"model": model}))
                        continue
                    mem = e.result.memory
                    gpu = mem.gpu or GpuSummary()
                    seen: set[int] = set()
                    for w in data.windows(e):
                        c = w.concurrency
                        if c in seen:  # run.trials: one row per level, with the figures over its trials
                            continue
                        seen.add(c)
                        w = _over_trials(data, e, w)
                        row = TaskRow(arm, mode, c, "ok", "", data.source(e), values={
                            "model": model,
                            **{k: getattr(w, k) for k in WINDOW_COLUMNS},
                            "prompt_tokens_mean": w.prompt_tokens.mean if w.prompt_tokens else None,
                            "host_rss_peak_bytes": mem.host_rss_peak_bytes,
                            "host_rss_mean_bytes": mem.host_rss_mean_bytes,
                            "gpu_used_peak_bytes": gpu.device_used_peak_bytes,
                            "energy_per_output_token_j": gpu.energy_per_output_token_j,
                        })
                        for metric, _, _ in LATENCY + RATE:
                            row.stats[metric] = {s: data.value(e, metric, s, c) for s in STATS}
                            n = data.value(e, metric, "n", c)
                            row.hidden[metric] = {s: None if n is None or intervals.shown(int(n), s)
                                                  else intervals.why_not_shown(int(n), s) for s in STATS}
                        rows.append(row)
        out[task] = rows
    return out


# The window's single figures a task table shows (its template's cells), in the table's terms.
WINDOW_COLUMNS = (W.throughput_req_s, W.throughput_output_tok_s, W.completed, W.requests, W.failed, W.window_s,
                  W.output_tokens_requested_total, W.output_tokens_actual_total, W.output_tokens_mismatched)


def _over_trials(data: ReportData, e: Any, w: WindowSummary) -> WindowSummary:
    """A window's single figures, or their figures over all trials of its level (run.trials > 1)."""
    if data.cfg.run.trials <= 1 or w.trial is None:
        return w
    pooled = {k: data.value(e, k, "value", w.concurrency) for k in WINDOW_COLUMNS}
    ints = {f.name for f in fields_of(WindowSummary) if f.metadata["unit"] == "requests"}  # whole requests
    return dataclasses.replace(w, **{k: int(v) if k in ints else v for k, v in pooled.items() if v is not None})


@dataclass
class StartupRow:
    arm: str
    model: str
    started: int  # servers this arm started for this model (one per cell that did not reuse one)
    reused: int
    median_s: float | None
    min_s: float | None
    max_s: float | None
    sources: list[str]


def startup_table(data: ReportData) -> list[StartupRow]:
    rows = []
    for arm in data.arms:
        for model in data.cfg.models:
            mine = [e for e in data.ok if e.arm == arm and e.model == model]
            times = [e.result.server.startup_s for e in mine
                     if not e.result.server.reused and e.result.server.startup_s is not None]
            reused = sum(1 for e in mine if e.result.server.reused)
            rows.append(StartupRow(arm, model, len(times), reused,
                                   statistics.median(times) if times else None,
                                   min(times) if times else None, max(times) if times else None,
                                   [data.source(e) for e in mine]))
    return rows


@dataclass
class ServerViewRow:
    """Client TTFT, ITL and TPOT beside the server's own for one window: its /metrics histograms
    (vLLM, SGLang) or its per-request timings (llama.cpp); None where one side lacks a figure."""

    arm: str
    model: str
    task: str
    concurrency: int
    client_ttft_ms: float | None
    server_ttft_ms: float | None
    client_itl_ms: float | None
    server_itl_ms: float | None
    source: str
    server_source: str = ""  # what the server's figure is (the adapter's words)
    client_tpot_ms: float | None = None
    server_tpot_ms: float | None = None

    @property
    def gap_ms(self) -> float | None:
        if self.client_ttft_ms is None or self.server_ttft_ms is None:
            return None
        return self.client_ttft_ms - self.server_ttft_ms

    @property
    def gap_pct(self) -> float | None:
        gap = self.gap_ms
        return 100.0 * gap / self.server_ttft_ms if gap is not None and self.server_ttft_ms else None


def server_view_table(data: ReportData) -> list[ServerViewRow]:
    """Every stream window whose server reported its own TTFT or ITL: the network and client share."""
    rows = []
    for e in data.ok:
        for w in data.windows(e):
            server_ttft, server_itl = w.server_ttft_ms_mean, w.server_itl_ms_mean
            client_ttft, client_itl = _mean(w.ttft_ms), _mean(w.itl_ms)
            if (server_ttft is not None and client_ttft is not None) or (server_itl is not None and client_itl is not None):
                what = e.task if e.kind == "cell" else f"{e.kind.removeprefix('sweep_')} sweep"
                rows.append(ServerViewRow(e.arm, e.model, what, int(w.concurrency), client_ttft, server_ttft,
                                          client_itl, server_itl, data.source(e), w.server_timing_source or "",
                                          _mean(w.tpot_ms), w.server_tpot_ms_mean))
    return rows


def _mean(stats: Stats | None) -> float | None:
    return stats.mean if stats is not None else None
