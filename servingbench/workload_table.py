"""Rows of the tidy summary for the figures only some workloads have (host side).

Per turn of a conversation (``turn`` column set): ``turn_ttft_ms``, ``turn_e2e_ms``,
``turn_prompt_tokens``. Per window: shared prefixes (``prefix_hit_rate_expected``,
``prefix_seen_ttft_ms``, ``prefix_first_ttft_ms``), scheduled arrivals (``arrival_lateness_ms``,
``arrivals_scheduled``, ``arrivals_dispatched``) and the server's prefix cache
(``server_prefix_cache_hit_rate``, ``..._queries_tokens``, ``..._hits_tokens``). Per cell:
``server_prefix_caching`` (1 on, 0 off), the setting the server ran with.
"""

from __future__ import annotations

from typing import Any, Iterator

from servingbench.derived import trial_of

STATS = ("mean", "p50", "p90", "p99", "min", "max", "n")
UNITS = {"turn_prompt_tokens": "tokens", "prefix_hit_rate_expected": "fraction",
         "server_prefix_cache_hit_rate": "fraction", "server_prefix_cache_queries_tokens": "tokens",
         "server_prefix_cache_hits_tokens": "tokens", "arrivals_scheduled": "requests",
         "arrivals_dispatched": "requests", "server_prefix_caching": "bool"}

# concurrency, prompt_tokens_target, trial, turn, metric, statistic, value
Row = tuple[Any, Any, Any, Any, str, str, Any]


def _stats(conc: Any, trial: Any, turn: Any, metric: str, s: dict[str, Any] | None) -> Iterator[Row]:
    if isinstance(s, dict):
        for stat in STATS:
            yield conc, None, trial, turn, metric, stat, s.get(stat)


def workload_rows(doc: dict[str, Any]) -> Iterator[Row]:
    """The rows above of one result document (none for a seed cell but the setting's)."""
    for w in doc["windows"] if doc["kind"] != "sweep_capacity" else []:
        conc, trial = w["concurrency"], trial_of(doc, w)
        for t in w.get("per_turn") or ():
            for name in ("ttft_ms", "e2e_ms", "prompt_tokens"):
                yield from _stats(conc, trial, t["turn"], f"turn_{name}", t.get(name))
        prefix = w.get("prefix")
        if prefix:
            yield conc, None, trial, None, "prefix_hit_rate_expected", "value", prefix["hit_rate_expected"]
            for part in ("seen", "first"):
                yield from _stats(conc, trial, None, f"prefix_{part}_ttft_ms", (prefix.get(part) or {}).get("ttft_ms"))
        arrivals = w.get("arrivals")
        if arrivals:
            yield from _stats(conc, trial, None, "arrival_lateness_ms", arrivals.get("lateness_ms"))
            for key in ("scheduled", "dispatched"):
                yield conc, None, trial, None, f"arrivals_{key}", "value", arrivals[key]
        cache = w.get("server_prefix_cache")
        if cache:
            for key in ("hit_rate", "queries_tokens", "hits_tokens"):
                if cache.get(key) is not None:
                    yield conc, None, trial, None, f"server_prefix_cache_{key}", "value", cache[key]
    settings = (doc.get("server") or {}).get("server_settings") or {}
    if settings.get("prefix_caching") is not None:
        yield None, None, None, None, "server_prefix_caching", "value", int(bool(settings["prefix_caching"]))
