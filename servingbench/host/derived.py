"""Summary rows derived on the host from what a result file holds (host side).

- Goodput: every window of a cell or a concurrency/context sweep, judged against every SLO set
  of the config (with the task's overrides), from the stored per-request records, with the one
  definition in servingbench.runtime.slo that the capacity search uses at run time. So changing an SLO
  set re-judges finished windows without rerunning them.
- Intervals (servingbench.host.intervals): a bootstrap interval for p50, p90, p99 and the mean of
  TTFT, TPOT and E2E in every window, from its requests; with ``run.trials`` > 1, the figures
  over all trials (trial NA: the mean of the trials' figures) with a Student-t interval.
- Capacity: a capacity search's per-SLO-set answers, from its result file, with an interval
  (``capacity_interval``).

Each reads a result as its typed record (servingbench.runtime.records.CellResult) and yields
rows, dicts of tidy-table columns (concurrency, prompt_tokens_target, trial, slo, metric,
statistic, value, and optionally reason); aggregate adds the entry's own columns.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from servingbench.host import intervals
from servingbench.host.config import Config, slo_specs
from servingbench.runtime.metrics import tpot_ms
from servingbench.runtime.records import (CAPACITY as C, WINDOW as W, CapacitySearch, CellResult, RequestRecord,
                                          SloVerdict, Stats, WindowSummary, capacity_metrics, summary_metrics, to_json)
from servingbench.runtime.slo import request_figures, window_verdict
from servingbench.runtime.spec import SLOSpec

Row = dict[str, Any]
# A capacity result's figures (servingbench.runtime.records.CapacityResult): the capacities themselves,
# with intervals, and what was measured in the capacity window (summary metric -> field).
CAPACITY_VALUES = tuple(m for m, f in capacity_metrics().items() if m == f)
CAPACITY_AT = {m: f for m, f in capacity_metrics().items() if m != f}
GOODPUT = summary_metrics(SloVerdict)  # goodput and the window's verdict, per SLO set


INTERVAL_METRICS = (W.ttft_ms, W.tpot_ms, W.e2e_ms)  # the per-request figures the report ranks
# Figures pooled over trials: per-request distributions (their statistics' mean over trials) and
# window figures (mean for rates, sum for counts).
POOLED_STATS = (W.ttft_ms, W.tpot_ms, W.itl_ms, W.e2e_ms, W.output_tok_s, W.queue_ms)
POOLED_MEANS = (W.throughput_req_s, W.throughput_output_tok_s, W.window_s)
POOLED_SUMS = (W.requests, W.completed, W.failed, W.output_tokens_requested_total, W.output_tokens_actual_total,
               W.output_tokens_mismatched)


def request_values(records: list[RequestRecord], metric: str) -> list[float]:
    """One per-request figure of the completed requests, as the window summary computed it."""
    out = []
    for r in records:
        if r.error:
            continue
        v = tpot_ms(r) if metric == W.tpot_ms else getattr(r, metric)
        if v is not None:
            out.append(float(v))
    return out


def interval_rows(result: CellResult, records: list[RequestRecord], arm: str, model: str, task: str,
                  mode: str) -> Iterator[Row]:
    """Bootstrap intervals per window, and figures over trials with their t intervals. The
    entry's names (``arm`` ... ``mode``, as the config has them) seed the bootstraps."""
    if result.kind == "sweep_capacity":
        return
    per_window = by_window(records)
    groups: dict[tuple, list[WindowSummary]] = {}
    for i, w in enumerate(result.windows):
        key = dict(concurrency=w.concurrency, prompt_tokens_target=w.prompt_tokens_target,
                   trial=result.trial_of(w), slo=None)
        groups.setdefault((w.concurrency, w.prompt_tokens_target), []).append(w)
        for metric in INTERVAL_METRICS:
            values = request_values(per_window.get(i, []), metric)
            for stat in intervals.STATS:
                seed = intervals.seed_for(result.kind, arm, model, task, mode, i, metric, stat)
                ci = intervals.bootstrap(values, stat, seed)
                if ci is not None:
                    yield dict(key, metric=metric, statistic=f"{stat}_ci95_low", value=ci[0])
                    yield dict(key, metric=metric, statistic=f"{stat}_ci95_high", value=ci[1])
    for (conc, target), ws in groups.items():
        if len(ws) < 2 or result.trial_of(ws[0]) is None:
            continue
        key = dict(concurrency=conc, prompt_tokens_target=target, trial=None, slo=None)
        yield from _pooled(key, ws)


def _pooled(key: Row, windows: list[WindowSummary]) -> Iterator[Row]:
    """One concurrency level's trials as one figure each: mean over trials, t interval."""
    def emit(metric: str, stat: str, values: list[float]) -> Iterator[Row]:
        vals = [v for v in values if v is not None and math.isfinite(v)]
        if len(vals) != len(values) or not vals:
            return
        yield dict(key, metric=metric, statistic=stat, value=sum(vals) / len(vals))
        ci = intervals.t_interval(vals)
        if ci is not None:
            yield dict(key, metric=metric, statistic=f"{stat}_ci95_low", value=ci[0])
            yield dict(key, metric=metric, statistic=f"{stat}_ci95_high", value=ci[1])

    for metric in POOLED_STATS:
        stats: list[Stats | None] = [getattr(w, metric) for w in windows]
        if any(st is None for st in stats):
            continue
        for stat in intervals.STATS:
            yield from emit(metric, stat, [getattr(st, stat) for st in stats])
        # Each trial's percentile needs its own support: the smallest trial's count decides it.
        yield dict(key, metric=metric, statistic="n", value=min(st.n for st in stats))
    for metric in POOLED_MEANS:
        yield from emit(metric, "value", [getattr(w, metric) for w in windows])
    for metric in POOLED_SUMS:
        yield dict(key, metric=metric, statistic="value", value=sum(getattr(w, metric) or 0 for w in windows))
    yield dict(key, metric="trials", statistic="value", value=len(windows))


def by_window(records: list[RequestRecord]) -> dict[int, list[RequestRecord]]:
    out: dict[int, list[RequestRecord]] = {}
    for r in records:
        if not r.warmup:
            out.setdefault(r.window, []).append(r)
    return out


def goodput_rows(cfg: Config, result: CellResult, task: str, records: list[RequestRecord]) -> Iterator[Row]:
    """Goodput and the window verdict of every window, per SLO set (``task``'s, as the config
    names it)."""
    if result.kind == "sweep_capacity":
        return
    slos = slo_specs(cfg, task if task in cfg.tasks else "")
    stream = result.cell.mode == "stream"
    per_window = by_window(records)
    for i, w in enumerate(result.windows):
        recs = per_window.get(i, [])
        if not recs or not w.window_s:
            continue
        key = dict(concurrency=w.concurrency, prompt_tokens_target=w.prompt_tokens_target, trial=result.trial_of(w))
        for s in slos:
            v = window_verdict(recs, w.window_s, s, stream)
            if v is None:
                continue
            for metric, name in GOODPUT.items():
                value = getattr(v, name)
                if value is not None:
                    yield dict(key, slo=s.name, metric=metric, statistic="value", value=value)


MISS = 1e18  # a failed request's figure in a bootstrap: slower than any limit (inf would give NaN)


def window_sureness(records: list[RequestRecord], slo: SLOSpec, seed: int) -> str | None:
    """'pass' when every limit holds even at the upper end of its percentile's 95% interval,
    'fail' when some limit is broken even at the lower end, else None (too close to call, or
    too few requests for an interval)."""
    figs = [request_figures(r) for r in records]
    verdicts = []
    for name, limit in slo.limits().items():
        values = [MISS if f is None or f[name] is None else f[name] for f in figs]
        ci = intervals.bootstrap(values, f"p{slo.percentile:g}", intervals.seed_for(seed, slo.name, name))
        if ci is None:
            return None
        verdicts.append("fail" if ci[0] > limit else "pass" if ci[1] <= limit else None)
    if "fail" in verdicts:
        return "fail"
    return "pass" if all(v == "pass" for v in verdicts) else None


def capacity_interval(result: CellResult, records: list[RequestRecord], name: str) -> tuple[float | None, float | None]:
    """(low, high) of a capacity: low is the highest rate at or below the capacity whose window
    met the SLO set even at the pessimistic end of its 95% intervals (0 if none did), high the
    lowest rate at or above the lowest failing one whose window broke it even at the optimistic
    end; where no window broke it surely, the highest rate that broke it at all (the furthest
    evidence the search has); None when no window broke it: no upper bound. It holds the
    search's resolution (the capacity lies between the highest passing and the lowest failing
    rate) and the sampling noise of each verdict."""
    cap = result.capacity
    res = cap.results[name]
    if res.capacity_req_s is None:
        return None, None
    slo = SLOSpec(**next(s for s in cap.slos if s["name"] == name))
    # The cell's keys as the file spells them seed the bootstraps (str of the JSON object).
    cell = to_json(result.cell)
    per_window = by_window(records)
    sure_pass, sure_fail, failed = [], [], []
    for w in result.windows:
        if w.phase != "search" or not w.valid:
            continue
        rate, verdict = w.offered_rate_req_s, w.slo[name]
        if verdict.window_met is False:
            failed.append(rate)
        if "max_in_flight" in verdict.bound_by:
            sure_fail.append(rate)
            continue
        sure = window_sureness(per_window.get(w.window, []), slo, intervals.seed_for(cell, w.window))
        (sure_pass if sure == "pass" else sure_fail if sure == "fail" else []).append(rate)
    capacity = res.capacity_req_s
    floor = res.lowest_failing_req_s if res.lowest_failing_req_s is not None else capacity
    low = max((r for r in sure_pass if r <= capacity), default=0.0)
    high = min((r for r in sure_fail if r >= floor), default=None)
    if high is None:
        high = max((r for r in failed if r >= floor), default=None)
    if res.settled_at_zero_load:
        # Not met one request at a time, by the probe (servingbench.runtime.capacity): 0 is the upper end
        # too when the probe broke the set surely.
        probe = window_sureness(per_window.get(0, []), slo, intervals.seed_for(cell, 0))
        high = 0.0 if probe == "fail" else high
    return low, high


def req_scale(metric: str, cap: CapacitySearch) -> float | None:
    """Scale from capacity_req_s to ``metric`` that needs no capacity window, or None."""
    if metric == C.capacity_req_s:
        return 1.0
    if metric == C.capacity_req_s_per_gpu and cap.gpus_per_server:
        return 1.0 / cap.gpus_per_server
    return None


def capacity_rows(result: CellResult, records: list[RequestRecord] | None = None) -> Iterator[Row]:
    """The answers of a capacity search, one group of rows per SLO set, with their intervals
    (from the per-request records, when given)."""
    cap = result.capacity
    if result.kind != "sweep_capacity" or not cap:
        return
    key = dict(concurrency=None, prompt_tokens_target=None, trial=None)
    for name, res in cap.results.items():
        reason = f"{res.status}: {res.reason}"
        bounds = capacity_interval(result, records, name) if records is not None else (None, None)
        rate = res.capacity_req_s
        for metric in CAPACITY_VALUES:
            value = getattr(res, metric)
            if value is None:
                continue
            yield dict(key, slo=name, metric=metric, statistic="value", value=value, reason=reason)
            # Rates scale to tokens/s and per GPU as the capacity itself does (tokens per request at
            # the capacity window; 1 / GPUs). Capacity 0 has no tokens per request, so only its req/s
            # bounds scale (1 / GPUs is known without a window): the others keep only a 0 bound.
            scale = value / rate if rate else req_scale(metric, cap)
            for stat, bound in (("value_ci95_low", bounds[0]), ("value_ci95_high", bounds[1])):
                if bound is not None and (scale is not None or bound == 0):
                    yield dict(key, slo=name, metric=metric, statistic=stat, value=bound * (scale or 0.0),
                               reason=reason)
        for metric, field in CAPACITY_AT.items():
            if getattr(res, field) is not None:
                yield dict(key, slo=name, metric=metric, statistic="value", value=getattr(res, field), reason=reason)
    for metric, name in capacity_metrics(CapacitySearch).items():  # the search's own totals
        yield dict(key, slo=None, metric=metric, statistic="value", value=getattr(cap, name))
