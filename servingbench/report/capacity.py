"""The answer to the question: per model x task x SLO set, the arms ranked by capacity per GPU.

Capacity at an SLO set is what a capacity search (servingbench.capacity) found: the highest
offered rate whose window met the set. Its interval comes from the tidy table
(servingbench.derived.capacity_interval). Two arms whose intervals overlap are a *tie*: the
measurement cannot order them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from servingbench.records import CAPACITY as C
from servingbench.report.data import ReportData
from servingbench.spec import SLO_LIMITS

STATUS_WORDS = {"found": "", "not_met": "not met at any rate tried",
                "below_lowest": "below the lowest rate tried (search stopped)", "not_broken": "at least (never broken)",
                "imprecise": "search ended before its precision", "client_limited": "at least (client limit)",
                "no_data": "no valid window"}


@dataclass
class ArmCapacity:
    arm: str
    source: str
    status: str
    reason: str
    req_s: float | None = None
    low: float | None = None  # interval of req_s (per GPU, or per server on CPU)
    high: float | None = None  # None: no upper bound
    tok_s: float | None = None
    tok_low: float | None = None
    tok_high: float | None = None
    joules_per_token: float | None = None
    gpu_peak_bytes: float | None = None
    gpu_util_pct: float | None = None
    bound_by: list[str] = field(default_factory=list)
    windows: int = 0
    tie_with_above: bool = False
    rank: int | None = None

    @property
    def lower_bound_only(self) -> bool:
        return self.status in ("not_broken", "client_limited")

    @property
    def upper_bound_only(self) -> bool:
        """Every rate tried failed, and the search stopped before it shrank further."""
        return self.status == "below_lowest"

    def overlaps(self, other: "ArmCapacity") -> bool:
        lo_a, hi_a = self.low if self.low is not None else self.req_s, self.high if self.high is not None else math.inf
        lo_b, hi_b = other.low if other.low is not None else other.req_s, other.high if other.high is not None else math.inf
        return lo_a <= hi_b and lo_b <= hi_a


@dataclass
class CapacityRanking:
    model: str
    task: str
    slo: str
    definition: str  # the SLO set as it applies to the task, in words
    per: str  # "GPU" or "server"
    ranked: list[ArmCapacity] = field(default_factory=list)
    unranked: list[ArmCapacity] = field(default_factory=list)  # failed, missing, no answer

    @property
    def any_tie(self) -> bool:
        return any(a.tie_with_above for a in self.ranked)


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
                r = CapacityRanking(model, task, name, definition, per)
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
                    a = ArmCapacity(arm, data.source(e), res.status, res.reason,
                                    req_s=v(C.capacity_req_s), low=v(C.capacity_req_s, "value_ci95_low"),
                                    high=v(C.capacity_req_s, "value_ci95_high"),
                                    tok_s=v(C.capacity_output_tok_s),
                                    tok_low=v(C.capacity_output_tok_s, "value_ci95_low"),
                                    tok_high=v(C.capacity_output_tok_s, "value_ci95_high"),
                                    joules_per_token=data.value(e, C.energy_per_output_token_j, slo=name),
                                    gpu_peak_bytes=data.value(e, C.gpu_used_peak_bytes, slo=name),
                                    gpu_util_pct=data.value(e, C.gpu_utilization_mean_pct, slo=name),
                                    bound_by=list(res.bound_by), windows=search.search_windows)
                    (r.ranked if a.req_s is not None else r.unranked).append(a)
                r.ranked.sort(key=lambda a: -a.req_s)
                for i, a in enumerate(r.ranked):
                    a.rank = i + 1
                    a.tie_with_above = i > 0 and a.overlaps(r.ranked[i - 1])
                out.append(r)
    return out


def stale_capacity(data: ReportData) -> list[tuple[str, str, str]]:
    """(cell, file, why) of capacity results searched at SLO sets other than this config's."""
    from servingbench.config import slo_specs

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
