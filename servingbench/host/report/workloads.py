"""The report's view of the workloads beyond single prompts: TTFT per conversation turn, prefix
caching on against off per framework, and scheduled against achieved arrivals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import altair as alt
import pandas as pd

from servingbench.host.aggregate import Entry
from servingbench.runtime.records import ArrivalSummary, Stats
from servingbench.runtime.frameworks import get_adapter
from servingbench.host.report import plots
from servingbench.host.report.data import ReportData
from servingbench.host.task_kinds import workload_of

WORKLOADS = ("multiturn", "shared_prefix", "trace")


def workload_tasks(data: ReportData, kinds: tuple[str, ...] = WORKLOADS) -> list[str]:
    return [t for t, spec in data.cfg.tasks.items() if workload_of(spec) in kinds]


def caching_on(data: ReportData, arm: str) -> bool:
    """The prefix-caching setting an arm's servers run with (its own, else run.prefix_caching)."""
    own = data.cfg.frameworks[arm].prefix_caching
    return data.cfg.run.prefix_caching if own is None else own


def _adapter(data: ReportData, arm: str) -> str:
    return data.cfg.frameworks[arm].adapter or arm


def _twin_key(data: ReportData, arm: str) -> tuple:
    """What must be equal for two arms to differ only in prefix caching."""
    a = data.cfg.frameworks[arm]
    return (_adapter(data, arm), tuple(a.server_args), tuple(sorted(a.env.items())), a.image, a.max_batch_tokens)


def _p50(stats: Stats | None) -> float | None:
    return stats.p50 if stats else None


# --------------------------------------------------------------------------- per turn


@dataclass
class TurnRow:
    arm: str
    model: str
    mode: str
    concurrency: int | None
    caching: bool
    status: str
    reason: str
    source: str
    turns: list[dict[str, Any]] = field(default_factory=list)  # turn, ttft p50, e2e p50, prompt tokens mean, n

    @property
    def last_over_first(self) -> float | None:
        """TTFT p50 of the last turn / of the first: about 1 when it stays flat as history grows."""
        if len(self.turns) < 2 or not self.turns[0]["ttft_p50"] or self.turns[-1]["ttft_p50"] is None:
            return None
        return self.turns[-1]["ttft_p50"] / self.turns[0]["ttft_p50"]


def turn_tables(data: ReportData) -> dict[str, list[TurnRow]]:
    """multiturn task -> one row per arm x model x mode x concurrency (failed and missing too)."""
    out: dict[str, list[TurnRow]] = {}
    for task in workload_tasks(data, ("multiturn",)):
        rows = []
        for model, arm, mode, e in _cells(data, task):
            if e.status != "ok":
                rows.append(TurnRow(arm, model, mode, None, caching_on(data, arm), e.status, e.reason, data.source(e)))
                continue
            for w in data.windows(e):
                turns = [{"turn": t.turn, "ttft_p50": _p50(t.ttft_ms), "e2e_p50": _p50(t.e2e_ms),
                          "prompt_tokens_mean": t.prompt_tokens.mean if t.prompt_tokens else None,
                          "completed": t.completed, "requests": t.requests}
                         for t in w.per_turn or ()]
                rows.append(TurnRow(arm, model, mode, w.concurrency, caching_on(data, arm), "ok", "",
                                    data.source(e), turns))
        out[task] = rows
    return out


def _cells(data: ReportData, task: str) -> Iterator[tuple[str, str, str, Entry]]:
    """(model, arm, mode, entry) of every cell of ``task`` the config asks for, in page order."""
    for model in data.cfg.models:
        for arm in data.arms:
            for mode in data.cfg.modes:
                e = data.entry("cell", arm, model, task, mode)
                if e is not None:
                    yield model, arm, mode, e


def turn_plot(data: ReportData) -> dict[str, Any] | None:
    """TTFT p50 against turn index, one line per arm (lowest concurrency, stream cells)."""
    rows = []
    for task, table in turn_tables(data).items():
        low = min((r.concurrency for r in table if r.concurrency is not None), default=None)
        for r in table:
            if r.status != "ok" or r.mode != "stream" or r.concurrency != low:
                continue
            for t in r.turns:
                if t["ttft_p50"] is not None:
                    rows.append({"task": task, "model": r.model, "arm": r.arm, "turn": t["turn"], "ttft": t["ttft_p50"],
                                 "prompt_tokens": t["prompt_tokens_mean"], "n": t["completed"], "source": r.source})
    if not rows:
        return None
    chart = alt.Chart(pd.DataFrame(rows)).mark_line(point=True, strokeWidth=2).encode(
        x=alt.X("turn:O", title="turn of the conversation"),
        y=alt.Y("ttft:Q", title="TTFT p50 (ms)"),
        color=plots._color(data),
        tooltip=["arm:N", "turn:O", alt.Tooltip("ttft:Q", title="TTFT p50 (ms)", format=",.2f"),
                 alt.Tooltip("prompt_tokens:Q", title="prompt tokens (mean)", format=",.0f"), "n:Q",
                 alt.Tooltip("source:N", title="file")],
    ).properties(width=plots._panel_width(data), height=200).facet(
        row=alt.Row("task:N", title=None), column=alt.Column("model:N", title=None, sort=list(data.cfg.models)))
    return plots._finish(chart)


# --------------------------------------------------------------------------- caching on / off


@dataclass
class CachingRow:
    """One framework set-up on one workload window: caching off against on."""

    framework: str  # the adapter (arm family)
    model: str
    task: str
    kind: str  # multiturn | shared_prefix | trace
    mode: str
    concurrency: int | None
    arm_off: str | None
    arm_on: str | None
    off: dict[str, Any] = field(default_factory=dict)
    on: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    sources: list[str] = field(default_factory=list)

    def ratio(self, key: str) -> float | None:
        a, b = self.off.get(key), self.on.get(key)
        return b / a if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 else None


def _window_figures(data: ReportData, e: Entry | None, concurrency: int | None, kind: str) -> dict[str, Any]:
    """TTFT p50 of all requests and of those whose prefix repeats, req/s, hit rates of one window."""
    if e is None or e.status != "ok":
        return {"status": e.status if e else "not run", "reason": e.reason if e else ""}
    w = next((w for w in data.windows(e) if w.concurrency == concurrency), None)
    if w is None:
        return {"status": "missing", "reason": f"no window at concurrency {concurrency}"}
    repeat = None
    if kind == "multiturn" and w.per_turn:
        repeat = _p50(w.per_turn[-1].ttft_ms)
    elif w.prefix:
        repeat = _p50(w.prefix.seen.ttft_ms)
    cache = w.server_prefix_cache
    settings = e.result.server.server_settings or {}
    return {"status": "ok", "ttft_p50": _p50(w.ttft_ms), "e2e_p50": _p50(w.e2e_ms), "repeat_ttft_p50": repeat,
            "req_s": w.throughput_req_s, "server_hit_rate": cache.hit_rate if cache else None,
            "expected_hit_rate": w.prefix.hit_rate_expected if w.prefix else None,
            "emptied": settings.get("prefix_cache_emptied"), "source": data.source(e)}


def caching_table(data: ReportData) -> list[CachingRow]:
    """Every framework set-up on every workload task: on ÷ off where both ran, and why not."""
    rows: list[CachingRow] = []
    seen: set[tuple] = set()
    for arm in data.arms:
        key = _twin_key(data, arm)
        if key in seen:
            continue
        seen.add(key)
        twins = [a for a in data.arms if _twin_key(data, a) == key]
        off = next((a for a in twins if not caching_on(data, a)), None)
        on = next((a for a in twins if caching_on(data, a)), None)
        framework = _adapter(data, arm)
        why_none = get_adapter(framework).prefix_cache_unavailable(data.cfg.frameworks[arm].server_args)
        for task in workload_tasks(data):
            kind = workload_of(data.cfg.tasks[task])
            for model in data.cfg.models:
                for mode in data.cfg.modes:
                    e_off = data.entry("cell", off, model, task, mode) if off else None
                    e_on = data.entry("cell", on, model, task, mode) if on else None
                    if e_off is None and e_on is None:
                        continue
                    levels = sorted({w.concurrency for e in (e_off, e_on) if e and e.status == "ok"
                                     for w in data.windows(e)}) or [None]
                    for c in levels:
                        row = CachingRow(framework, model, task, kind, mode, c, off, on,
                                         _window_figures(data, e_off, c, kind) if off else {},
                                         _window_figures(data, e_on, c, kind) if on else {})
                        row.note = _note(why_none, off, on, row)
                        row.sources = [f["source"] for f in (row.off, row.on) if f.get("source")]
                        rows.append(row)
    return rows


def _note(why_none: str | None, off: str | None, on: str | None, row: CachingRow) -> str:
    if why_none:
        return f"{why_none}: every prompt is computed in full"
    if on is None:
        return "measured with caching off only: add an arm with prefix_caching: true to compare"
    if off is None:
        return "measured with caching on only: add the same arm with prefix_caching off to compare"
    bad = [f"{side} {f['status']}" for side, f in (("off", row.off), ("on", row.on)) if f.get("status") != "ok"]
    if bad:
        return "no ratio: " + ", ".join(bad)
    if row.on.get("emptied") is False:
        return "the caching server was reused without emptying its cache: earlier cells may have warmed it"
    return ""


# --------------------------------------------------------------------------- arrivals


@dataclass
class ArrivalRow:
    arm: str
    model: str
    task: str
    mode: str
    status: str
    reason: str
    source: str
    arrivals: ArrivalSummary | None = None
    limit_ms: float | None = None


def arrival_table(data: ReportData) -> list[ArrivalRow]:
    """Trace cells: scheduled against achieved arrival times (the client's lateness)."""
    rows = []
    for task in workload_tasks(data, ("trace",)):
        limit = data.cfg.tasks[task].max_lateness_ms
        for model, arm, mode, e in _cells(data, task):
            arr = next((w.arrivals for w in data.windows(e) if w.arrivals), None)
            rows.append(ArrivalRow(arm, model, task, mode, e.status, e.reason, data.source(e), arr, limit))
    return rows


def context(data: ReportData) -> dict[str, Any]:
    """What the workloads section shows; empty when the config has no such task."""
    if not workload_tasks(data):
        return {"tasks": []}
    return {"tasks": workload_tasks(data), "turns": turn_tables(data), "caching": caching_table(data),
            "arrivals": arrival_table(data), "turn_plot": turn_plot(data)}
