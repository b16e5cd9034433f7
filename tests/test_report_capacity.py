"""The report's first section (capacity at the SLO), intervals in the headline, greyed
percentiles and the thin-sample flag, from synthetic results folders (tests/resultsgen.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from markupsafe import escape

from servingbench.host.report import render_report
from servingbench.host.report.headline import Ranking
from servingbench.host.report.render import SECTIONS, build_context
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
    # tgi decodes at half vLLM's speed: three arms with intervals clear of each other.
    results = write_results(gpu_cfg, tmp_path / "results", speed={"tgi": 2.0})
    ctx = build_context(gpu_cfg, results)
    assert SECTIONS[0][0] == "capacity"
    rankings = {(r.task, r.slo): r for r in ctx["capacity"]}
    assert set(rankings) == {("chat", "interactive"), ("chat", "server")}
    for (task, slo), r in rankings.items():
        assert [a.rank for a in r.ranked] == [1, 2, 3] and not any(a.tied for a in r.ranked)
        caps = [a.req_s for a in r.ranked]
        assert caps == sorted(caps, reverse=True) and r.ranked[-1].arm == "transformers-naive"
        assert r.summary.startswith(f"vllm carries the most load at {slo}: ") and "every other arm" in r.summary
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
    assert re.search(r'<p class="verdict" data-task="chat" data-slo="server">vllm carries the most load at server: '
                     r'[0-9.]+ req/s per GPU \[', cap)
    spec = json.loads(re.search(r'id="spec-plot-pareto">(.*?)</script>', html, re.S).group(1))
    data = next(iter(spec["datasets"].values()))
    windows = [d for d in data if d["what"] == "window"]
    assert {d["arm"] for d in windows} == {"transformers-naive", "tgi", "vllm"}
    assert {d["label"] for d in data if d["what"] == "limit"} == {"interactive: TPOT ≤ 30 ms", "server: TPOT ≤ 100 ms"}


def test_overlapping_intervals_share_a_rank_and_no_best_arm_is_named(tmp_path: Path):
    # tgi and vLLM serve alike (same speed, same slots): a tie; the naive server is far behind both.
    cfg = make_config(device="cuda", arms=("transformers-naive", "tgi", "vllm"), models=["gpt2"], tasks=("chat",),
                      capacity=["chat"])
    results = write_results(cfg, tmp_path / "results", speed={"tgi": 1.0})
    ranking = next(r for r in build_context(cfg, results)["capacity"] if r.slo == "interactive")
    by_arm = {a.arm: a for a in ranking.ranked}
    tgi, vllm, naive = by_arm["tgi"], by_arm["vllm"], by_arm["transformers-naive"]
    assert tgi.low <= vllm.high and vllm.low <= tgi.high  # the premise: their intervals overlap
    assert (tgi.rank, vllm.rank) == (1, 1) and tgi.tied and vllm.tied
    # Competition ranking: two arms are surely ahead of the naive one, so it is third, not second.
    assert naive.rank == 3 and not naive.tied and naive.high < min(tgi.low, vllm.low)
    assert [a.arm for a in ranking.leaders] == [a.arm for a in ranking.ranked[:2]]
    assert ranking.summary.startswith("No arm is surely best at interactive: ") and "share rank 1" in ranking.summary
    cap = _section(_render(cfg, results), "capacity")
    for arm in ("tgi", "vllm"):
        row = re.search(rf'<tr class="rank-1" data-arm="{arm}" data-rank="1">.*?</tr>', cap, re.S).group(0)
        assert ">tie<" in row
    row = re.search(r'<tr class="rank-3" data-arm="transformers-naive" data-rank="3">.*?</tr>', cap, re.S).group(0)
    assert ">tie<" not in row
    verdict = re.search(r'<p class="verdict" data-task="chat" data-slo="interactive">(.*?)</p>', cap).group(1)
    assert "No arm is surely best" in verdict and "carries the most load" not in verdict


# Two SLO sets on CPU: "tight" only vLLM (the fastest decode, 28 ms a token) can meet, its TPOT
# limit below tgi's and the naive server's decode time; "impossible" no server can (TTFT <= 5 ms).
CPU_SETS = {"tight": {"ttft_ms": 500, "tpot_ms": 30, "percentile": 90},
            "impossible": {"ttft_ms": 5, "tpot_ms": 1, "percentile": 90}}


def test_a_set_no_arm_meets_is_said_in_one_line_with_each_arms_reason(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("transformers-naive", "tgi", "vllm"), tasks=("chat",), capacity=["chat"],
                      slo=CPU_SETS)
    results = write_results(cfg, tmp_path / "results")
    ranking = next(r for r in build_context(cfg, results)["capacity"] if r.slo == "impossible")
    assert ranking.none_met and all(a.req_s == 0 for a in ranking.ranked)
    assert ranking.summary.startswith("No arm meets impossible on Synthetic CPU @ 2.0GHz: ")
    assert "best" not in ranking.summary and "rank" not in ranking.summary
    for a in ranking.ranked:
        assert a.arm in ranking.summary
    cap = _section(_render(cfg, results), "capacity")
    assert 'data-slo="impossible">No arm meets impossible on Synthetic CPU @ 2.0GHz: ' in cap
    # No table of zeros for this set (the other set keeps its table), and no rank given.
    assert '<table class="capacity" data-task="chat" data-slo="impossible">' not in cap
    assert '<table class="capacity" data-task="chat" data-slo="tight">' in cap
    listed = re.search(r'<ul class="note not-met" data-task="chat" data-slo="impossible">(.*?)</ul>', cap,
                       re.S).group(1)
    for arm in ("transformers-naive", "tgi", "vllm"):
        doc = json.loads((results / "sweeps" / arm / "smollm2-135m" / "capacity-chat.json").read_text())
        res = doc["capacity"]["results"]["impossible"]
        item = re.search(rf'<li data-arm="{arm}" data-status="{res["status"]}">(.*?)</li>', listed, re.S).group(1)
        assert str(escape(res["reason"])) in item and "capacity-chat.json" in item


def test_a_set_no_arm_with_a_result_meets_says_which_arms_have_none(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("tgi", "vllm"), tasks=("chat",), capacity=["chat"], slo=CPU_SETS)
    results = write_results(cfg, tmp_path / "results", missing=["tgi/smollm2-135m/capacity-chat"])
    ranking = next(r for r in build_context(cfg, results)["capacity"] if r.slo == "impossible")
    assert ranking.none_met and [a.arm for a in ranking.ranked] == ["vllm"]
    assert ranking.summary.startswith("No arm with a result meets impossible")
    listed = re.search(r'<ul class="note not-met" data-task="chat" data-slo="impossible">(.*?)</ul>',
                       _section(_render(cfg, results), "capacity"), re.S).group(1)
    assert re.search(r'<li data-arm="tgi" data-status="missing">.*not ranked: missing', listed, re.S)


def test_one_arm_that_meets_the_set_is_ranked_above_the_arms_that_do_not(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("transformers-naive", "tgi", "vllm"), tasks=("chat",), capacity=["chat"],
                      slo=CPU_SETS)
    results = write_results(cfg, tmp_path / "results")
    ranking = next(r for r in build_context(cfg, results)["capacity"] if r.slo == "tight")
    by_arm = {a.arm: a for a in ranking.ranked}
    vllm, rest = by_arm["vllm"], [by_arm["tgi"], by_arm["transformers-naive"]]
    assert not ranking.none_met and vllm.meets and not any(a.meets for a in rest)
    # A capacity of 0 still has a finite upper end (the lowest rate that broke the set), so the
    # arms that never met the set cannot tie with the one that did.
    assert all(a.high is not None and a.high < vllm.low for a in rest)
    assert vllm.rank == 1 and not vllm.tied and all(a.rank == 2 and a.tied for a in rest)
    assert ranking.summary.startswith("vllm carries the most load at tight: ")
    cap = _section(_render(cfg, results), "capacity")
    assert re.search(r'<tr class="rank-2" data-arm="tgi" data-rank="2">(?:(?!</tr>).)*not met at any rate tried',
                     cap, re.S)


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
    # Without intervals the row names no best arm: it says the order is unranked.
    assert ttft.verdict == "unranked"
    row = _headline_row(html, "TTFT p50")
    assert 'data-verdict="unranked"' in row and "no interval to order them" in row
    assert 'class="win' not in row and "best" not in row.lower()


def test_headline_carries_intervals_and_says_tie_or_not(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("tgi", "vllm"), tasks=("chat", "qa"), requests=30, sweeps=False)
    far = write_results(cfg, tmp_path / "far", speed={"tgi": 3.0})
    ttft = build_context(cfg, far)["headline"]["smollm2-135m"][0]
    assert ttft.winner[0] == "vllm" and ttft.tie is False
    for arm, value in ttft.ranked:
        lo, hi = ttft.intervals[arm]
        assert lo <= value <= hi
    # Resolved: the first arm is shown as the winner, with its margin.
    assert ttft.verdict == "best" and ttft.tied == ["vllm"]
    row = _headline_row(_render(cfg, far), "TTFT p50")
    assert re.search(r'<td class="win id"[^>]*><span class="dot"[^>]*></span>vllm</td>', row)
    assert 'class="n margin"' in row and ">tie<" not in row
    near = write_results(cfg, tmp_path / "near", speed={"tgi": 1.0})
    ttft = build_context(cfg, near)["headline"]["smollm2-135m"][0]
    assert ttft.tie is True
    assert ">tie<" in _section(_render(cfg, near), "headline")
    # A tie names both arms and paints neither as the winner.
    assert ttft.verdict == "tie" and ttft.tied == [ttft.winner[0], ttft.runner_up[0]]
    row = _headline_row(_render(cfg, near), "TTFT p50")
    verdict = re.search(r'<td class="id"><span class="badge tie"[^>]*>tie</span>(.*?)</td>', row).group(1)
    assert "vllm" in verdict and "tgi" in verdict
    assert 'class="win' not in row and 'class="n margin"' not in row


def test_headline_compares_arms_on_the_tasks_all_of_them_ran(tmp_path: Path):
    """A task nobody ran yet cannot favour anyone: it is left out (and said). An arm that ran fewer
    tasks than the others is not ranked rather than shrinking everyone's comparison to its tasks,
    and one arm that ran more tasks does not unrank the others: the comparison keeps the most
    arm x task figures. So no arm wins by skipping the hard part."""
    cfg = make_config(device="cpu", arms=("transformers-naive", "tgi", "vllm"), tasks=("chat", "qa"), requests=30,
                      sweeps=False)

    def ttft_after(name: str, drops: list[tuple[str, str]]):
        results = write_results(cfg, tmp_path / name, speed={"tgi": 3.0, "transformers-naive": 5.0})
        for arm, task in drops:
            for f in (results / "cells" / arm / "smollm2-135m" / task).glob("stream*"):
                f.unlink()
        return build_context(cfg, results)["headline"]["smollm2-135m"][0]

    # One arm ran fewer tasks: the other two keep both, it is not ranked.
    ttft = ttft_after("fewer", [("transformers-naive", "qa")])
    assert [a for a, _ in ttft.ranked] == ["vllm", "tgi"] and "over the tasks (chat, qa)" in ttft.basis
    assert ttft.unranked == [("transformers-naive", "no figure for qa/stream (missing)")]
    # One arm ran more tasks: the others are not unranked for it, qa is left out and said.
    ttft = ttft_after("more", [("transformers-naive", "qa"), ("tgi", "qa")])
    assert [a for a, _ in ttft.ranked] == ["vllm", "tgi", "transformers-naive"] and not ttft.unranked
    assert "over the tasks (chat)" in ttft.basis and "left out, not run by every arm compared: qa" in ttft.basis
    # A task nobody ran: left out the same way.
    ttft = ttft_after("none", [(arm, "qa") for arm in ("transformers-naive", "tgi", "vllm")])
    assert len(ttft.ranked) == 3 and "left out, not run by every arm compared: qa" in ttft.basis


def test_headline_does_not_rank_an_arm_restricted_to_a_task_list(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("tgi", "vllm"), tasks=("chat", "qa"), requests=30, sweeps=False)
    results = write_results(cfg, tmp_path / "r")
    cfg.frameworks["vllm"] = cfg.frameworks["vllm"].model_copy(update={"tasks": ["qa"]})
    for row in build_context(cfg, results)["headline"]["smollm2-135m"]:
        assert "vllm" not in [a for a, _ in row.ranked]
        assert ("vllm", "runs only qa: compared with its twin under Conversations and prefix caching") in row.unranked


def _ranking(better: str, **cis) -> Ranking:
    r = Ranking("TTFT p50", "ms", better, "synthetic")
    for arm, (point, ci) in cis.items():
        r.ranked.append((arm, point))
        r.intervals[arm] = ci
    return r


def test_headline_verdict_names_a_best_arm_only_when_it_is_clear_of_every_other():
    # a is clear of b, but c's wide interval reaches over a's: a is not surely best.
    r = _ranking("lower", a=(10, (9, 11)), b=(14, (13, 15)), c=(16, (8, 30)))
    assert r.tie is False and r.verdict == "tie" and r.tied == ["a", "c"]
    r = _ranking("higher", a=(20, (19, 21)), b=(14, (13, 15)), c=(10, (8, 12)))
    assert r.verdict == "best" and r.tied == ["a"]
    # The first two are clear of each other, but the third has no interval: no order is sure.
    r = _ranking("lower", a=(10, (9, 11)), b=(14, (13, 15)), c=(16, None))
    assert r.tie is False and r.verdict == "unranked" and r.tied == []
    assert _ranking("lower", a=(10, (9, 11))).verdict == "only"
    assert _ranking("lower").verdict == "none"


def _headline_row(html: str, label: str) -> str:
    rows = re.findall(r"<tr\b.*?</tr>", _section(html, "headline"), re.S)
    return next(r for r in rows if f"<b>{label}</b>" in r)


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


def test_a_window_not_counted_for_a_stall_is_listed_with_its_reason(gpu_cfg, tmp_path: Path):
    """A capacity window the search did not count because the server stalled (docs/capacity.md)
    shows in the report's flags with the search's reason."""
    results = write_results(gpu_cfg, tmp_path / "results")
    path = results / "sweeps" / "vllm" / "gpt2" / "capacity-chat.json"
    doc = json.loads(path.read_text())
    used = {i for r in doc["capacity"]["results"].values() for i in (r["capacity_window"], r["failing_window"])}
    w = next(w for w in doc["windows"][1:] if w["window"] not in used)
    reason = "server stalled 6.7 s with 10 requests in flight (stall_s 2)"
    w.update(valid=False, invalid_reason=reason, stall_s=6.7, stall_in_flight=10)
    path.write_text(json.dumps(doc))
    html = _render(gpu_cfg, results)
    assert re.search(rf"capacity windows not counted.*?window {w['window']} at [0-9.]+ req/s: "
                     + re.escape(str(escape(reason))), html, re.S)


def _before_the_stall_rule(results: Path, arm: str = "vllm") -> tuple[Path, dict, int]:
    """A capacity result as the kit wrote it before the stall rule: no stall figures on its windows."""
    path = results / "sweeps" / arm / "gpt2" / "capacity-chat.json"
    doc = json.loads(path.read_text())
    for w in doc["windows"]:
        w.pop("stall_s", None), w.pop("stall_in_flight", None)
    path.write_text(json.dumps(doc))
    return path, doc, next(iter(doc["capacity"]["results"].values()))["failing_window"]


def test_a_counted_window_that_failed_during_a_stall_is_found_in_its_requests(gpu_cfg, tmp_path: Path):
    """Results measured before the stall rule carry no stall figures: the report finds the stall in
    the failing window's request records, and says the capacity may rest on it (a warning); the
    same results without a silence in their records get no such flag."""
    results = write_results(gpu_cfg, tmp_path / "results")
    path, doc, failing = _before_the_stall_rule(results)
    flags = build_context(gpu_cfg, results)["flags"]
    assert not [f for f in flags if f.what == "capacity window with a server stall"]

    requests = path.with_name(Path(doc["requests_file"]).name)
    rows = [json.loads(line) for line in requests.read_text().splitlines()]
    silent = [r for r in rows if r.get("window") == failing and not r.get("warmup")]
    base = silent[0]["dispatch_ns"]
    for i, r in enumerate(silent):  # all in flight together, every one silent from 30 ms to 5.03 s
        r.update(dispatch_ns=base + i * 1_000_000, event_offsets_ms=[10.0, 20.0, 30.0, 5030.0, 5040.0],
                 ttft_ms=10.0, e2e_ms=5040.0)
    requests.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = build_context(gpu_cfg, results)["flags"]
    stall = [f for f in flags if f.what == "capacity window with a server stall"]
    assert len(stall) == 1 and stall[0].severity == "warn" and stall[0].cells == ["vllm/gpt2/capacity-chat"]
    silence_s = (5030.0 - (30.0 + (len(silent) - 1))) / 1000  # the last dispatched one's 30 ms to the first's 5.03 s
    assert re.search(rf"window {failing} at [0-9.]+ req/s failed while the server sent no token for {silence_s:.1f} s "
                     rf"with {len(silent)} requests in flight; it was measured before the stall rule",
                     stall[0].detail), stall[0].detail


def test_a_capacity_below_every_rate_tried_reads_below_the_lowest_rate_that_broke_it(gpu_cfg, tmp_path: Path):
    """"<" is below the lowest rate tried (the section's definition), per GPU like the other
    figures, even where that window did not break the set surely and the interval reaches higher
    (lease 7 on the H200: `transformers serve` on gpt2 read "< 0.963", the interval's end, though
    0.482 req/s had broken the set)."""
    from servingbench.host.report import fmt

    results = write_results(gpu_cfg, tmp_path / "results", speed={"tgi": 2.0})
    path = results / "sweeps" / "transformers-naive" / "gpt2" / "capacity-chat.json"
    doc = json.loads(path.read_text())
    res = doc["capacity"]["results"]["interactive"]
    lowest = res["capacity_req_s"] * 0.75  # any rate other than the interval's ends
    res.update(status="below_lowest", capacity_req_s=0.0, highest_passing_req_s=None,
               lowest_failing_req_s=lowest, capacity_window=None, capacity_output_tok_s=None,
               reason=f"not met at {lowest:.4g} req/s, the lowest rate tried before the search stopped")
    path.write_text(json.dumps(doc))
    ranking = next(r for r in build_context(gpu_cfg, results)["capacity"] if r.slo == "interactive")
    naive = next(a for a in ranking.ranked if a.arm == "transformers-naive")
    assert naive.upper_bound_only and naive.lowest_failing == pytest.approx(lowest / 2)  # two GPUs per server
    assert naive.high != pytest.approx(naive.lowest_failing)  # the premise: the interval ends elsewhere
    row = re.search(r'<tr[^>]*data-arm="transformers-naive"[^>]*>.*?</tr>', _section(_render(gpu_cfg, results),
                    "capacity"), re.S).group(0)
    assert f"&lt; {fmt.num(lowest / 2)}<" in row and f"&lt; {fmt.num(naive.high)}<" not in row
