"""benchmarks/transformers_fidelity.py's interleaving and paired ratios (issue 17), on synthetic
figures whose answer is known: the turns the arms take, the per-round pairing, the bootstrap
interval of the median ratio, the verdict it supports, and the per-request gap ratio. The
benchmark itself runs on the GPU machine (its CPU smoke: docs/transformers-fidelity.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tf():
    spec = importlib.util.spec_from_file_location("transformers_fidelity", REPO / "benchmarks" / "transformers_fidelity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_interleaved_rounds_hold_one_request_per_arm_and_warm_up_once(tf):
    assert tf.block_plan(4, 4, 2, interleave=True) == [(1, 2), (1, 0), (1, 0), (1, 0)]
    # block mode keeps its warm-ups in every block
    assert tf.block_plan(16, 4, 2, interleave=False) == [(4, 2)] * 4
    assert tf.block_plan(5, 2, 1, interleave=False) == [(3, 1), (2, 1)]


def test_the_order_rotates_so_each_arm_leads_as_often(tf):
    arms = ["bare", "naive", "serve"]
    orders = [tf.arm_order(arms, i) for i in range(6)]
    assert orders[:3] == [["bare", "naive", "serve"], ["naive", "serve", "bare"], ["serve", "bare", "naive"]]
    assert [o[0] for o in orders].count("bare") == 2
    assert all(sorted(o) == sorted(arms) for o in orders)


def test_ratios_pair_round_by_round_and_skip_missing_rounds(tf):
    bare = [10.0, 20.0, None, 40.0, 10.0, 30.0, 12.0]
    arm = [11.0, 20.0, 25.0, 36.0, None, 33.0, 12.0]
    got = tf.paired_ratio(arm, bare, seed=1)
    assert got["ratios"] == pytest.approx([1.1, 1.0, 0.9, 1.1, 1.0])
    assert got["rounds"] == 5
    assert got["ratio_p50"] == pytest.approx(1.0)


def test_pairing_removes_the_machines_drift(tf):
    # the bare loop wanders 0.7-1.7x between rounds; the arm is 1.05x it in every round
    drift = [0.7, 1.7, 1.0, 1.4, 0.8, 1.6, 0.9, 1.2, 1.5, 0.75, 1.1, 1.3]
    bare = [20.0 * d for d in drift]
    got = tf.paired_ratio([1.05 * b for b in bare], bare, seed=2)
    assert got["ci95"] == pytest.approx([1.05, 1.05])
    assert got["verdict"] == "within 15 %"


def test_constant_ratio_one_is_within(tf):
    got = tf.paired_ratio([30.0] * 16, [30.0] * 16, seed=3)
    assert got["ratio_p50"] == 1.0 and got["ci95"] == [1.0, 1.0]
    assert got["verdict"] == "within 15 %"


def test_ratios_spread_like_the_h200s_are_not_resolved_in_8_rounds(tf):
    ratios = [0.7, 1.7, 0.95, 1.4, 1.05, 1.6, 0.85, 1.25]
    got = tf.paired_ratio(ratios, [1.0] * 8, seed=4)
    lo, hi = got["ci95"]
    assert lo < tf.LIMIT < hi
    assert got["verdict"] == f"not resolved with 8 rounds (95 % interval {lo:.2f}-{hi:.2f})"


def test_a_steady_ratio_of_1_3_is_slower(tf):
    ratios = [1.3 + 0.02 * ((i % 5) - 2) for i in range(16)]  # 1.26-1.34
    got = tf.paired_ratio(ratios, [1.0] * 16, seed=5)
    assert got["ci95"][0] > tf.LIMIT
    assert got["verdict"] == "slower by more than 15 %"


def test_fewer_than_six_rounds_give_no_interval_and_no_verdict(tf):
    got = tf.paired_ratio([1.0] * 5, [1.0] * 5, seed=6)
    assert got["ci95"] is None
    assert got["verdict"] == "not resolved with 5 rounds (a 95 % interval of a median needs at least 6 rounds)"


def test_the_interval_is_seeded_and_brackets_the_median(tf):
    ratios = [0.9, 1.2, 1.0, 1.4, 0.8, 1.1, 1.3, 0.95, 1.05, 1.25]
    a = tf.paired_ratio(ratios, [1.0] * 10, seed=7)
    assert tf.paired_ratio(ratios, [1.0] * 10, seed=7)["ci95"] == a["ci95"]
    lo, hi = a["ci95"]
    assert min(ratios) <= lo <= a["ratio_p50"] <= hi <= max(ratios)
    assert lo < hi


def test_the_verdict_is_decided_by_the_intervals_ends(tf):
    assert tf.verdict((0.5, 1.15), 64) == "within 15 %"  # faster than the bare loop meets it too
    assert tf.verdict((1.151, 1.4), 64) == "slower by more than 15 %"
    assert tf.verdict((1.15, 1.4), 64) == "not resolved with 64 rounds (95 % interval 1.15-1.40)"


def test_per_request_gap_ratio_separates_a_slow_request_from_uneven_gaps(tf):
    def req(gaps):
        offsets = [5.0]
        for g in gaps:
            offsets.append(offsets[-1] + g)
        return tf.request_figures(offsets, len(offsets))

    # two steady requests at different speeds (the vCPU changed between them): each request's
    # own p90/p50 is 1, the pooled one is not
    s = tf.arm_summary([req([10.0] * 20), req([20.0] * 20)])
    assert s["gap_p90_over_p50_request_p50"] == pytest.approx(1.0)
    assert s["gap_p90_over_p50"] == pytest.approx(20.0 / 15.0)
    # a stretch inside each request shows in both
    s = tf.arm_summary([req([10.0] * 10 + [20.0] * 10)] * 3)
    assert s["gap_p90_over_p50_request_p50"] == pytest.approx(20.0 / 15.0)
    assert tf.gap_ratio([10.0]) is None


def test_the_markdown_carries_the_paired_verdicts_and_both_gap_ratios(tf):
    arm = {"requests": 8, "ttft_ms_p50": 20.0, "tpot_ms_p50": 10.0, "tpot_ms_min": 9.0, "tpot_ms_max": 11.0,
           "gap_ms_p50": 10.0, "gap_ms_p90": 12.0, "gap_ms_max": 15.0, "gap_p90_over_p50": 1.2,
           "gap_p90_over_p50_request_p50": 1.1, "tokens_per_event": 1.0, "call_overhead_s_p50": 0.07}
    paired = tf.paired_ratio([1.0] * 8, [1.0] * 8, seed=8)
    results = {"prompt_tokens": 100, "tokens": 64, "requests": 8, "interleave": True, "warmup": 2, "blocks": 8,
               "monitor_interval_s": 0.1, "models": {"gpt2": {
                   "bare": dict(arm), "naive": {**arm, "tpot_ratio_paired": paired, "ttft_ratio_paired": paired}}}}
    md = tf.markdown(results)
    assert "request by request, 8 rounds" in md
    assert "| gpt2 | naive | 8 | 1.00 | 1.00-1.00 | within 15 % |" in md
    assert "| 1.20 | 1.10 | 1.00 |" in md  # pooled and per-request p90/p50
    assert "gpt2 naive 0.070 s" in md
