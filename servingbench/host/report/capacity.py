"""The answer to the question: per model x task x SLO set, the arms ranked by capacity per GPU.

Capacity at an SLO set is what a capacity search (servingbench.runtime.capacity) found: the highest
offered rate whose window met the set. Its interval comes from the tidy table
(servingbench.host.derived.capacity_interval). An arm's rank is 1 + the number of arms whose interval
lies wholly above its own (servingbench.host.intervals.ranks): arms whose intervals overlap cannot be
ordered by the measurement, so they share a rank, a *tie*. A set that no arm meets (capacity 0
for every arm with a result) is not ranked at all: the report says so, with each arm's reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from servingbench.host import derived, intervals
from servingbench.runtime.records import CAPACITY as C
from servingbench.host.report import fmt
from servingbench.host.report.data import ReportData
from servingbench.runtime.spec import SLO_LIMITS

STATUS_WORDS = {"found": "", "not_met": "not met at any rate tried",
                "below_lowest": "below the lowest rate tried (search stopped)", "not_broken": "at least (never broken)",
                "imprecise": "search ended before its precision", "client_limited": "at least (client limit)",
                "no_data": "no valid window"}
ALONE_WORDS = "not met even with one request at a time"  # settled by the probe (capacity.settled_at_zero_load)


@dataclass
class ArmCapacity:
    arm: str
    source: str
    status: str
    reason: str
    req_s: float | None = None
    low: float | None = None  # interval of req_s (per GPU, or per server on CPU)
    high: float | None = None  # None: no upper bound
    lowest_failing: float | None = None  # the lowest rate that broke the set (per GPU, or per server on CPU)
    tok_s: float | None = None
    tok_low: float | None = None
    tok_high: float | None = None
    joules_per_token: float | None = None
    gpu_peak_bytes: float | None = None
    gpu_util_pct: float | None = None
    bound_by: list[str] = field(default_factory=list)
    windows: int = 0
    rank: int | None = None
    tied: bool = False  # shares its rank with another arm: their intervals overlap
    settled_alone: bool = False  # not met by the probe's requests one at a time: no rate can meet it

    @property
    def lower_bound_only(self) -> bool:
        return self.status in ("not_broken", "client_limited")

    @property
    def upper_bound_only(self) -> bool:
        """Every rate tried failed, and the search stopped before it shrank further."""
        return self.status == "below_lowest"

    @property
    def meets(self) -> bool:
        """Some window of the search met the set: a capacity above zero."""
        return self.req_s is not None and self.req_s > 0

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) for ranking: the point where an end is unknown, infinity for no upper bound."""
        return (self.low if self.low is not None else self.req_s, self.high if self.high is not None else math.inf)


@dataclass
class CapacityRanking:
    model: str
    task: str
    slo: str
    definition: str  # the SLO set as it applies to the task, in words
    per: str  # "GPU" or "server"
    hardware: str = ""  # what the searches ran on, in words ("NVIDIA H200")
    ranked: list[ArmCapacity] = field(default_factory=list)
    unranked: list[ArmCapacity] = field(default_factory=list)  # failed, missing, no answer

    @property
    def none_met(self) -> bool:
        """Every arm with an answer has capacity 0: the page says so instead of ranking zeros."""
        return bool(self.ranked) and not any(a.meets for a in self.ranked)

    @property
    def leaders(self) -> list[ArmCapacity]:
        return [a for a in self.ranked if a.rank == 1]

    @property
    def summary(self) -> str:
        """The ranking in one sentence; it names a best arm only when one is surely ahead of all."""
        if not self.ranked:
            return f"No arm has a capacity at {self.slo} yet: each is listed below with why."
        if self.none_met:
            groups: dict[str, list[str]] = {}
            for a in self.ranked:
                words = ALONE_WORDS if a.settled_alone else STATUS_WORDS[a.status] or a.status
                groups.setdefault(words, []).append(a.arm)
            who = "No arm with a result" if self.unranked else "No arm"
            return f"{who} meets {self.slo} on {self.hardware}: " + "; ".join(
                f"{_and(arms)} {words}" for words, arms in groups.items()) + "."
        top = self.leaders
        if len(self.ranked) == 1:
            return f"Only {top[0].arm} has a capacity at {self.slo}: {_capacity_words(top[0], self.per)}."
        if len(top) > 1:
            return (f"No arm is surely best at {self.slo}: {_and([a.arm for a in top])} share rank 1, "
                    f"their 95 % intervals overlap.")
        others = "every other arm with a result" if self.unranked else "every other arm"
        return (f"{top[0].arm} carries the most load at {self.slo}: {_capacity_words(top[0], self.per)}, "
                f"its 95 % interval above that of {others}.")


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _capacity_words(a: ArmCapacity, per: str) -> str:
    high = fmt.num(a.high) if a.high is not None else "no upper bound"
    at_least = "at least " if a.lower_bound_only else ""
    return f"{at_least}{fmt.num(a.req_s)} req/s per {per} [{fmt.num(a.low)} – {high}]"


def _hardware(data: ReportData, entries: list) -> str:
    """What the searches ran on, from their provenance: the GPU model, or the CPU model and count."""
    provs = [e.result.provenance for e in entries if e is not None and e.status == "ok"]
    if data.cfg.device == "cuda":
        names = sorted({p.device_name for p in provs if p.device_name})
        return " / ".join(names) or "this GPU"
    cpus = sorted({f"{p.cpu_count} logical CPUs ({p.cpu})" if p.cpu_count else p.cpu for p in provs if p.cpu})
    return " / ".join(cpus) or "this CPU"


def slo_words(slo: dict[str, Any]) -> str:
    limits = [f"{name.removesuffix('_ms').upper()} ≤ {slo[name]:g} ms" for name in SLO_LIMITS
              if slo.get(name) is not None]
    return f"p{slo['percentile']:g} " + ", ".join(limits)


def capacity_rankings(data: ReportData) -> list[CapacityRanking]:
    """Every model x searched task x SLO set, arms ranked by capacity per GPU (per server on CPU)."""
    cap = data.cfg.sweeps.capacity
    if cap is None:
        return []
    per = "GPU" if data.cfg.device == "cuda" else "server"
    suffix = "_per_gpu" if per == "GPU" else ""
    out = []
    for model in data.cfg.models:
        for task in cap.tasks:
            entries = {arm: data.entry("sweep_capacity", arm, model, task) for arm in data.arms}
            slo_names = list(cap.slos or data.cfg.slo)
            for name in slo_names:
                definition = ""
                r = CapacityRanking(model, task, name, definition, per, _hardware(data, list(entries.values())))
                for arm, e in entries.items():
                    if e is None or e.status != "ok":
                        why = "missing" if e is None else f"{e.status}: {e.reason}"
                        r.unranked.append(ArmCapacity(arm, data.source(e) if e else "", e.status if e else "missing", why))
                        continue
                    search = e.result.capacity
                    res = search.results.get(name)
                    spec = next((s for s in search.slos if s["name"] == name), None)
                    if res is None or spec is None:
                        r.unranked.append(ArmCapacity(arm, data.source(e), "other_slo",
                                                      f"searched for other SLO sets ({', '.join(search.results)})"))
                        continue
                    r.definition = r.definition or slo_words(spec)
                    v = lambda metric, stat="value": data.value(e, metric + suffix, stat, slo=name)  # noqa: E731
                    # Per GPU (or per server) as the summary's capacity rows are (derived.capacity_rows).
                    lowest, scale = res.lowest_failing_req_s, derived.req_scale(C.capacity_req_s + suffix, search)
                    a = ArmCapacity(arm, data.source(e), res.status, res.reason,
                                    req_s=v(C.capacity_req_s), low=v(C.capacity_req_s, "value_ci95_low"),
                                    high=v(C.capacity_req_s, "value_ci95_high"),
                                    tok_s=v(C.capacity_output_tok_s),
                                    tok_low=v(C.capacity_output_tok_s, "value_ci95_low"),
                                    tok_high=v(C.capacity_output_tok_s, "value_ci95_high"),
                                    joules_per_token=data.value(e, C.energy_per_output_token_j, slo=name),
                                    gpu_peak_bytes=data.value(e, C.gpu_used_peak_bytes, slo=name),
                                    gpu_util_pct=data.value(e, C.gpu_utilization_mean_pct, slo=name),
                                    bound_by=list(res.bound_by), windows=search.search_windows,
                                    settled_alone=bool(res.settled_at_zero_load),
                                    lowest_failing=None if lowest is None or scale is None else lowest * scale)
                    (r.ranked if a.req_s is not None else r.unranked).append(a)
                for a, rank in zip(r.ranked, intervals.ranks([a.bounds for a in r.ranked])):
                    a.rank = rank
                for a in r.ranked:
                    a.tied = sum(b.rank == a.rank for b in r.ranked) > 1
                # Rank first: an arm with a wide interval may share rank 1 above one with a higher point.
                r.ranked.sort(key=lambda a: (a.rank, -a.req_s))
                out.append(r)
    return out


def stale_capacity(data: ReportData) -> list[tuple[str, str, str]]:
    """(cell, file, why) of capacity results searched at SLO sets other than this config's."""
    from servingbench.host.config import slo_specs

    out = []
    for e in data.ok:
        if e.kind != "sweep_capacity":
            continue
        want = {s.name: s for s in slo_specs(data.cfg, e.task)}
        for s in e.result.capacity.slos:
            w = want.get(s["name"])
            if w is not None and (w.percentile, *(getattr(w, k) for k in SLO_LIMITS)) != \
                    (s["percentile"], *(s.get(k) for k in SLO_LIMITS)):
                out.append((e.label, data.source(e), f"searched for {s['name']} = {slo_words(s)}; "
                            f"this report's config says {slo_words(vars(w))}: rerun the search"))
    return out
