"""Rows of the tidy summary for the figures only some workloads have (host side).

Per turn of a conversation (``turn`` column set): ``turn_ttft_ms``, ``turn_e2e_ms``,
``turn_prompt_tokens``. Per window: shared prefixes (``prefix_hit_rate_expected``,
``prefix_seen_ttft_ms``, ``prefix_first_ttft_ms``), scheduled arrivals (``arrival_lateness_ms``,
``arrivals_scheduled``, ``arrivals_dispatched``) and the server's prefix cache
(``server_prefix_cache_hit_rate``, ``..._queries_tokens``, ``..._hits_tokens``). Per cell:
``server_prefix_caching`` (1 on, 0 off), the setting the server ran with. The names are the
record fields' (servingbench.runtime.records) with these prefixes; their units are the fields'.
"""

from __future__ import annotations

from typing import Any, Iterator

from servingbench.runtime.records import (ArrivalSummary, CellResult, GroupLatency, PrefixCacheCounters, PrefixSummary, Stats,
                                  field_names)
from servingbench.runtime.typed_json import fields_of, hints

G, P, A, C = (field_names(cls) for cls in (GroupLatency, PrefixSummary, ArrivalSummary, PrefixCacheCounters))
STATS = tuple(f.name for f in fields_of(Stats))
TURN_STATS = tuple(f.name for f in fields_of(GroupLatency) if hints(GroupLatency)[f.name] == Stats | None)
PREFIX_PARTS = tuple(f.name for f in fields_of(PrefixSummary) if hints(PrefixSummary)[f.name] is GroupLatency)
ARRIVAL_COUNTS = (A.scheduled, A.dispatched)
CACHE_FIGURES = (C.hit_rate, C.queries_tokens, C.hits_tokens)  # summary.csv's row order
TURN, PREFIX, ARRIVAL, ARRIVALS, CACHE = "turn_", "prefix_", "arrival_", "arrivals_", "server_prefix_cache_"
CACHING = "server_prefix_caching"

# summary metric -> the record type and field it reports
_METRICS = {**{TURN + n: (GroupLatency, n) for n in TURN_STATS},
            PREFIX + P.hit_rate_expected: (PrefixSummary, P.hit_rate_expected),
            **{f"{PREFIX}{part}_{G.ttft_ms}": (GroupLatency, G.ttft_ms) for part in PREFIX_PARTS},
            ARRIVAL + A.lateness_ms: (ArrivalSummary, A.lateness_ms),
            **{ARRIVALS + n: (ArrivalSummary, n) for n in ARRIVAL_COUNTS},
            **{CACHE + n: (PrefixCacheCounters, n) for n in CACHE_FIGURES}}
UNITS = {m: cls.__dataclass_fields__[n].metadata["unit"] for m, (cls, n) in _METRICS.items()} | {CACHING: "bool"}

# concurrency, prompt_tokens_target, trial, turn, metric, statistic, value
Row = tuple[Any, Any, Any, Any, str, str, Any]


def _stats(conc: Any, trial: Any, turn: Any, metric: str, s: Stats | None) -> Iterator[Row]:
    if s is not None:
        for stat in STATS:
            yield conc, None, trial, turn, metric, stat, getattr(s, stat)


def workload_rows(result: CellResult) -> Iterator[Row]:
    """The rows above of one result (none for a seed cell but the setting's)."""
    for w in result.windows if result.kind != "sweep_capacity" else []:
        conc, trial = w.concurrency, result.trial_of(w)
        for t in w.per_turn or ():
            for name in TURN_STATS:
                yield from _stats(conc, trial, t.turn, TURN + name, getattr(t, name))
        if w.prefix:
            yield conc, None, trial, None, PREFIX + P.hit_rate_expected, "value", w.prefix.hit_rate_expected
            for part in PREFIX_PARTS:
                yield from _stats(conc, trial, None, f"{PREFIX}{part}_{G.ttft_ms}", getattr(w.prefix, part).ttft_ms)
        if w.arrivals:
            yield from _stats(conc, trial, None, ARRIVAL + A.lateness_ms, w.arrivals.lateness_ms)
            for name in ARRIVAL_COUNTS:
                yield conc, None, trial, None, ARRIVALS + name, "value", getattr(w.arrivals, name)
        if w.server_prefix_cache:
            for name in CACHE_FIGURES:
                if getattr(w.server_prefix_cache, name) is not None:
                    yield conc, None, trial, None, CACHE + name, "value", getattr(w.server_prefix_cache, name)
    settings = result.server.server_settings or {}
    if settings.get("prefix_caching") is not None:
        yield None, None, None, None, CACHING, "value", int(bool(settings["prefix_caching"]))
