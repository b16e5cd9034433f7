"""Service-level objectives and goodput: one definition, used by the capacity search (runtime)
and by the aggregate of every window (host).

An SLO set (``spec.SLOSpec``) holds per-request limits on TTFT, TPOT and optionally E2E, in ms,
and the percentile at which a window must meet them.

- A request **meets** the set when it completed and every limited figure is within its limit,
  all at once (vLLM's ``benchmark_serving --goodput``). A failed request never meets it.
- **Goodput**: the requests that meet the set, and their output tokens, over the window's wall
  time (req/s, output tokens/s); ``met_share`` is their share of all the window's requests.
- A window **meets** the set when, for each limit, the set's percentile of that figure over
  all the window's requests is within the limit, failed requests counting as infinitely slow
  (MLPerf Inference's server scenario checks each latency limit at its percentile this way).
  The limits whose percentile is over are the ones that ``bound_by`` names.
- A percentile is **supported** by a sample of n values when at least one value lies beyond
  it on each side: n >= 100 / min(q, 100 - q) (p50: 2, p90: 10, p99: 100). An unsupported
  percentile is never used for a verdict: ``window_met`` is then None.

TPOT is (E2E - TTFT) / (output tokens - 1); a completed request with one output token has no
decode step and meets any TPOT limit. Sync requests have no TTFT, so only an E2E-only set can
judge them. Runtime module: standard library only.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Iterable, Mapping

from servingbench.runtime.metrics import percentile, tpot_ms
from servingbench.runtime.records import SloVerdict, field_names
from servingbench.runtime.spec import SLOSpec

INF = float("inf")
LIMIT = field_names(SLOSpec)  # an SLO set's fields: its limits by figure name
STREAM_ONLY = (LIMIT.ttft_ms, LIMIT.tpot_ms)  # figures that only a stream measures


def min_samples(q: float) -> int:
    """Smallest sample that supports percentile ``q``: one value beyond it on each side.
    The maximum (q = 100) is defined for any sample, but is one request's figure."""
    if q >= 100:
        return 1
    return math.ceil(100.0 / min(q, 100.0 - q) - 1e-9)


def supports(n: int, q: float) -> bool:
    return n >= min_samples(q)


def _record(r: Any) -> Any:
    return SimpleNamespace(**r) if isinstance(r, Mapping) else r


def request_figures(rec: Any) -> dict[str, float] | None:
    """ttft_ms, tpot_ms, e2e_ms of a completed request (a RequestRecord or its dict); None if it failed."""
    rec = _record(rec)
    if rec.error is not None:
        return None
    tpot = tpot_ms(rec)
    if tpot is None and rec.ttft_ms is not None and rec.output_tokens == 1:
        tpot = 0.0  # one token: no decode step to be slow
    return {LIMIT.ttft_ms: rec.ttft_ms, LIMIT.tpot_ms: tpot, LIMIT.e2e_ms: rec.e2e_ms}


def judgeable(slo: SLOSpec, stream: bool) -> bool:
    """Can windows of this mode be judged against ``slo``? (sync has no TTFT or TPOT)"""
    return stream or not any(k in STREAM_ONLY for k in slo.limits())


def meets(figures: dict[str, float | None] | None, slo: SLOSpec) -> bool:
    if figures is None:
        return False
    for name, limit in slo.limits().items():
        v = figures.get(name)
        if v is None or v > limit:
            return False
    return True


def percentile_with_misses(values: Iterable[float], misses: int, q: float) -> float:
    """Percentile ``q`` of ``values`` plus ``misses`` infinitely slow ones (failed requests):
    infinite when the percentile falls among the misses."""
    finite = sorted(values)
    n = len(finite) + misses
    if n == 0:
        raise ValueError("percentile of no values")
    if math.ceil((n - 1) * q / 100.0) >= len(finite):  # interpolates towards a miss
        return INF
    return percentile(finite + [INF] * misses, q)  # both ranks it reads are finite


def window_verdict(records: list[Any], window_s: float, slo: SLOSpec, stream: bool) -> SloVerdict | None:
    """Goodput and the window's verdict for one SLO set; None when the mode cannot be judged."""
    if not judgeable(slo, stream):
        return None
    recs = [_record(r) for r in records]
    figs = [request_figures(r) for r in recs]
    met = [r for r, f in zip(recs, figs) if meets(f, slo)]
    n, failed = len(recs), sum(1 for f in figs if f is None)
    at_pct: dict[str, float | None] = {}
    bound_by = []
    for name, limit in slo.limits().items():
        # A completed request without the figure (no TTFT: a sync answer) cannot meet the limit.
        vals = [f[name] for f in figs if f is not None and f[name] is not None]
        missing = n - len(vals)
        v = percentile_with_misses(vals, missing, slo.percentile) if n else None
        at_pct[name] = None if v is None or v == INF else v
        if v is None or v > limit:
            bound_by.append(name)
    supported = supports(n, slo.percentile)
    return SloVerdict(
        slo=slo.name, percentile=slo.percentile, limits=slo.limits(),
        requests=n, failed=failed, met=len(met),
        met_share=len(met) / n if n else None,
        goodput_req_s=len(met) / window_s if window_s > 0 else None,
        goodput_output_tok_s=sum(r.output_tokens or 0 for r in met) / window_s if window_s > 0 else None,
        at_percentile_ms=at_pct,  # None: the percentile falls among failed requests (infinite)
        supported=supported,
        window_met=(not bound_by) if supported else None,
        bound_by=bound_by,
    )
