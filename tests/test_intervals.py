"""95% intervals: bootstrap coverage on a known distribution, the t interval over trials, the
support rules, the capacity interval, and their rows in summary.csv."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from servingbench.host import intervals
from servingbench.host.aggregate import aggregate
from servingbench.host.derived import capacity_interval
from servingbench.runtime.metrics import window_summary
from servingbench.runtime.records import (CapacityResult, CapacitySearch, CellKeys, CellResult, MemorySummary,
                                          Provenance, RequestRecord, ServerInfo, SloVerdict, WindowSummary)
from tests.resultsgen import make_config, write_results


def test_bootstrap_interval_of_the_median_covers_the_true_median_in_at_least_90_percent_of_trials():
    """Lognormal(0, 0.6): true median exactly 1. 300 seeded trials of 40 draws each."""
    rng = np.random.default_rng(2024)
    covered, widths = 0, []
    for trial in range(300):
        sample = rng.lognormal(0.0, 0.6, size=40)
        lo, hi = intervals.bootstrap(sample, "p50", seed=trial, resamples=1000)
        covered += lo <= 1.0 <= hi
        widths.append(hi - lo)
    assert covered / 300 >= 0.90, covered
    assert covered / 300 <= 0.99  # an interval that always covers would be too wide to mean anything
    assert 0.1 < float(np.median(widths)) < 1.0


def test_bootstrap_of_the_mean_and_p90_cover_their_true_values():
    rng = np.random.default_rng(7)
    true_mean = math.exp(0.6**2 / 2)
    true_p90 = math.exp(0.6 * 1.2815515655446004)
    cov_mean = cov_p90 = 0
    for trial in range(200):
        sample = rng.lognormal(0.0, 0.6, size=200)
        lo, hi = intervals.bootstrap(sample, "mean", seed=trial, resamples=1000)
        cov_mean += lo <= true_mean <= hi
        lo, hi = intervals.bootstrap(sample, "p90", seed=trial, resamples=1000)
        cov_p90 += lo <= true_p90 <= hi
    assert cov_mean / 200 >= 0.90 and cov_p90 / 200 >= 0.88


def test_bootstrap_is_reproducible_and_refuses_samples_too_small():
    rng = random.Random(1)
    sample = [rng.lognormvariate(0, 1) for _ in range(30)]
    assert intervals.bootstrap(sample, "p50", seed=5) == intervals.bootstrap(sample, "p50", seed=5)
    assert intervals.bootstrap(sample, "mean", seed=5) != intervals.bootstrap(sample, "mean", seed=6)
    assert intervals.seed_for("a", 1) == intervals.seed_for("a", 1) != intervals.seed_for("a", 2)
    assert intervals.bootstrap(sample[:5], "p50", seed=1) is None  # fewer than 6: no honest 95% interval
    assert intervals.bootstrap(sample, "p90", seed=1) is not None
    assert intervals.bootstrap(sample, "p99", seed=1) is None  # p99 needs 100 values
    assert intervals.shown(100, "p99") and not intervals.shown(99, "p99") and intervals.shown(10, "p90")
    assert intervals.why_not_shown(3, "p99") == "p99 of 3 values: needs at least 100"


def test_t_interval_over_trials_covers_the_mean_and_matches_the_table():
    assert intervals.t_quantile(1) == 12.706 and intervals.t_quantile(30) == 2.042
    assert intervals.t_quantile(31) == pytest.approx(2.0395, abs=1e-3)
    assert intervals.t_quantile(120) == pytest.approx(1.9799, abs=1e-3)
    rng = random.Random(3)
    covered = sum(1 for _ in range(2000)
                  if (ci := intervals.t_interval([rng.gauss(10, 2) for _ in range(3)]))[0] <= 10 <= ci[1])
    assert 0.93 <= covered / 2000 <= 0.97
    assert intervals.t_interval([5.0]) is None


def test_geomean_interval_over_tasks_covers_the_true_geomean():
    rng = np.random.default_rng(11)
    covered = 0
    for trial in range(100):
        a, b = rng.lognormal(0, 0.5, 30), rng.lognormal(math.log(4), 0.5, 30)  # medians 1 and 4: geomean 2
        lo, hi = intervals.bootstrap_geomean([a, b], "p50", seed=trial, resamples=1000)
        covered += lo <= 2.0 <= hi
    assert covered >= 88


def test_summary_rows_hold_intervals_only_where_the_sample_supports_them(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("vllm",), tasks=("chat",), requests=12, sweeps=False)
    results = write_results(cfg, tmp_path / "r")
    df = aggregate(cfg, results)
    cell = df[(df.kind == "cell") & (df["mode"] == "stream") & (df.metric == "ttft_ms")].set_index("statistic")["value"]
    assert cell["p50_ci95_low"] <= cell["p50"] <= cell["p50_ci95_high"]
    assert cell["mean_ci95_low"] <= cell["mean"] <= cell["mean_ci95_high"]
    assert "p90_ci95_low" in cell  # 12 >= 10
    assert "p99_ci95_low" not in cell  # 12 < 100
    assert (df[df.statistic.str.endswith("_ci95_low")]["unit"] == "ms").all()


def test_trials_give_a_figure_over_trials_with_a_t_interval(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("vllm",), tasks=("chat",), modes=("stream",), requests=8, sweeps=False,
                      trials=3, cell_concurrency=(1, 4))
    results = write_results(cfg, tmp_path / "r")
    df = aggregate(cfg, results)
    ttft = df[(df.metric == "ttft_ms") & (df.concurrency == 4)]
    per_trial = ttft[(ttft.statistic == "p50") & ttft.trial.notna()].sort_values("trial")["value"].tolist()
    assert len(per_trial) == 3
    pooled = ttft[ttft.trial.isna()].set_index("statistic")["value"]
    assert pooled["p50"] == pytest.approx(sum(per_trial) / 3)
    lo, hi = intervals.t_interval(per_trial)
    assert (pooled["p50_ci95_low"], pooled["p50_ci95_high"]) == pytest.approx((lo, hi))
    trials = df[(df.metric == "trials") & (df.concurrency == 4)]["value"]
    assert trials.tolist() == [3.0]


SLOS = [{"name": "s", "percentile": 50, "ttft_ms": 100.0}]


def _window(index: int, rate: float, ttfts: list[float | None], phase: str = "search",
            window_met: bool | None = None) -> tuple[WindowSummary, list[RequestRecord]]:
    """A capacity window summarised from its requests, with the verdict fields capacity_interval reads."""
    recs = [RequestRecord(prompt_id=f"p{i}", window=index, ttft_ms=t, e2e_ms=None if t is None else t + 100,
                          output_tokens=11, error=None if t is not None else "timeout") for i, t in enumerate(ttfts)]
    verdict = SloVerdict(slo="s", percentile=50, limits={"ttft_ms": 100.0}, requests=len(recs), failed=0, met=0,
                         met_share=None, goodput_req_s=None, goodput_output_tok_s=None, at_percentile_ms={},
                         supported=True, window_met=window_met, bound_by=[])
    w = dataclasses.replace(window_summary(recs, 1.0, 1, True), window=index, phase=phase, valid=True,
                            offered_rate_req_s=rate, slo={"s": verdict})
    return w, recs


def _search(windows: list[WindowSummary], capacity: float, lowest_failing: float | None, **answer) -> CellResult:
    """A capacity search's result: ``windows`` and the answer for the one SLO set "s"."""
    res = CapacityResult(slo="s", status=answer.pop("status", "found"), capacity_req_s=capacity,
                         capacity_output_tok_s=None, highest_passing_req_s=capacity,
                         lowest_failing_req_s=lowest_failing, capacity_window=None, failing_window=None, bound_by=[],
                         reason="", **answer)
    search = CapacitySearch(slos=SLOS, gpus_per_server=0, per="server", service_time_s=1.0, start_rate_req_s=1.0,
                            search_windows=len(windows), wall_s=1.0, results={"s": res})
    return CellResult(kind="sweep_capacity", cell=CellKeys(arm="a", framework="a", model="m", task="t", mode="stream"),
                      weights="dummy", device="cpu", spec={}, windows=windows, requests_file=None, capacity=search,
                      memory=MemorySummary(host_rss_peak_bytes=None, gpu=None), provenance=Provenance(),
                      server=ServerInfo(reused=False, startup_s=None))


def test_capacity_interval_brackets_the_answer_with_sure_verdicts():
    rng = random.Random(4)
    fast = lambda: [rng.uniform(10, 50) for _ in range(30)]  # noqa: E731: p50 surely below 100
    edge = lambda: [rng.uniform(60, 140) for _ in range(30)]  # noqa: E731: p50 near 100, either way
    slow = lambda: [rng.uniform(150, 300) for _ in range(30)]  # noqa: E731: p50 surely above 100
    plan = [(1, 1.0, fast()), (2, 2.0, fast()), (3, 4.0, edge()), (4, 8.0, slow()), (5, 6.0, slow())]
    windows, records = [], []
    for i, rate, t in plan:
        w, r = _window(i, rate, t)
        windows.append(w)
        records += r
    assert capacity_interval(_search(windows, 4.0, 6.0), records, "s") == (2.0, 6.0)
    # No window broke it: no upper bound. Broken but never surely: the furthest failing rate.
    assert capacity_interval(_search(windows[:3], 4.0, 6.0), records, "s") == (2.0, None)
    broken = [_window(6, 5.0, edge(), window_met=False)[0], _window(7, 7.0, edge(), window_met=False)[0]]
    records_edge = records + [dataclasses.replace(r, window=6) for r in records if r.window == 3] + \
        [dataclasses.replace(r, window=7) for r in records if r.window == 3]
    assert capacity_interval(_search(windows[:3] + broken, 4.0, 6.0), records_edge, "s") == (2.0, 7.0)
    # Failed requests are misses, slower than any limit: half failed at p50 is a sure failure.
    w, r = _window(9, 3.0, [None] * 20 + [10.0] * 10)
    assert capacity_interval(_search(windows[:2] + [w], 2.0, 3.0), records + r, "s") == (2.0, 3.0)


def test_capacity_rows_in_the_summary_carry_the_interval(tmp_path: Path):
    cfg = make_config(device="cuda", arms=("vllm",), models=["gpt2"], tasks=("chat",), sweeps=False,
                      capacity=["chat"], gpus=2)
    results = write_results(cfg, tmp_path / "r")
    df = aggregate(cfg, results)
    doc = json.loads((results / "sweeps" / "vllm" / "gpt2" / "capacity-chat.json").read_text())
    for name, res in doc["capacity"]["results"].items():
        rows = df[(df.kind == "sweep_capacity") & (df.slo == name)].set_index(["metric", "statistic"])["value"]
        assert rows[("capacity_req_s", "value")] == pytest.approx(res["capacity_req_s"])
        assert rows[("capacity_req_s_per_gpu", "value")] == pytest.approx(res["capacity_req_s"] / 2)
        assert rows[("capacity_req_s", "value_ci95_low")] <= res["capacity_req_s"]
        if ("capacity_req_s", "value_ci95_high") in rows:
            assert rows[("capacity_req_s", "value_ci95_high")] >= res["lowest_failing_req_s"]
        assert rows[("capacity_energy_per_output_token_j", "value")] > 0


def test_a_capacity_of_zero_keeps_the_upper_end_of_its_rate_interval_in_the_summary(tmp_path: Path):
    # No server meets TTFT <= 5 ms: capacity 0, below the lowest failing rate. The req/s bounds
    # scale without a capacity window (per GPU: / 2); tokens/s has no tokens per request to scale by.
    cfg = make_config(device="cuda", arms=("vllm",), models=["gpt2"], tasks=("chat",), sweeps=False,
                      capacity=["chat"], gpus=2, slo={"impossible": {"ttft_ms": 5, "tpot_ms": 1, "percentile": 90}})
    results = write_results(cfg, tmp_path / "r")
    df = aggregate(cfg, results)
    doc = json.loads((results / "sweeps" / "vllm" / "gpt2" / "capacity-chat.json").read_text())
    res = doc["capacity"]["results"]["impossible"]
    assert res["capacity_req_s"] == 0 and res["lowest_failing_req_s"] > 0
    rows = df[(df.kind == "sweep_capacity") & (df.slo == "impossible")].set_index(["metric", "statistic"])["value"]
    high = rows[("capacity_req_s", "value_ci95_high")]
    assert high >= res["lowest_failing_req_s"] and rows[("capacity_req_s", "value_ci95_low")] == 0
    assert rows[("capacity_req_s_per_gpu", "value_ci95_high")] == pytest.approx(high / 2)
    assert ("capacity_output_tok_s", "value_ci95_high") not in rows


def test_ranks_count_the_figures_surely_ahead():
    assert intervals.ranks([(10, 12), (9, 11), (5, 6)]) == [1, 1, 3]  # competition, not dense (1, 1, 2)
    # Overlap is not transitive: C overlaps B but A is surely ahead of it.
    assert intervals.ranks([(10, 12), (8, 10.5), (6, 9)]) == [1, 1, 2]
    assert intervals.ranks([(0, 0), (0, 0), (0, math.inf)]) == [1, 1, 1]
    assert intervals.ranks([(3, 4), (1, 2)], better="lower") == [2, 1]
    assert intervals.ranks([]) == []


def test_a_capacity_settled_at_zero_load_is_surely_zero_only_when_the_probe_surely_failed():
    """Not met one request at a time (the probe, window 0): the interval is (0, 0) when the probe's
    figures break the limit even at the lower end of their interval, else it has no upper end."""
    rng = random.Random(5)
    probe = [RequestRecord(prompt_id=f"p{i}", window=0, ttft_ms=rng.uniform(150, 300), e2e_ms=400.0, output_tokens=11)
             for i in range(20)]
    search = _search([_window(0, 0.0, [r.ttft_ms for r in probe], phase="probe")[0]], 0.0, None, status="not_met",
                     settled_at_zero_load=True)
    assert capacity_interval(search, probe, "s") == (0.0, 0.0)
    close = [dataclasses.replace(r, ttft_ms=rng.uniform(60, 140)) for r in probe]  # p50 near the limit: not surely broken
    assert capacity_interval(search, close, "s") == (0.0, None)
