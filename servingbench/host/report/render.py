"""Render the report: one HTML file with inline CSS, inline data and the Vega JavaScript inlined.

The page makes no network request: the vega / vega-lite / vega-embed bundle comes from the
``vl-convert-python`` package and is written into the page, and every plot's data sits in its
spec. The output depends only on the results folder and the config (no render time is printed),
so the same results give the same page.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

import servingbench
from servingbench.host.config import Config
from servingbench.host import intervals
from servingbench.host.report import bandwidth, fmt, plots, workloads
from servingbench.host.report.capacity import STATUS_WORDS, capacity_rankings
from servingbench.host.report.data import ReportData
from servingbench.host.report.flags import flag_counts, flags
from servingbench.host.report.headline import headline
from servingbench.host.report.provenance import arm_facts, framework_table, load_frameworks, matrix, run_facts
from servingbench.host.report.tables import LATENCY, RATE, STATS, server_view_table, startup_table, task_tables
from servingbench.runtime.results import atomic_write_text

SECTIONS = [("capacity", "Capacity at the SLO"), ("how-to-read", "How to read this"), ("headline", "Headline"),
            ("flags", "Flags"),
            ("plots", "Plots"), ("tasks", "Per task"), ("bandwidth-floor", "Bandwidth floor"),
            ("server-startup", "Server start-up"), ("provenance", "Provenance"), ("calibration", "Calibration")]


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """vega + vega-lite + vega-embed as one script (defines window.vegaEmbed), matched to altair."""
    import altair as alt
    import vl_convert as vlc

    want = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    version = want if want in vlc.get_vegalite_versions() else None  # None: vl-convert's newest
    js = vlc.javascript_bundle(vl_version=version)
    if "</script" in js.lower():  # would end the inline <script> early
        raise RuntimeError("vega bundle contains '</script'; cannot inline it")
    return js


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("servingbench.host.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(num=fmt.num, mib=fmt.mib, ratio=fmt.ratio, pct=fmt.pct)
    return env


def _css() -> str:
    return resources.files("servingbench.host.report").joinpath("templates/report.css").read_text(encoding="utf-8")


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' that could close or confuse it."""
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build_context(cfg: Config, results_dir: str | Path, matrix_spec_path: str | Path | None = None,
                  allow_stale: bool = False, source: str = "the config") -> dict[str, Any]:
    """Everything the template shows (useful to tests: the page's figures without parsing HTML)."""
    data = ReportData.load(cfg, results_dir, allow_stale, source)
    floor, floor_notes = bandwidth.floor_rows(data)
    plot_list = plots.all_plots(data)
    pareto = {"id": "plot-pareto", "title": "Throughput per GPU against speed per user",
              "caption": "", "spec": plots.pareto(data), "empty": "no capacity search finished", "section": "capacity"}
    plot_list.insert(0, pareto)
    flag_list = flags(data, floor)
    for p in plot_list:
        p["json"] = _script_json(p["spec"]) if p["spec"] else None
    wl = workloads.context(data)
    if wl["tasks"]:
        wl["turn_plot_json"] = _script_json(wl.pop("turn_plot")) if wl["turn_plot"] else None
    sections = list(SECTIONS)
    if wl["tasks"]:  # only a config with conversations, shared prefixes or traces has this section
        sections.insert(sections.index(("tasks", "Per task")) + 1, ("workloads", "Conversations and prefix caching"))
    return {
        "cfg": cfg, "data": data, "version": servingbench.__version__, "workloads": wl,
        "sections": sections, "matrix": matrix(data),
        "capacity": capacity_rankings(data), "pareto": pareto, "status_words": STATUS_WORDS,
        "min_interval_n": intervals.MIN_INTERVAL_N, "run_facts": run_facts(data), "arm_facts": arm_facts(data),
        "frameworks": framework_table(data, load_frameworks(matrix_spec_path)),
        "headline": headline(data), "flags": flag_list, "flag_counts": flag_counts(flag_list),
        "tasks": task_tables(data), "latency_metrics": LATENCY, "rate_metrics": RATE, "stats": STATS,
        "plots": plot_list, "arm_colors": plots.arm_colors(data),
        "startup": startup_table(data),
        "floor": floor, "floor_grid": bandwidth.floor_grid(floor), "floor_notes": floor_notes, "known_gpus": bandwidth.known_gpu_table(),
        "server_view": server_view_table(data),
        "calibration": data.calibration,
        "calibration_json": json.dumps(data.calibration, indent=2, sort_keys=True) if data.calibration else None,
        "results_dir": str(results_dir),
    }


def render_html(context: dict[str, Any], inline_js: bool = True) -> str:
    template = _env().get_template("index.html.j2")
    return template.render(**context, css=_css(), vega_js=vega_bundle() if inline_js else "")


def render_report(cfg: Config, results_dir: str | Path, out_html: str | Path,
                  matrix_spec_path: str | Path | None = None, allow_stale: bool = False,
                  source: str = "the config") -> Path:
    """Render ``out_html`` (e.g. report/index.html) from ``results_dir``; written atomically.
    Results measured under other settings are refused, or with ``allow_stale`` flagged."""
    html = render_html(build_context(cfg, results_dir, matrix_spec_path, allow_stale, source))
    out = Path(out_html)
    atomic_write_text(out, html)
    os.chmod(out, 0o644)  # atomic_write_text's temp file is 0600; the page is meant to be shared
    return out
