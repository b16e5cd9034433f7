"""The report flags stream cells whose per-token gaps run in slow and fast stretches (issue 17)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from servingbench.runtime.records import RequestRecord
from servingbench.host.report.gaps import GAP_RATIO_MAX, check_windows, describe
from servingbench.host.report.render import build_context
from servingbench.runtime.results import requests_path
from tests.resultsgen import make_config, write_results


def _record(gaps: list[float], window: int = 0, concurrency: int = 1, tokens: int | None = None,
            events_every: int = 1) -> RequestRecord:
    offsets = [20.0]
    for g in gaps:
        offsets.append(offsets[-1] + g)
    n_tokens = tokens if tokens is not None else len(offsets)
    return RequestRecord(prompt_id="p", window=window, concurrency=concurrency, event_offsets_ms=offsets[::events_every],
                         output_tokens=n_tokens, ttft_ms=offsets[0], e2e_ms=offsets[-1])


def _steady(rng: random.Random, n: int, ms: float = 10.0) -> list[float]:
    return [ms * rng.uniform(0.95, 1.05) for _ in range(n)]


def test_steady_decode_is_not_flagged() -> None:
    rng = random.Random(1)
    checks = check_windows([_record(_steady(rng, 40)) for _ in range(3)])
    assert len(checks) == 1 and checks[0].n == 120
    assert not checks[0].uneven and checks[0].ratio < 1.1


def test_slow_stretches_are_flagged_with_their_numbers() -> None:
    # The H100 naive gpt2 shape: 8-12 ms per token, then a stretch at 50-80 ms.
    rng = random.Random(2)
    recs = [_record(_steady(rng, 30) + [rng.uniform(50, 80) for _ in range(10)]) for _ in range(3)]
    (c,) = check_windows(recs)
    assert c.uneven and c.bimodal
    assert c.ratio > GAP_RATIO_MAX
    assert 0.2 <= c.slow_share <= 0.3


def test_requests_steady_each_at_their_own_speed_are_said_to_differ_between_requests() -> None:
    # The H200 shape: each request steady, but at 20 or 40 ms per token (the vCPU's speed).
    rng = random.Random(5)
    recs = [_record(_steady(rng, 40, ms=40.0 if i % 3 == 0 else 20.0)) for i in range(6)]
    (c,) = check_windows(recs)
    assert c.uneven and c.ratio > GAP_RATIO_MAX
    assert c.request_ratio is not None and c.request_ratio < 1.1
    assert "even within requests, uneven between them" in describe([c])
    # A slow stretch inside every request is uneven within requests too, and not said to be even.
    recs = [_record(_steady(rng, 30) + [rng.uniform(50, 80) for _ in range(10)]) for _ in range(3)]
    (c,) = check_windows(recs)
    assert c.request_ratio > GAP_RATIO_MAX and "even within requests" not in describe([c])


def test_a_slow_majority_is_bimodal_even_when_p90_is_close_to_p50() -> None:
    # 80 % of steps in the slow stretch: p90/p50 is small, the fast mode is what gives it away.
    rng = random.Random(3)
    recs = [_record([rng.uniform(10, 11) for _ in range(8)] + [rng.uniform(60, 62) for _ in range(32)])
            for _ in range(2)]
    (c,) = check_windows(recs)
    assert c.ratio <= GAP_RATIO_MAX
    assert c.fast_share >= 0.1 and c.uneven


def test_events_that_carry_several_tokens_have_no_per_token_gaps() -> None:
    rng = random.Random(4)
    # 4 tokens per event: the gaps between events are not per-token gaps; nothing is judged.
    recs = [_record(_steady(rng, 60), events_every=4, tokens=61) for _ in range(3)]
    assert check_windows(recs) == []
    # One token held back (an incomplete character) still counts as one event per token.
    one_fewer = _record(_steady(rng, 30), tokens=32)
    (c,) = check_windows([one_fewer])
    assert c.requests == 1 and c.left_out == 0


def test_only_concurrency_1_windows_with_enough_gaps_are_judged() -> None:
    rng = random.Random(5)
    batched = [_record(_steady(rng, 30) + [60.0] * 10, window=1, concurrency=4) for _ in range(3)]
    short = [_record(_steady(rng, 5))]  # 5 gaps < MIN_GAPS
    assert check_windows(batched + short) == []


def test_report_flags_an_uneven_stream_cell(tmp_path: Path) -> None:
    cfg = make_config(device="cuda", weights="dummy", arms=("transformers-naive", "vllm"))
    results = write_results(cfg, tmp_path / "results")
    label = "transformers-naive/gpt2/chat/stream"
    path = requests_path(results / "cells" / "transformers-naive" / "gpt2" / "chat" / "stream.json")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rng = random.Random(6)
    for i, row in enumerate(rows):  # every other request runs its second half 6x slower
        offs = row["event_offsets_ms"]
        if i % 2 == 0 and len(offs) > 4:
            half = len(offs) // 2
            gaps = [b - a for a, b in zip(offs, offs[1:])]
            gaps = gaps[:half] + [g * 6 * rng.uniform(0.95, 1.05) for g in gaps[half:]]
            row["event_offsets_ms"] = [offs[0]] + [offs[0] + sum(gaps[:k + 1]) for k in range(len(gaps))]
            row["e2e_ms"] = row["event_offsets_ms"][-1]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    flags = [f for f in build_context(cfg, results)["flags"] if f.what == "uneven decode steps"]
    assert [f.cells for f in flags] == [[label]]
    assert "p90/p50" in flags[0].detail and f"> {GAP_RATIO_MAX}" in flags[0].detail
    assert "over twice the median" in flags[0].detail
