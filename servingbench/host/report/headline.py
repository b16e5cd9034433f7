"""Per model: which arm is ahead on TTFT, TPOT and throughput, by how much over the next, and
whether that margin is more than noise: each arm's figure has a 95% interval (a bootstrap over
the requests of its windows, or a t interval over run.trials windows), and two arms whose
intervals overlap are a tie. An arm is called best only where its interval is clear of every
other's (``Ranking.verdict``); without every interval the order is unranked."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from servingbench.host import intervals
from servingbench.host.derived import by_window, request_values
from servingbench.runtime.records import WINDOW as W, WindowSummary
from servingbench.host.report.data import ReportData


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
    intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)  # arm -> 95% interval
    interval_basis: str = ""
    thin: dict[str, str] = field(default_factory=dict)  # arm -> why its figure has no interval

    @property
    def tie(self) -> bool | None:
        """Do the winner's and the runner-up's intervals overlap? None: one has no interval."""
        if len(self.ranked) < 2:
            return None
        return intervals.overlap(self.intervals.get(self.ranked[0][0]), self.intervals.get(self.ranked[1][0]))

    @property
    def verdict(self) -> str:
        """What the measurement can say about the order, the rule of the capacity ranking:
        "best" only where the first arm's 95% interval is clear of every other ranked arm's;
        "tie" where another arm's overlaps it (``tied`` lists them); "unranked" where some ranked
        arm has no interval, so no order is sure; "only" for a single arm; "none" for no arm."""
        if not self.ranked:
            return "none"
        if len(self.ranked) == 1:
            return "only"
        if any(self.intervals.get(arm) is None for arm, _ in self.ranked):
            return "unranked"
        return "best" if len(self.tied) == 1 else "tie"

    @property
    def tied(self) -> list[str]:
        """The first arm and every ranked arm not surely behind it (empty without every interval)."""
        bounds = [self.intervals.get(arm) for arm, _ in self.ranked]
        if not bounds or any(b is None for b in bounds):
            return []
        return [self.ranked[0][0]] + [arm for (arm, _), b in zip(self.ranked[1:], bounds[1:])
                                      if intervals.ranks([bounds[0], b], self.better)[1] == 1]

    @property
    def winner(self) -> tuple[str, float] | None:
        """The first arm by point figure (best only where ``verdict`` says "best")."""
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


def _caveat(r: Ranking, arm: str, windows: list[WindowSummary]) -> None:
    """Note an arm whose figure covers unequal work or lost requests: it may win by doing less."""
    short = sum(w.output_tokens_mismatched for w in windows)
    failed = sum(w.failed for w in windows)
    notes = ([f"{short} requests returned another output length than requested"] if short else []) + \
        ([f"{failed} requests failed"] if failed else [])
    if notes:
        r.caveats[arm] = "; ".join(notes)


def _trial_interval(data: ReportData, entries: list, metric: str, stat: str, concurrency: int) -> tuple | None:
    """t interval over trials of the geometric mean over ``entries`` (one per task) of a figure."""
    trials = data.cfg.run.trials
    per_trial = []
    for t in range(trials):
        vals = [data.value(e, metric, stat, concurrency, trial=t) for e in entries]
        if any(v is None or v <= 0 for v in vals):
            return None
        per_trial.append(_geomean(vals))
    return intervals.t_interval(per_trial)


def _interval(data: ReportData, r: Ranking, arm: str, entries: list, metric: str, stat: str,
              concurrency: int) -> None:
    """The arm's 95% interval, or why it has none."""
    if data.cfg.run.trials > 1:
        ci = _trial_interval(data, entries, metric, stat, concurrency)
        why = f"fewer than 2 complete trials of {metric}"
    else:
        samples = []
        for e in entries:
            wins = by_window(data.requests(e))
            idx = [i for i, w in enumerate(data.windows(e)) if w.concurrency == concurrency]
            samples.append([v for i in idx for v in request_values(wins.get(i, []), metric)])
        ci = intervals.bootstrap_geomean(samples, stat, intervals.seed_for("headline", arm, *[e.label for e in entries],
                                                                            metric, stat))
        n = min((len(x) for x in samples), default=0)
        why = (intervals.why_not_shown(n, stat) if not intervals.shown(n, stat) else
               f"{n} requests in its smallest window: an interval needs at least {intervals.MIN_INTERVAL_N}")
    r.intervals[arm] = ci
    if ci is None:
        r.thin[arm] = why


def _rank(r: Ranking) -> Ranking:
    r.ranked.sort(key=lambda kv: kv[1], reverse=(r.better == "higher"))
    return r


def _ranked_arms(data: ReportData, r: Ranking) -> list[str]:
    """The arms that run every task; an arm restricted to a task list (a ``-prefix-cache`` twin)
    is not ranked here but beside its twin under "Conversations and prefix caching"."""
    arms = []
    for arm in data.arms:
        spec = data.cfg.frameworks.get(arm)
        if spec is not None and spec.tasks is not None:
            r.unranked.append((arm, f"runs only {', '.join(spec.tasks)}: compared with its twin under "
                                    "Conversations and prefix caching"))
        else:
            arms.append(arm)
    return arms


def _common_tasks(ran: dict[str, set[str]], order: list[str]) -> list[str]:
    """The tasks to compare arms on: of every set of arms, the one whose tasks run by all of its
    arms give the most arm x task figures (ties: more tasks), so that an arm run on few tasks, or
    a task run by few arms, leaves the others' comparison whole instead of shrinking it. An arm
    outside the set lacks one of its tasks (the set is maximal) and is reported unranked."""
    best: tuple[int, int, list[str]] = (0, 0, [])
    names = sorted(ran)
    for k in range(1, len(names) + 1):
        for group in itertools.combinations(names, k):
            common = set.intersection(*(ran[a] for a in group))
            key = (k * len(common), len(common))
            if key > best[:2]:
                best = (*key, [t for t in order if t in common])
    return best[2]


def _per_task(data: ReportData, model: str, metric: str, stat: str, mode: str, concurrency: int,
              label: str, unit: str, better: str, what: str) -> Ranking:
    """Geometric mean over the tasks of one statistic of the cells of ``mode`` at ``concurrency``.

    Arms are compared on the tasks all of them have run (``_common_tasks``); tasks left out are
    said. An arm that lacks one of those tasks, or whose cell failed, is not ranked, so that none
    wins by skipping the hard part."""
    r = Ranking(label, unit, better, "")
    arms = _ranked_arms(data, r)

    def figure(arm: str, task: str) -> tuple[Any, float | None]:
        e = data.entry("cell", arm, model, task, mode)
        return e, (data.value(e, metric, stat, concurrency) if e and e.status == "ok" else None)

    ran = {arm: {t for t in data.cfg.tasks if (e := data.entry("cell", arm, model, t, mode)) is not None
                 and e.status != "missing"} for arm in arms}
    tasks = _common_tasks(ran, list(data.cfg.tasks))
    left_out = [t for t in data.cfg.tasks if t not in tasks]
    r.basis = (f"geometric mean over the tasks ({', '.join(tasks) or 'none'}) of each {mode} cell's {what} "
               f"at concurrency {concurrency}" + (f"; left out, not run by every arm compared: {', '.join(left_out)}"
                                                  if left_out else ""))
    r.interval_basis = _basis(data, "request")
    for arm in arms if tasks else ():
        values, srcs, missing, windows, entries = [], [], [], [], []
        for task in tasks:
            e, v = figure(arm, task)
            if v is None:
                missing.append(f"{task}/{mode}" + (f" ({e.status})" if e and e.status != "ok" else ""))
            else:
                values.append(v)
                srcs.append(data.source(e))
                entries.append(e)
                windows += [w for w in data.windows(e) if w.concurrency == concurrency]
        g = _geomean(values) if not missing else None
        if g is None:
            r.unranked.append((arm, "no figure for " + ", ".join(missing) if missing else "non-positive figure"))
        else:
            r.ranked.append((arm, g))
            r.sources[arm] = srcs
            _caveat(r, arm, windows)
            if stat != "value":
                _interval(data, r, arm, entries, metric, stat, concurrency)
            else:  # a window's throughput has no per-request sample: only trials give it an interval
                ci = _trial_interval(data, entries, metric, stat, concurrency) if data.cfg.run.trials > 1 else None
                r.intervals[arm] = ci
                if ci is None:
                    r.thin[arm] = "one window per cell: no interval (run.trials >= 2 gives one)"
    return _rank(r)


def _basis(data: ReportData, what: str) -> str:
    trials = data.cfg.run.trials
    if trials > 1:
        return f"Student-t over the {trials} trials (run.trials) of each window"
    if what == "request":
        return "bootstrap over each window's requests, resampled per task (2000 resamples, seeded)"
    return "none: one window gives one throughput figure (set run.trials >= 2 for an interval)"


def _throughput(data: ReportData, model: str, metric: str, label: str, unit: str) -> Ranking:
    """At the concurrency sweep's highest level; from cell windows when no arm has a sweep."""
    sweep = data.cfg.sweeps.concurrency
    sweeps = {arm: data.entry("sweep_concurrency", arm, model) for arm in data.arms}
    if sweep is not None and any(e and e.status == "ok" for e in sweeps.values()):
        level = max(sweep.levels)
        r = Ranking(label, unit, "higher",
                    f"concurrency sweep ({sweep.task}, {sweep.mode}) at its highest level, concurrency {level}")
        for arm in _ranked_arms(data, r):
            e = sweeps[arm]
            v = data.value(e, metric, "value", level) if e and e.status == "ok" else None
            if v is None:
                why = f"sweep {e.status}" if e and e.status != "ok" else f"no window at concurrency {level}"
                r.unranked.append((arm, why))
            else:
                r.ranked.append((arm, v))
                r.sources[arm] = [data.source(e)]
                _caveat(r, arm, [w for w in data.windows(e) if w.concurrency == level])
                lo, hi = (data.value(e, metric, f"value_ci95_{end}", level) for end in ("low", "high"))
                r.intervals[arm] = (lo, hi) if lo is not None and hi is not None else None
                if r.intervals[arm] is None:
                    r.thin[arm] = "one window: no interval (run.trials >= 2 gives one)"
        r.interval_basis = _basis(data, "window")
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
            rows.append(_per_task(data, model, W.ttft_ms, "p50", "stream", low, "TTFT p50", "ms", "lower",
                                  "TTFT p50"))
            rows.append(_per_task(data, model, W.tpot_ms, "p50", "stream", low, "TPOT p50", "ms", "lower",
                                  "TPOT p50"))
        rows.append(_throughput(data, model, W.throughput_req_s, "Throughput", "req/s"))
        rows.append(_throughput(data, model, W.throughput_output_tok_s, "Output throughput", "tokens/s"))
        out[model] = rows
    return out
