"""A window's figures that only some workloads have: per turn of a conversation, first against
repeated shared prefixes, scheduled against achieved arrivals, and the server's prefix-cache hit
rate. Each is added to the window's summary only where it applies. Runtime module.
"""

from __future__ import annotations

from typing import Any

from servingbench.runtime.arrivals import arrival_summary
from servingbench.runtime.metrics import stats
from servingbench.runtime.prefix_cache import window_hit_rate
from servingbench.runtime.records import GroupLatency, PrefixCacheCounters, PrefixSummary, RequestRecord


def _latency(records: list[RequestRecord], turn: int | None = None) -> GroupLatency:
    ok = [r for r in records if r.ok]
    return GroupLatency(turn=turn, requests=len(records), completed=len(ok), ttft_ms=stats(r.ttft_ms for r in ok),
                        e2e_ms=stats(r.e2e_ms for r in ok), prompt_tokens=stats(r.prompt_tokens for r in ok))


def turn_summary(records: list[RequestRecord]) -> list[GroupLatency] | None:
    """Per turn index of a conversation (1, 2, ...): TTFT, E2E and prompt length of that turn."""
    by_turn: dict[int, list[RequestRecord]] = {}
    for r in records:
        if r.turn is not None:
            by_turn.setdefault(r.turn, []).append(r)
    if not by_turn:
        return None
    return [_latency(by_turn[k], k) for k in sorted(by_turn)]


def prefix_summary(records: list[RequestRecord]) -> PrefixSummary | None:
    """Shared-prefix requests split by whether an earlier request of the window sent their prefix
    (``seen``: a cache can serve it) or not (``first``), the share of the first kind, and how many
    distinct prefixes the window sent."""
    labelled = [r for r in records if r.prefix_seen is not None]
    if not labelled:
        return None
    seen = [r for r in labelled if r.prefix_seen]
    return PrefixSummary(hit_rate_expected=len(seen) / len(labelled),
                         prefixes=len({r.prefix_group for r in labelled if r.prefix_group is not None}),
                         seen=_latency(seen), first=_latency([r for r in labelled if not r.prefix_seen]))


def per_request_hit_rate(records: list[RequestRecord]) -> PrefixCacheCounters | None:
    """The server's prefix-cache figures summed from its per-request timings where it reports
    them (llama.cpp: ``cache_n`` prompt tokens reused, ``prompt_n`` computed)."""
    timed = [r.server_timing for r in records if r.ok and "cache_n" in r.server_timing and "prompt_n" in r.server_timing]
    if not timed:
        return None
    hits = sum(t["cache_n"] for t in timed)
    queries = hits + sum(t["prompt_n"] for t in timed)
    return PrefixCacheCounters(queries_tokens=queries, hits_tokens=hits, hit_rate=hits / queries if queries else None)


def workload_summary(records: list[RequestRecord], cache_before: dict[str, float] | None,
                     cache_after: dict[str, float] | None) -> dict[str, Any]:
    """The keys to add to a window's summary (none for a window of independent prompts)."""
    cache = window_hit_rate(cache_before, cache_after) or per_request_hit_rate(records)
    parts = {"per_turn": turn_summary(records), "prefix": prefix_summary(records),
             "arrivals": arrival_summary(records), "server_prefix_cache": cache}
    return {k: v for k, v in parts.items() if v is not None}
