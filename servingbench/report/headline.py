"""Per model: which arm wins on TTFT, TPOT and throughput, and by how much over the next best."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from servingbench.report.data import ReportData


@dataclass
class Ranking:
    """One headline figure for one model: arms ranked best first."""

    label: str
    unit: str
    better: str  # "lower" | "higher"
    basis: str  # how each arm's figure was computed, in words
    ranked: list[tuple[str, float]] = field(default_factory=list)
    unranked: list[tuple[str, str]] = field(default_factory=list)  # (arm, why not ranked)
    sources: dict[str, list[str]] = field(default_factory=dict)  # arm -> files behind its figure
    caveats: dict[str, str] = field(default_factory=dict)  # arm -> why its figure is not like for like

    @property
    def winner(self) -> tuple[str, float] | None:
        return self.ranked[0] if self.ranked else None

    @property
    def runner_up(self) -> tuple[str, float] | None:
        return self.ranked[1] if len(self.ranked) > 1 else None

    @property
    def margin(self) -> float | None:
        """How many times better the winner is than the next best (>= 1)."""
        if len(self.ranked) < 2:
            return None
        best, nxt = self.ranked[0][1], self.ranked[1][1]
        if self.better == "lower":
            return nxt / best if best > 0 else None
        return best / nxt if nxt > 0 else None


def _geomean(values: list[float]) -> float | None:
    if not values or any(v <= 0 for v in values):
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _caveat(r: Ranking, arm: str, windows: list[dict]) -> None:
    """Note an arm whose figure covers unequal work or lost requests: it may win by doing less."""
    short = sum(w["output_tokens_mismatched"] for w in windows)
    failed = sum(w["failed"] for w in windows)
    notes = ([f"{short} requests returned another output length than requested"] if short else []) + \
        ([f"{failed} requests failed"] if failed else [])
    if notes:
        r.caveats[arm] = "; ".join(notes)


def _rank(r: Ranking) -> Ranking:
    r.ranked.sort(key=lambda kv: kv[1], reverse=(r.better == "higher"))
    return r


def _per_task(data: ReportData, model: str, metric: str, stat: str, mode: str, concurrency: int,
              label: str, unit: str, better: str, what: str) -> Ranking:
    """Geometric mean over every task of one statistic of the cells of ``mode`` at ``concurrency``."""
    tasks = list(data.cfg.tasks)
    r = Ranking(label, unit, better,
                f"geometric mean over the tasks ({', '.join(tasks)}) of each {mode} cell's {what} "
                f"at concurrency {concurrency}")
    for arm in data.arms:
        values, srcs, missing, windows = [], [], [], []
        for task in tasks:
            e = data.entry("cell", arm, model, task, mode)
            v = data.value(e, metric, stat, concurrency) if e and e.status == "ok" else None
            if v is None:
                missing.append(f"{task}/{mode}" + (f" ({e.status})" if e and e.status != "ok" else ""))
            else:
                values.append(v)
                srcs.append(data.source(e))
                windows += [w for w in data.windows(e) if w["concurrency"] == concurrency]
        g = _geomean(values) if not missing else None
        if g is None:
            r.unranked.append((arm, "no figure for " + ", ".join(missing) if missing else "non-positive figure"))
        else:
            r.ranked.append((arm, g))
            r.sources[arm] = srcs
            _caveat(r, arm, windows)
    return _rank(r)


def _throughput(data: ReportData, model: str, metric: str, label: str, unit: str) -> Ranking:
    """At the concurrency sweep's highest level; from cell windows when no arm has a sweep."""
    sweep = data.cfg.sweeps.concurrency
    sweeps = {arm: data.entry("sweep_concurrency", arm, model) for arm in data.arms}
    if sweep is not None and any(e and e.status == "ok" for e in sweeps.values()):
        level = max(sweep.levels)
        r = Ranking(label, unit, "higher",
                    f"concurrency sweep ({sweep.task}, {sweep.mode}) at its highest level, concurrency {level}")
        for arm, e in sweeps.items():
            v = data.value(e, metric, "value", level) if e and e.status == "ok" else None
            if v is None:
                why = f"sweep {e.status}" if e and e.status != "ok" else f"no window at concurrency {level}"
                r.unranked.append((arm, why))
            else:
                r.ranked.append((arm, v))
                r.sources[arm] = [data.source(e)]
                _caveat(r, arm, [w for w in data.windows(e) if w["concurrency"] == level])
        return _rank(r)
    mode = "stream" if "stream" in data.cfg.modes else data.cfg.modes[0]
    level = max(data.cfg.run.cell_concurrency)
    return _per_task(data, model, metric, "value", mode, level, label, unit, "higher",
                     "measured-window throughput (no concurrency sweep results)")


def headline(data: ReportData) -> dict[str, list[Ranking]]:
    """model -> its rankings (TTFT p50, TPOT p50, req/s, output tokens/s)."""
    out: dict[str, list[Ranking]] = {}
    low = min(data.cfg.run.cell_concurrency)
    for model in data.cfg.models:
        rows = []
        if data.has_stream():
            rows.append(_per_task(data, model, "ttft_ms", "p50", "stream", low, "TTFT p50", "ms", "lower",
                                  "TTFT p50"))
            rows.append(_per_task(data, model, "tpot_ms", "p50", "stream", low, "TPOT p50", "ms", "lower",
                                  "TPOT p50"))
        rows.append(_throughput(data, model, "throughput_req_s", "Throughput", "req/s"))
        rows.append(_throughput(data, model, "throughput_output_tok_s", "Output throughput", "tokens/s"))
        out[model] = rows
    return out
