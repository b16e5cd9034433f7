"""From per-request records to the summary figures of one measured window (DESIGN §3).

Percentiles use linear interpolation between closest ranks (numpy's default), written out
here because the runtime may not import numpy. Runtime module.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

from servingbench.runtime.records import RequestRecord, Stats, WindowSummary


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """q in [0, 100]; ``sorted_values`` must be sorted and non-empty."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi:
        return float(sorted_values[lo])
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def stats(values: Iterable[float | None]) -> Stats | None:
    """n, mean, p50, p90, p99, min, max of the non-None values; None when there are none."""
    vals = sorted(float(v) for v in values if v is not None)
    if not vals:
        return None
    return Stats(n=len(vals), mean=sum(vals) / len(vals), p50=percentile(vals, 50), p90=percentile(vals, 90),
                 p99=percentile(vals, 99), min=vals[0], max=vals[-1])


def event_gaps_ms(rec: RequestRecord) -> list[float]:
    """Gaps between successive events that carried output: one event may carry several tokens."""
    o = rec.event_offsets_ms
    return [b - a for a, b in zip(o, o[1:])]


def token_events(rec: RequestRecord) -> list[tuple[float, int]] | None:
    """(time, tokens) of each event that carried tokens, when the server said how many every
    event carried and they add up to the request's output tokens; else None (not known)."""
    counts = rec.event_tokens
    if counts is None or len(counts) != len(rec.event_offsets_ms) or any(c is None for c in counts):
        return None
    if rec.output_tokens is not None and sum(counts) != rec.output_tokens:
        return None  # the per-event counts do not account for the output: do not trust them
    return [(t, int(k)) for t, k in zip(rec.event_offsets_ms, counts) if k]


def itl_ms(rec: RequestRecord) -> list[float] | None:
    """Inter-token latency, one value per token after the first event's: an event that brings
    k tokens after a gap g gives k values g / k. None when the tokens per event are not known."""
    events = token_events(rec)
    if events is None:
        return None
    out: list[float] = []
    for (t0, _), (t1, k) in zip(events, events[1:]):
        out += [(t1 - t0) / k] * k
    return out


def tpot_ms(rec: RequestRecord) -> float | None:
    """(E2E - TTFT) / (output tokens - 1): decode time per token after the first."""
    if rec.ttft_ms is None or rec.e2e_ms is None or not rec.output_tokens or rec.output_tokens < 2:
        return None
    return (rec.e2e_ms - rec.ttft_ms) / (rec.output_tokens - 1)


def window_summary(records: list[RequestRecord], window_s: float, concurrency: int, stream: bool,
                   prompt_tokens_target: int | None = None) -> WindowSummary:
    """The summary of one window. Failed requests are counted, never dropped."""
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    summary = WindowSummary(
        concurrency=concurrency, prompt_tokens_target=prompt_tokens_target,
        requests=len(records), completed=len(ok), failed=len(failed),
        errors=dict(Counter(_error_kind(r.error) for r in failed)),
        window_s=window_s,
        throughput_req_s=len(ok) / window_s if window_s > 0 else None,
        throughput_output_tok_s=out_tokens / window_s if window_s > 0 else None,
        e2e_ms=stats(r.e2e_ms for r in ok),
        ttft_ms=None, itl_ms=None, tpot_ms=None, output_tok_s=None,
        queue_ms=stats(r.queue_ms for r in records),
        prompt_tokens=stats(r.prompt_tokens for r in ok),
        output_tokens_requested_total=sum(r.output_tokens_requested for r in ok),
        output_tokens_actual_total=out_tokens,
        output_tokens_mismatched=sum(1 for r in ok if r.output_tokens != r.output_tokens_requested),
        output_tokens_source=dict(Counter(r.output_tokens_source for r in ok)),
    )
    if stream:
        per_token = [itl_ms(r) for r in ok]
        summary.ttft_ms = stats(r.ttft_ms for r in ok)
        summary.itl_ms = stats(g for gaps in per_token if gaps is not None for g in gaps)
        summary.itl_unknown_requests = sum(1 for gaps in per_token if gaps is None)
        summary.event_gap_ms = stats(g for r in ok for g in event_gaps_ms(r))
        summary.tokens_per_event = stats(k for r in ok for _, k in (token_events(r) or ()))
        summary.tpot_ms = stats(tpot_ms(r) for r in ok)
        summary.output_tok_s = stats((r.output_tokens or 0) / (r.e2e_ms / 1000.0)
                                     for r in ok if r.e2e_ms and r.output_tokens)
    return summary


def _error_kind(error: str | None) -> str:
    """Group error messages into a few kinds for the error table (full text stays per request)."""
    if not error:
        return "unknown"
    head = error.split(":", 1)[0]
    return head if len(head) <= 40 else head[:40]
