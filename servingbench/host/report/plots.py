"""Vega-Lite specs (built with altair) of the report's plots; None where a plot has no data.

Each function returns a plain dict that the page embeds inline; vega-embed draws it offline.
Per-request points come from ``*.requests.jsonl``; the black marks are the file's own
p50/p90/p99, so a plot can be checked against the tables. Like the tables, a plot shows a
percentile only where its window's sample supports it (servingbench.host.intervals.shown).
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from servingbench.host import intervals
from servingbench.runtime.records import WINDOW as W
from servingbench.host.report.data import ReportData
from servingbench.runtime.slo import LIMIT

MIB = 2**20
# Colour-blind-safe (Okabe-Ito), one colour per arm everywhere on the page.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
STAT_SHAPES = {"p50": "diamond", "p90": "triangle-right", "p99": "square"}


def arm_colors(data: ReportData) -> dict[str, str]:
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(data.arms)}


def _color(data: ReportData, legend: bool = True) -> alt.Color:
    colors = arm_colors(data)
    return alt.Color("arm:N", title="arm", scale=alt.Scale(domain=list(colors), range=list(colors.values())),
                     legend=alt.Legend(orient="top") if legend else None)


def _panel_width(data: ReportData) -> int:
    return max(180, min(420, 760 // max(1, len(data.cfg.models))))


def _finish(chart: alt.TopLevelMixin) -> dict[str, Any]:
    chart = chart.configure(font="system-ui, -apple-system, Segoe UI, Roboto, sans-serif") \
        .configure_view(stroke="#e5e7eb") \
        .configure_axis(labelColor="#374151", titleColor="#111827", gridColor="#f0f1f3", labelFontSize=11) \
        .configure_header(labelFontSize=12, labelFontWeight="bold", labelColor="#111827") \
        .configure_legend(labelFontSize=12, titleFontSize=12)
    with alt.data_transformers.disable_max_rows():
        return chart.to_dict()


def _supported(stats: Any, stat: str) -> float | None:
    """A window's statistic, or None where its sample cannot support it (p90 of 3 requests)."""
    value = getattr(stats, stat)
    return value if value is not None and intervals.shown(stats.n, stat) else None


def _low(data: ReportData) -> int:
    return min(data.cfg.run.cell_concurrency)


def distribution(data: ReportData, metric: str, label: str, modes: tuple[str, ...]) -> dict[str, Any] | None:
    """Per-request values of ``metric`` per arm (and mode), one panel per task x model."""
    low, rows = _low(data), []
    for e in data.ok:
        if e.kind != "cell" or e.mode not in modes:
            continue
        series = f"{e.arm} · {e.mode}" if len(modes) > 1 else e.arm
        base = {"model": e.model, "task": e.task, "arm": e.arm, "series": series}
        for r in data.requests(e):
            value = getattr(r, metric)
            if r.concurrency == low and not r.error and value is not None:
                rows.append({**base, "value": round(float(value), 3), "what": "request", "prompt_id": r.prompt_id})
        for w in data.windows(e):
            stats = getattr(w, metric)
            if w.concurrency == low and stats is not None:
                rows += [{**base, "value": _supported(stats, s), "what": s, "source": data.source(e)}
                         for s in STAT_SHAPES if _supported(stats, s) is not None]
    if not rows:
        return None
    df = pd.DataFrame(rows)
    series_order = sorted(df["series"].unique(), key=lambda s: (data.arms.index(s.split(" · ")[0]), s))
    x = alt.X("value:Q", title=f"{label} (ms)", scale=alt.Scale(zero=False))
    y = alt.Y("series:N", title=None, sort=series_order)
    base = alt.Chart(df)
    ticks = base.transform_filter(alt.datum.what == "request").mark_tick(thickness=1.5, size=13, opacity=0.5) \
        .encode(x=x, y=y, color=_color(data), tooltip=[
            alt.Tooltip("series:N", title="arm"), alt.Tooltip("prompt_id:N", title="prompt"),
            alt.Tooltip("value:Q", title=f"{label} (ms)", format=",.2f")])
    marks = base.transform_filter(alt.datum.what != "request").mark_point(filled=True, size=45, color="#111827") \
        .encode(x=x, y=y, shape=alt.Shape("what:N", title="from result file",
                                          scale=alt.Scale(domain=list(STAT_SHAPES), range=list(STAT_SHAPES.values())),
                                          legend=alt.Legend(orient="top")),
                tooltip=[alt.Tooltip("series:N", title="arm"), alt.Tooltip("what:N", title="statistic"),
                         alt.Tooltip("value:Q", title=f"{label} (ms)", format=",.2f"),
                         alt.Tooltip("source:N", title="file")])
    chart = alt.layer(ticks, marks).properties(width=_panel_width(data), height=alt.Step(16)).facet(
        row=alt.Row("task:N", title=None, sort=list(data.cfg.tasks), header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("model:N", title=None, sort=list(data.cfg.models)),
    ).resolve_scale(x="independent")
    return _finish(chart)


def throughput_vs_concurrency(data: ReportData) -> dict[str, Any] | None:
    rows = []
    for e in data.ok:
        if e.kind != "sweep_concurrency":
            continue
        for w in data.windows(e):
            for measure, key in (("requests/s", W.throughput_req_s), ("output tokens/s", W.throughput_output_tok_s)):
                if getattr(w, key) is not None:
                    rows.append({"model": e.model, "arm": e.arm, "measure": measure, "value": getattr(w, key),
                                 "concurrency": w.concurrency, "completed": w.completed,
                                 "failed": w.failed, "source": data.source(e)})
    if not rows:
        return None
    levels = sorted({r["concurrency"] for r in rows})
    chart = alt.Chart(pd.DataFrame(rows)).mark_line(point=True, strokeWidth=2).encode(
        x=alt.X("concurrency:Q", title="concurrent requests (closed loop)",
                scale=alt.Scale(type="log", base=2), axis=alt.Axis(values=levels, format="d")),
        y=alt.Y("value:Q", title=None),
        color=_color(data),
        tooltip=["arm:N", "concurrency:Q", alt.Tooltip("value:Q", format=",.2f"), "measure:N",
                 "completed:Q", "failed:Q", alt.Tooltip("source:N", title="file")],
    ).properties(width=_panel_width(data), height=190).facet(
        row=alt.Row("measure:N", title=None, sort=["requests/s", "output tokens/s"]),
        column=alt.Column("model:N", title=None, sort=list(data.cfg.models)),
    ).resolve_scale(y="independent")
    return _finish(chart)


def latency_vs_prompt(data: ReportData) -> dict[str, Any] | None:
    rows = []
    for e in data.ok:
        if e.kind != "sweep_context":
            continue
        for w in data.windows(e):
            for measure, key in (("E2E p50 (ms)", W.e2e_ms), ("TTFT p50 (ms)", W.ttft_ms)):
                s = getattr(w, key)
                if s is not None and _supported(s, "p50") is not None:
                    rows.append({"model": e.model, "arm": e.arm, "measure": measure, "value": s.p50,
                                 "p90": _supported(s, "p90"), "p99": _supported(s, "p99"), "n": s.n,
                                 "prompt_tokens": w.prompt_tokens_target, "source": data.source(e)})
    if not rows:
        return None
    chart = alt.Chart(pd.DataFrame(rows)).mark_line(point=True, strokeWidth=2).encode(
        x=alt.X("prompt_tokens:Q", title="prompt length (tokens)"),
        y=alt.Y("value:Q", title=None),
        color=_color(data),
        tooltip=["arm:N", "prompt_tokens:Q", "measure:N", alt.Tooltip("value:Q", title="p50", format=",.2f"),
                 alt.Tooltip("p90:Q", format=",.2f"), alt.Tooltip("p99:Q", format=",.2f"), "n:Q",
                 alt.Tooltip("source:N", title="file")],
    ).properties(width=_panel_width(data), height=190).facet(
        row=alt.Row("measure:N", title=None, sort=["E2E p50 (ms)", "TTFT p50 (ms)"]),
        column=alt.Column("model:N", title=None, sort=list(data.cfg.models)),
    ).resolve_scale(y="independent")
    return _finish(chart)


def memory(data: ReportData) -> dict[str, Any] | None:
    """Highest peak over every cell and sweep of an arm and model (the figure that decides fit)."""
    measures = [("host RSS peak (MiB)", lambda m: m.host_rss_peak_bytes),
                ("GPU used after load (MiB)", lambda m: m.gpu.device_used_after_load_bytes if m.gpu else None),
                ("GPU used peak (MiB)", lambda m: m.gpu.device_used_peak_bytes if m.gpu else None)]
    rows = []
    for arm in data.arms:
        for model in data.cfg.models:
            mine = [e for e in data.ok if e.arm == arm and e.model == model]
            for measure, get in measures:
                vals = [(get(e.result.memory), e) for e in mine if get(e.result.memory) is not None]
                if vals:
                    v, e = max(vals, key=lambda ve: ve[0])
                    rows.append({"arm": arm, "model": model, "measure": measure, "value": round(v / MIB, 1),
                                 "cell": e.label, "cells": len(vals), "source": data.source(e)})
    if not rows:
        return None
    present = [m for m, _ in measures if any(r["measure"] == m for r in rows)]
    chart = alt.Chart(pd.DataFrame(rows)).mark_bar(height={"band": 0.7}).encode(
        x=alt.X("value:Q", title="MiB"),
        y=alt.Y("arm:N", title=None, sort=data.arms),
        color=_color(data, legend=False),
        tooltip=["arm:N", "model:N", "measure:N", alt.Tooltip("value:Q", title="MiB", format=",.1f"),
                 alt.Tooltip("cell:N", title="highest in"), alt.Tooltip("cells:Q", title="cells measured"),
                 alt.Tooltip("source:N", title="file")],
    ).properties(width=_panel_width(data), height=alt.Step(22)).facet(
        row=alt.Row("measure:N", title=None, sort=present, header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("model:N", title=None, sort=list(data.cfg.models)),
    ).resolve_scale(x="independent")
    return _finish(chart)


def output_tokens_per_s(data: ReportData) -> dict[str, Any] | None:
    low, rows = _low(data), []
    for e in data.ok:
        if e.kind != "cell" or e.mode != "stream":
            continue
        for w in data.windows(e):
            s = w.output_tok_s
            if w.concurrency == low and s is not None and _supported(s, "p50") is not None:
                rows.append({"arm": e.arm, "model": e.model, "task": e.task, "value": s.p50,
                             "p90": _supported(s, "p90"), "mean": s.mean, "n": s.n, "source": data.source(e)})
    if not rows:
        return None
    chart = alt.Chart(pd.DataFrame(rows)).mark_bar(height={"band": 0.7}).encode(
        x=alt.X("value:Q", title="output tokens/s per request, p50"),
        y=alt.Y("arm:N", title=None, sort=data.arms),
        color=_color(data),
        tooltip=["arm:N", "model:N", "task:N", alt.Tooltip("value:Q", title="p50", format=",.1f"),
                 alt.Tooltip("p90:Q", format=",.1f"), alt.Tooltip("mean:Q", format=",.1f"), "n:Q",
                 alt.Tooltip("source:N", title="file")],
    ).properties(width=_panel_width(data), height=alt.Step(18)).facet(
        row=alt.Row("task:N", title=None, sort=list(data.cfg.tasks), header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("model:N", title=None, sort=list(data.cfg.models)),
    )
    return _finish(chart)


def pareto(data: ReportData) -> dict[str, Any] | None:
    """Per model (and searched task): output tokens/s per GPU against tokens/s per user, one line
    per arm through its capacity windows, each SLO set's TPOT limit as a per-user speed."""
    rows: list[dict[str, Any]] = []
    per = "GPU" if data.cfg.device == "cuda" else "server"
    limits: dict[str, float] = {}
    for e in data.ok:
        if e.kind != "sweep_capacity":
            continue
        cap = e.result.capacity
        gpus = cap.gpus_per_server or 1
        at = {}
        for name, res in cap.results.items():
            if res.capacity_window is not None:
                at.setdefault(res.capacity_window, []).append(name)
        for s in cap.slos:
            if s.get(LIMIT.tpot_ms):
                limits[f"{s['name']}: TPOT ≤ {s[LIMIT.tpot_ms]:g} ms"] = 1000.0 / s[LIMIT.tpot_ms]
        for w in data.windows(e):
            tpot = w.tpot_ms.p50 if w.tpot_ms else None
            if w.phase != "search" or not w.valid or not tpot or w.throughput_output_tok_s is None:
                continue
            met = [n for n, v in (w.slo or {}).items() if v.window_met]
            rows.append({"model": e.model, "task": e.task, "arm": e.arm, "what": "window",
                         "x": round(1000.0 / tpot, 3), "y": round(w.throughput_output_tok_s / gpus, 3),
                         "rate": round(w.offered_rate_req_s, 4),
                         "meets": "every SLO set" if len(met) == len(w.slo or {}) else
                         ("some SLO sets" if met else "no SLO set"),
                         "met": ", ".join(met) or "none", "capacity_for": ", ".join(at.get(w.window, [])),
                         "source": data.source(e)})
    if not rows:
        return None
    for model, task in sorted({(r["model"], r["task"]) for r in rows}):
        for label, x in limits.items():
            rows.append({"model": model, "task": task, "what": "limit", "x": x, "label": label})
    df = pd.DataFrame(rows)
    x = alt.X("x:Q", title="output tokens/s per user (1000 / median TPOT)", scale=alt.Scale(zero=False))
    y = alt.Y("y:Q", title=f"output tokens/s per {per}")
    base = alt.Chart(df)
    win = base.transform_filter(alt.datum.what == "window")
    lines = win.mark_line(strokeWidth=1.5, opacity=0.7).encode(x=x, y=y, color=_color(data), order="rate:Q")
    points = win.mark_point(size=60, filled=True).encode(
        x=x, y=y, color=_color(data),
        shape=alt.Shape("meets:N", title="window met",
                        scale=alt.Scale(domain=["every SLO set", "some SLO sets", "no SLO set"],
                                        range=["circle", "triangle-up", "cross"]), legend=alt.Legend(orient="top")),
        tooltip=["arm:N", alt.Tooltip("rate:Q", title="offered req/s"), alt.Tooltip("x:Q", title="tokens/s per user",
                                                                                     format=",.1f"),
                 alt.Tooltip("y:Q", title=f"tokens/s per {per}", format=",.1f"), alt.Tooltip("met:N", title="SLO sets met"),
                 alt.Tooltip("capacity_for:N", title="capacity window of"), alt.Tooltip("source:N", title="file")])
    rings = win.transform_filter(alt.datum.capacity_for != "").mark_point(size=260, strokeWidth=2, filled=False) \
        .encode(x=x, y=y, color=_color(data, legend=False))
    rule = base.transform_filter(alt.datum.what == "limit").mark_rule(strokeDash=[5, 4], color="#6b7280") \
        .encode(x=x, tooltip=[alt.Tooltip("label:N", title="SLO set")])
    text = base.transform_filter(alt.datum.what == "limit").mark_text(angle=270, dx=-6, dy=0, align="right",
                                                                        baseline="bottom", fontSize=10, color="#374151") \
        .encode(x=x, y=alt.value(4), text="label:N")
    chart = alt.layer(lines, points, rings, rule, text).properties(width=_panel_width(data), height=240).facet(
        row=alt.Row("task:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
        column=alt.Column("model:N", title=None, sort=list(data.cfg.models)),
    ).resolve_scale(x="independent", y="independent")
    return _finish(chart)


def _gpu_caption(data: ReportData) -> str:
    if any(e.result.memory.gpu is not None for e in data.ok):
        return "GPU: device memory used (NVML); vLLM, SGLang and TGI reserve memory up front."
    reasons = sorted({e.result.memory.gpu_unavailable_reason or "not recorded" for e in data.ok})
    return "No GPU memory figures: " + "; ".join(reasons) + "." if reasons else ""


def all_plots(data: ReportData) -> list[dict[str, Any]]:
    """(id, title, caption, spec or None, why empty) of every plot, in page order."""
    low = _low(data)
    return [
        {"id": "plot-ttft", "title": "Time to first token, per request",
         "caption": f"Stream cells at concurrency {low}. Coloured ticks: one request each (from "
                    "*.requests.jsonl); black marks: the p50/p90/p99 in the result file.",
         "spec": distribution(data, W.ttft_ms, "TTFT", ("stream",)) if data.has_stream() else None,
         "empty": "no streamed cell finished"},
        {"id": "plot-e2e", "title": "End-to-end latency, per request",
         "caption": f"All cells at concurrency {low}; sync and stream shown apart.",
         "spec": distribution(data, W.e2e_ms, "E2E latency", tuple(data.cfg.modes)),
         "empty": "no cell finished"},
        {"id": "plot-throughput", "title": "Throughput against concurrency",
         "caption": "Concurrency sweep: completed requests and output tokens over the wall time of each "
                    "measured window (failed requests are not counted; see Flags).",
         "spec": throughput_vs_concurrency(data), "empty": "no concurrency sweep finished"},
        {"id": "plot-context", "title": "Latency and TTFT against prompt length",
         "caption": "Context sweep: p50 at each prompt length (hover for n, and p90 and p99 where n supports them).",
         "spec": latency_vs_prompt(data), "empty": "no context sweep finished"},
        {"id": "plot-memory", "title": "Memory per arm",
         "caption": "Highest figure over every cell and sweep of the arm. Host: summed RSS of the server's "
                    "whole process tree. " + _gpu_caption(data),
         "spec": memory(data), "empty": "no memory figures"},
        {"id": "plot-output-tps", "title": "Output tokens per second, per request",
         "caption": f"Stream cells at concurrency {low}: each request's output tokens over its E2E time, p50.",
         "spec": output_tokens_per_s(data) if data.has_stream() else None,
         "empty": "no streamed cell finished"},
    ]
