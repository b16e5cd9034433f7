"""Stream cells whose per-token gaps are uneven at concurrency 1: slow stretches, not steady decode.

One request at a time, a server's decode steps should take about the same time each; on the
H100 the Transformers arms ran at 8-12 ms per token for a while and then at 50-80 ms
(examples/h100-dummy/README.md), so a cell's TPOT over 3 requests could differ 4x from its
neighbour's. This check finds that in every run, from the per-request event times.

Per-token gaps: the gaps between consecutive content events of a request whose events number
its output tokens (or one fewer: the first token may come with the role or be held back as
an incomplete character). A request whose events carry several tokens each has no per-token
gaps and is left out. A window is flagged when its pooled gaps have p90/p50 above
``GAP_RATIO_MAX``, or are bimodal: at least ``SECOND_MODE_SHARE`` of them more than twice
the median (a slow stretch) or less than half of it (a fast one). Windows with fewer than
``MIN_GAPS`` gaps are not judged. Each check also carries the median over requests of each
request's own p90/p50: pooled gaps mix requests that ran at different speeds (on the H200 the
vCPU's speed changed between requests, docs/transformers-fidelity.md), so the sentence says
whether the unevenness lies within requests or between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from servingbench.runtime.metrics import percentile
from servingbench.runtime.records import RequestRecord

GAP_RATIO_MAX = 1.5  # p90/p50 of per-token gaps at concurrency 1 (issue 17's done-when)
SECOND_MODE_SHARE = 0.10
MIN_GAPS = 20
MIN_REQUEST_GAPS = 10  # a request's own p90/p50 needs this many gaps


@dataclass
class GapCheck:
    """The per-token gap distribution of one window at concurrency 1."""

    window: int
    requests: int  # requests whose gaps were used
    left_out: int  # completed requests whose events carried several tokens each
    n: int
    p50: float
    p90: float
    slow_share: float  # share of gaps > 2 x p50
    fast_share: float  # share of gaps < p50 / 2
    request_ratio: float | None = None  # median over requests of each one's own p90/p50

    @property
    def ratio(self) -> float:
        return self.p90 / self.p50 if self.p50 > 0 else float("inf")

    @property
    def bimodal(self) -> bool:
        return self.slow_share >= SECOND_MODE_SHARE or self.fast_share >= SECOND_MODE_SHARE

    @property
    def uneven(self) -> bool:
        return self.ratio > GAP_RATIO_MAX or self.bimodal


def token_gaps(rec: RequestRecord) -> list[float] | None:
    """Per-token gaps (ms) of one request record, or None where they are not known."""
    offsets = rec.event_offsets_ms
    tokens = rec.output_tokens
    if rec.error or not tokens or len(offsets) < 2 or len(offsets) < tokens - 1:
        return None
    return [b - a for a, b in zip(offsets, offsets[1:])]


def request_ratio(gaps: list[float], min_gaps: int = MIN_REQUEST_GAPS) -> float | None:
    """p90/p50 of one request's own gaps; None for fewer than ``min_gaps`` gaps or a zero median."""
    if len(gaps) < min_gaps:
        return None
    ordered = sorted(gaps)
    p50 = percentile(ordered, 50)
    return percentile(ordered, 90) / p50 if p50 > 0 else None


def check_windows(records: Iterable[RequestRecord]) -> list[GapCheck]:
    """One check per concurrency-1 window that has enough per-token gaps."""
    by_window: dict[int, list[RequestRecord]] = {}
    for r in records:
        if r.concurrency == 1 and not r.warmup:
            by_window.setdefault(r.window, []).append(r)
    out = []
    for window, recs in sorted(by_window.items()):
        per_request = [token_gaps(r) for r in recs if not r.error]
        used = [g for g in per_request if g is not None]
        gaps = sorted(x for g in used for x in g)
        if len(gaps) < MIN_GAPS:
            continue
        p50 = percentile(gaps, 50)
        own = sorted(q for g in used if (q := request_ratio(g)) is not None)
        out.append(GapCheck(window=window, requests=len(used), left_out=len(per_request) - len(used), n=len(gaps),
                            p50=p50, p90=percentile(gaps, 90),
                            slow_share=sum(x > 2 * p50 for x in gaps) / len(gaps),
                            fast_share=sum(x < p50 / 2 for x in gaps) / len(gaps),
                            request_ratio=percentile(own, 50) if own else None))
    return out


def describe(checks: list[GapCheck]) -> str:
    """One sentence per uneven window, with its numbers and the threshold."""
    parts = []
    for c in checks:
        what = []
        if c.ratio > GAP_RATIO_MAX:
            what.append(f"p90/p50 {c.ratio:.2f} > {GAP_RATIO_MAX}")
        if c.slow_share >= SECOND_MODE_SHARE:
            what.append(f"{100 * c.slow_share:.0f}% of gaps over twice the median")
        if c.fast_share >= SECOND_MODE_SHARE:
            what.append(f"{100 * c.fast_share:.0f}% of gaps under half the median")
        where = f"window {c.window}" if len(checks) > 1 else "concurrency 1"
        within = ""
        if c.request_ratio is not None:
            within = (f"; within a request p90/p50 {c.request_ratio:.2f} (median over requests)" +
                      (": even within requests, uneven between them" if c.request_ratio <= GAP_RATIO_MAX else ""))
        parts.append(f"{where}: per-token gaps p50 {c.p50:.1f} ms, p90 {c.p90:.1f} ms ({', '.join(what)}; "
                     f"{c.n} gaps from {c.requests} requests{within})")
    return "; ".join(parts)
