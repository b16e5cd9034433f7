"""The report's first section (capacity at the SLO), intervals in the headline, greyed
percentiles and the thin-sample flag, from synthetic results folders (tests/resultsgen.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from servingbench.report import render_report
from servingbench.report.render import SECTIONS, build_context
from tests.resultsgen import make_config, write_results


def _section(html: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert m, section_id
    return m.group(1)


def _render(cfg, results: Path) -> str:
    return render_report(cfg, results, results.parent / "report" / "index.html").read_text(encoding="utf-8")


@pytest.fixture()
def gpu_cfg():
    return make_config(device="cuda", arms=("transformers-naive", "tgi", "vllm"), models=["gpt2"], tasks=("chat",),
                       capacity=["chat"], requests=12, gpus=2)


def test_capacity_ranking_is_the_first_section_and_ranks_by_capacity_per_gpu(gpu_cfg, tmp_path: Path):
    results = write_results(gpu_cfg, tmp_path / "results")
    ctx = build_context(gpu_cfg, results)
    assert SECTIONS[0][0] == "capacity"
    rankings = {(r.task, r.slo): r for r in ctx["capacity"]}
    assert set(rankings) == {("chat", "interactive"), ("chat", "server")}
    for (task, slo), r in rankings.items():
        assert [a.rank for a in r.ranked] == list(range(1, len(r.ranked) + 1))
        caps = [a.req_s for a in r.ranked]
        assert caps == sorted(caps, reverse=True) and r.ranked[-1].arm == "transformers-naive"
        doc = json.loads((results / "sweeps" / r.ranked[0].arm / "gpt2" / "capacity-chat.json").read_text())
        res = doc["capacity"]["results"][slo]
        assert r.ranked[0].req_s == pytest.approx(res["capacity_req_s"] / 2)  # per GPU: two GPUs per server
        window = doc["windows"][res["capacity_window"]]
        assert r.ranked[0].joules_per_token == pytest.approx(window["memory"]["gpu"]["energy_per_output_token_j"])
        for a in r.ranked:
            assert a.low <= a.req_s and (a.high is None or a.high >= a.req_s)
    html = _render(gpu_cfg, results)
    assert html.index('<section id="capacity">') < html.index('<section id="how-to-read">') \
        < html.index('<section id="headline">')
    cap = _section(html, "capacity")
    assert "req/s per GPU" in cap and "J / output token" in cap and "not measured on CPU" not in cap
    assert re.search(r'data-arm="vllm" data-rank="1"', cap)
    spec = json.loads(re.search(r'id="spec-plot-pareto">(.*?)</script>', html, re.S).group(1))
    data = next(iter(spec["datasets"].values()))
    windows = [d for d in data if d["what"] == "window"]
    assert {d["arm"] for d in windows} == {"transformers-naive", "tgi", "vllm"}
    assert {d["label"] for d in data if d["what"] == "limit"} == {"interactive: TPOT ≤ 30 ms", "server: TPOT ≤ 100 ms"}


def test_overlapping_intervals_are_a_tie_and_distant_ones_are_not(tmp_path: Path):
    # tgi and vLLM serve alike (same speed, same slots): a tie; the naive server is far behind.
    cfg = make_config(device="cuda", arms=("transformers-naive", "tgi", "vllm"), models=["gpt2"], tasks=("chat",),
                      capacity=["chat"])
    results = write_results(cfg, tmp_path / "results", speed={"tgi": 1.0})
    ranking = next(r for r in build_context(cfg, results)["capacity"] if r.slo == "interactive")
    by_arm = {a.arm: a for a in ranking.ranked}
    second = ranking.ranked[1]
    assert {ranking.ranked[0].arm, second.arm} == {"tgi", "vllm"} and second.tie_with_above
    assert by_arm["transformers-naive"].rank == 3 and not by_arm["transformers-naive"].tie_with_above
    html = _render(cfg, results)
    row = re.search(rf'<tr class="rank-2" data-arm="{second.arm}".*?</tr>', _section(html, "capacity"), re.S).group(0)
    assert ">tie<" in row


def test_cpu_capacity_is_per_server_and_says_energy_is_not_measured(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("transformers-naive", "vllm"), tasks=("chat",), capacity=["chat"])
    results = write_results(cfg, tmp_path / "results")
    ranking = build_context(cfg, results)["capacity"][0]
    assert ranking.per == "server" and all(a.joules_per_token is None for a in ranking.ranked)
    cap = _section(_render(cfg, results), "capacity")
    assert "req/s per server" in cap and "not measured on CPU" in cap and "energy is not measured on CPU" in cap


def test_without_a_capacity_search_the_first_section_says_so(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("vllm",), tasks=("chat",))
    results = write_results(cfg, tmp_path / "results")
    assert "runs no capacity search" in _section(_render(cfg, results), "capacity")


def test_unsupported_percentiles_are_greyed_with_the_reason_and_thin_cells_flagged(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("tgi", "vllm"), tasks=("chat",), requests=3, sweeps=False)
    results = write_results(cfg, tmp_path / "results")
    ctx = build_context(cfg, results)
    html = _render(cfg, results)
    tasks = _section(html, "tasks")
    assert 'title="p99 of 3 values: needs at least 100"' in tasks and 'title="p90 of 3 values: needs at least 10"' in tasks
    # The p99 of a three-request window appears nowhere in the tables.
    row = next(r for r in ctx["tasks"]["chat"] if r.mode == "stream")
    assert row.hidden["ttft_ms"]["p99"] and not row.hidden["ttft_ms"]["p50"]
    thin = next(f for f in ctx["flags"] if f.what == "too thin to rank")
    assert set(thin.cells) == {"tgi/smollm2-135m/chat/stream", "vllm/smollm2-135m/chat/stream"}
    ttft = ctx["headline"]["smollm2-135m"][0]
    assert ttft.tie is None and set(ttft.thin) == {"tgi", "vllm"}
    assert "no interval" in _section(html, "headline")


def test_headline_carries_intervals_and_says_tie_or_not(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("tgi", "vllm"), tasks=("chat", "qa"), requests=30, sweeps=False)
    far = write_results(cfg, tmp_path / "far", speed={"tgi": 3.0})
    ttft = build_context(cfg, far)["headline"]["smollm2-135m"][0]
    assert ttft.winner[0] == "vllm" and ttft.tie is False
    for arm, value in ttft.ranked:
        lo, hi = ttft.intervals[arm]
        assert lo <= value <= hi
    near = write_results(cfg, tmp_path / "near", speed={"tgi": 1.0})
    ttft = build_context(cfg, near)["headline"]["smollm2-135m"][0]
    assert ttft.tie is True
    assert ">tie<" in _section(_render(cfg, near), "headline")


def test_headline_with_trials_uses_a_t_interval_over_trials(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("tgi", "vllm"), tasks=("chat",), modes=("stream",), requests=8,
                      sweeps=False, trials=3)
    results = write_results(cfg, tmp_path / "results")
    ctx = build_context(cfg, results)
    ttft = ctx["headline"]["smollm2-135m"][0]
    assert "Student-t over the 3 trials" in ttft.interval_basis
    assert all(ttft.intervals[arm] is not None for arm, _ in ttft.ranked)
    throughput = ctx["headline"]["smollm2-135m"][2]
    assert all(throughput.intervals[arm] is not None for arm, _ in throughput.ranked)
    rows = ctx["tasks"]["chat"]
    assert len(rows) == 2  # one row per arm and level, its figures over the three trials


def test_a_capacity_searched_at_another_slo_is_flagged(gpu_cfg, tmp_path: Path):
    results = write_results(gpu_cfg, tmp_path / "results")
    stricter = gpu_cfg.model_copy(update={"slo": {**gpu_cfg.slo, "interactive": gpu_cfg.slo["interactive"].model_copy(
        update={"ttft_ms": 250.0})}})
    # Kept, not refused as stale (staleness.NOT_COMPARED): each says what it was searched for.
    flags = build_context(stricter, results)["flags"]
    stale = [f for f in flags if f.what == "capacity at another SLO"]
    assert len(stale) == 3 and "rerun the search" in stale[0].detail
