"""Compare two runs cell by cell: the ratio B/A of each headline figure, and whether it is more
than noise.

Each run is a folder holding ``summary.parquet`` or ``summary.csv`` (a results folder, a
published folder, or a checkout with ``results/``). Times and memory: B/A < 1 means B is
lower (better); throughput and capacity: B/A > 1 means B is higher (better). Where both runs
carry a 95% interval for a figure (servingbench.host.intervals), overlapping intervals read *no
significant difference* instead of a ratio; disjoint ones give the ratio, marked significant.
A figure without an interval in either run keeps its bare ratio, marked as such.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from servingbench.host.aggregate import read_summary
from servingbench.runtime.records import CAPACITY, GPU, MEMORY, WINDOW as W
from servingbench.host.report.fmt import num

CELL = ["framework", "model", "task", "mode", "kind"]
KEYS = CELL + ["concurrency", "prompt_tokens_target", "slo"]
NO_DIFFERENCE = "no significant difference"
# (metric, statistic, short label, better) of the headline figures.
HEADLINE = [
    (W.ttft_ms, "p50", "TTFT p50 (ms)", "lower"),
    (W.tpot_ms, "p50", "TPOT p50 (ms)", "lower"),
    (W.e2e_ms, "p50", "E2E p50 (ms)", "lower"),
    (W.throughput_req_s, "value", "req/s", "higher"),
    (W.throughput_output_tok_s, "value", "output tok/s", "higher"),
    (MEMORY.host_rss_peak_bytes, "value", "host RSS peak", "lower"),
    (GPU.device_used_peak_bytes, "value", "GPU used peak", "lower"),
    (CAPACITY.capacity_req_s_per_gpu, "value", "capacity req/s per GPU", "higher"),
    (CAPACITY.capacity_req_s, "value", "capacity req/s per server", "higher"),
]
COLUMNS = KEYS + ["metric", "statistic", "unit", "a", "b", "ratio_b_over_a", "better", "status_a", "status_b",
                  "a_low", "a_high", "b_low", "b_high", "significant"]
_FILL = {"concurrency": -1, "prompt_tokens_target": -1, "slo": ""}  # NA keys must match NA to NA


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: its status and reason."""
    return df.groupby(CELL, sort=False, dropna=False).agg(status=("status", "first"), reason=("reason", "first")) \
        .reset_index()


def _filled(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col, na in _FILL.items():
        df[col] = (df[col].astype("Int64") if col != "slo" else df[col].astype("string")).fillna(na)
    return df


def _headline_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The headline figures of one run (over all trials where it ran several), each with its
    95% interval where the summary has one (columns low, high)."""
    wanted = pd.DataFrame([(m, s, b) for m, s, _, b in HEADLINE], columns=["metric", "statistic", "better"])
    ok = _filled(df[(df["status"] == "ok") & df["trial"].isna()])
    rows = ok.merge(wanted, on=["metric", "statistic"])[KEYS + ["metric", "statistic", "unit", "better", "value"]]
    ends = ok[ok["statistic"].str.contains("_ci95_", regex=False)].copy()
    ends["end"] = ends["statistic"].str.rsplit("_", n=1).str[-1]
    ends["statistic"] = ends["statistic"].str.replace(r"_ci95_(low|high)$", "", regex=True)
    ci = ends.pivot_table(index=KEYS + ["metric", "statistic"], columns="end", values="value", aggfunc="first")
    ci = ci.reindex(columns=["low", "high"]).reset_index()
    return rows.merge(ci, on=KEYS + ["metric", "statistic"], how="left")


def compare(run_a_dir: str | Path, run_b_dir: str | Path) -> pd.DataFrame:
    """Long table: one row per cell x window x headline figure present in either run, plus one row
    (metric "") per cell that has no figure in either run, so no cell is silently left out."""
    a, b = read_summary(run_a_dir), read_summary(run_b_dir)
    ha, hb = _headline_rows(a), _headline_rows(b)
    on = KEYS + ["metric", "statistic"]
    merged = ha.merge(hb, on=on, how="outer", suffixes=("_a", "_b")).rename(
        columns={"low_a": "a_low", "high_a": "a_high", "low_b": "b_low", "high_b": "b_high"})
    merged["unit"] = merged["unit_a"].fillna(merged["unit_b"])
    merged["better"] = merged["better_a"].fillna(merged["better_b"])
    merged = merged.rename(columns={"value_a": "a", "value_b": "b"})
    ok = (merged["a"] > 0) & (merged["b"] > 0)
    merged["ratio_b_over_a"] = (merged["b"] / merged["a"]).where(ok)
    merged["significant"] = [_significant(*ends) for ends in
                             zip(merged["a_low"], merged["a_high"], merged["b_low"], merged["b_high"])]
    for col in ("concurrency", "prompt_tokens_target"):
        merged[col] = merged[col].astype("Int64").replace(-1, pd.NA)
    merged["slo"] = merged["slo"].replace("", pd.NA)
    ca, cb = _cells(a), _cells(b)
    status = ca.merge(cb, on=CELL, how="outer", suffixes=("_a", "_b"))
    status["status_a"] = status["status_a"].fillna("absent")
    status["status_b"] = status["status_b"].fillna("absent")
    merged = merged.merge(status[CELL + ["status_a", "status_b"]], on=CELL, how="left")
    bare = status[~status.set_index(CELL).index.isin(merged.set_index(CELL).index)]
    if len(bare):
        extra = bare[CELL + ["status_a", "status_b"]].assign(metric="", statistic="", unit="", better="")
        merged = pd.concat([merged, extra], ignore_index=True)
    order = {m: i for i, (m, *_rest) in enumerate(HEADLINE)}
    merged["_m"] = merged["metric"].map(order).fillna(len(order))
    merged = merged.sort_values(["framework", "model", "kind", "task", "mode", "concurrency",
                                 "prompt_tokens_target", "_m"], na_position="first", kind="stable")
    return merged[COLUMNS].reset_index(drop=True)


def _significant(a_low: float, a_high: float, b_low: float, b_high: float) -> bool | None:
    """Disjoint 95% intervals: True; overlapping: False; either missing: None (no claim).
    A capacity interval may have no upper end (NaN): it reaches to infinity."""
    if pd.isna(a_low) or pd.isna(b_low):
        return None
    a_hi = math.inf if pd.isna(a_high) else a_high
    b_hi = math.inf if pd.isna(b_high) else b_high
    return not (a_low <= b_hi and b_low <= a_hi)


def _verdict(ratio: object, significant: object) -> str:
    if significant is False:
        return NO_DIFFERENCE
    if significant is True:
        return f"{_ratio(ratio)} (significant)"
    return f"{_ratio(ratio)} (no interval)" if isinstance(ratio, float) and math.isfinite(ratio) else "—"


def _geomean(values: pd.Series) -> float | None:
    vals = [v for v in values if isinstance(v, float) and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def _ratio(v: object) -> str:
    return f"{num(v)}×" if isinstance(v, float) and math.isfinite(v) else "—"


def to_markdown(df: pd.DataFrame, a_name: str = "A", b_name: str = "B") -> str:
    """The comparison as Markdown: a summary per figure, then a row per cell window."""
    lines = ["# servingbench compare: B/A", "", f"- A: `{a_name}`", f"- B: `{b_name}`",
             "- B/A < 1: B lower (better for times and memory); B/A > 1: B higher (better for throughput, capacity).",
             f"- Where both runs have a 95% interval for a figure: \"{NO_DIFFERENCE}\" when they overlap, else the "
             "ratio marked (significant); (no interval): one run has none (too few requests, or a single "
             "window's throughput).", "",
             "## Summary (geometric mean of B/A over the cells both runs have)", "",
             "| figure | better | cells | geo-mean B/A | min | max | significant | no significant difference |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for metric, stat, label, better in HEADLINE:
        sel = df[(df["metric"] == metric) & (df["statistic"] == stat)]
        r = sel["ratio_b_over_a"].dropna()
        if len(r):
            sig = sel["significant"]
            lines.append(f"| {label} | {better} | {len(r)} | {_ratio(_geomean(r))} | {_ratio(r.min())} | "
                         f"{_ratio(r.max())} | {int((sig == True).sum())} | {int((sig == False).sum())} |")  # noqa: E712
    lines += ["", "## Per cell (B/A)", ""]
    shown = [h for h in HEADLINE if (df["metric"] == h[0]).any()]
    lines.append("| cell | concurrency | " + " | ".join(h[2] for h in shown) + " |")
    lines.append("|---|---:|" + "---:|" * len(shown))
    fig = df[df["metric"] != ""]
    per_cell = {}  # cell-level figures (memory) repeat on each of the cell's windows
    for r in fig[fig["concurrency"].isna() & fig["slo"].isna()].itertuples(index=False):
        per_cell[(r.framework, r.model, r.task, r.mode, r.kind, r.metric)] = _verdict(r.ratio_b_over_a, r.significant)
    windows = fig[fig["concurrency"].notna() | fig["slo"].notna()].groupby(KEYS, sort=False, dropna=False)
    for key, g in windows:
        cell = dict(zip(KEYS, key))
        by = {m: _verdict(v, s) for m, v, s in zip(g["metric"], g["ratio_b_over_a"], g["significant"])}
        name = f"{cell['framework']}/{cell['model']}/" + (
            f"{cell['task']}/{cell['mode']}" if cell["kind"] == "cell" else
            f"capacity-{cell['task']} at SLO set {cell['slo']}" if cell["kind"] == "sweep_capacity" else cell["kind"])
        if not pd.isna(cell["prompt_tokens_target"]):
            name += f" @{cell['prompt_tokens_target']} tokens"
        vals = [by.get(m, per_cell.get((*key[:5], m), "—")) for m, *_ in shown]
        conc = "—" if pd.isna(cell["concurrency"]) else cell["concurrency"]
        lines.append(f"| {name} | {conc} | " + " | ".join(vals) + " |")
    cells = df.drop_duplicates(CELL)
    odd = cells[(cells["status_a"] != "ok") | (cells["status_b"] != "ok")]
    if len(odd):
        lines += ["", "## Cells not comparable", "", "| cell | A | B |", "|---|---|---|"]
        for r in odd.itertuples(index=False):
            name = f"{r.framework}/{r.model}/" + (f"{r.task}/{r.mode}" if r.kind == "cell" else r.kind)
            lines.append(f"| {name} | {r.status_a} | {r.status_b} |")
    return "\n".join(lines) + "\n"


def compare_main(a: str | Path, b: str | Path) -> str:
    """``servingbench compare RUN_A RUN_B``: the Markdown comparison."""
    return to_markdown(compare(a, b), str(a), str(b))
