"""The new workloads end to end without a framework: cells measured through ``measure``'s path
(an external server) against stand-in servers, then the tidy summary and the report.

The stand-ins exist to give known, distinct figures: one answers as a server with a prefix cache
would (its /metrics counters report hits; TTFT is short), the other as one without (no hits; TTFT
grows with the prompt). The figures are theirs, not a framework's; the test checks that the
summary and the page show exactly what the result files hold."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from servingbench.host.aggregate import aggregate
from servingbench.runtime.cell import run_cell
from servingbench.host.config import cell_spec, parse_config
from servingbench.runtime.providers import external_server
from servingbench.host.report.render import build_context, render_html
from servingbench.runtime.results import cell_path
from servingbench.host.build_workloads import build_workload
from tests.scripted_server import ScriptedServer, json_body, sse

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"


def _cfg(trace: Path):
    data = yaml.safe_load((ROOT / "configs" / "cpu-workloads.yaml").read_text())
    data["tasks"]["chat-multiturn"].update(turns=3, system_tokens=64, think_time_s=[0.0, 0.0])
    # Timing is test_workload_runtime's business; here the in-process stand-in shares the GIL.
    data["tasks"]["trace-replay"].update(trace=str(trace), input_tokens=[10, 100], max_lateness_ms=1000, time_scale=1.0)
    data["run"].update(requests_per_cell=3)
    return parse_config(data, "cfg")


class StandIn:
    """/v1/completions streams, /metrics counts prompt tokens (hits when ``cached``), /health."""

    def __init__(self, cached: bool) -> None:
        self.cached, self.queries, self.hits = cached, 0, 0
        self.server = ScriptedServer({"/v1/completions": self.complete, "/metrics": self.metrics,
                                      "/health": lambda r: (200, *json_body(b"{}")),
                                      "/reset_prefix_cache": lambda r: (200, *json_body(b"{}"))})

    def complete(self, r):
        body = json.loads(r["body"])
        words = len(body["prompt"].split())
        self.queries += words
        self.hits += words // 2 if self.cached else 0
        ttft = 0.005 if self.cached else 0.0002 * words
        usage = {"choices": [], "usage": {"prompt_tokens": words, "completion_tokens": body["max_tokens"]}}
        events = [json.dumps({"choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}]})
                  for i in range(body["max_tokens"])]
        return 200, {"Content-Type": "text/event-stream"}, [(ttft, b"")] + sse(*events, json.dumps(usage), "[DONE]")

    def metrics(self, r):
        text = (f'vllm:prefix_cache_queries_total{{engine="0"}} {self.queries}.0\n'
                f'vllm:prefix_cache_hits_total{{engine="0"}} {self.hits}.0\n').encode()
        return 200, *json_body(text)


@pytest.fixture(scope="module")
def run(tmp_path_factory, smollm2_dir):
    results = tmp_path_factory.mktemp("results")
    trace = results / "trace.jsonl"
    trace.write_text("".join(json.dumps({"offset_ms": o, "input_tokens": 40, "output_tokens": 8, "session_id": s})
                             + "\n" for o, s in ((0, "a"), (30, "b"), (60, "a"))))
    cfg = _cfg(trace)
    for task in cfg.tasks:
        build_workload(cfg, MODEL, task, smollm2_dir, results / "workloads" / MODEL / f"{task}.jsonl")
    for arm, cached in (("vllm", False), ("vllm-prefix-cache", True)):
        stand = StandIn(cached)
        with stand.server as s:
            for task in cfg.tasks:
                run_cell(cell_spec(cfg, arm, MODEL, task, "stream"), results / "workloads" / MODEL / f"{task}.jsonl",
                         cell_path(results, arm, MODEL, task, "stream"), results, provider=external_server(s.url))
    return cfg, results


def _doc(results: Path, arm: str, task: str) -> dict:
    return json.loads(cell_path(results, arm, MODEL, task, "stream").read_text())


def test_results_hold_per_turn_prefix_and_arrival_figures(run):
    cfg, results = run
    multi = _doc(results, "vllm", "chat-multiturn")["windows"][0]
    assert [(t["turn"], t["requests"], t["completed"]) for t in multi["per_turn"]] == [(1, 3, 3), (2, 3, 3), (3, 3, 3)]
    means = [t["prompt_tokens"]["mean"] for t in multi["per_turn"]]
    assert means[0] < means[1] < means[2]  # the history grows (the stand-in's own word count)
    shared = _doc(results, "vllm-prefix-cache", "shared-prefix")
    w = shared["windows"][0]
    assert w["prefix"]["hit_rate_expected"] == pytest.approx(1 / 3)  # 3 requests, 2 groups: one repeat and w["server_prefix_cache"]["hit_rate"] == pytest.approx(0.5, abs=0.02)
    assert shared["server"]["server_settings"]["prefix_cache_emptied"] is True  # external, emptied first
    trace = _doc(results, "vllm", "trace-replay")["windows"][0]
    assert trace["arrivals"]["scheduled"] == trace["arrivals"]["dispatched"] == 3
    assert trace["arrivals"]["scheduled_span_s"] == pytest.approx(0.06)


def test_the_summary_has_a_row_per_turn(run):
    cfg, results = run
    df = aggregate(cfg, results)
    turns = df[(df.metric == "turn_ttft_ms") & (df.statistic == "p50") & (df.framework == "vllm")]
    doc = _doc(results, "vllm", "chat-multiturn")["windows"][0]["per_turn"]
    assert list(turns["turn"]) == [1, 2, 3]
    assert list(turns["value"]) == pytest.approx([t["ttft_ms"]["p50"] for t in doc])
    assert set(df.loc[df.metric == "server_prefix_caching", "value"]) == {0.0, 1.0}
    assert set(df.loc[df.metric == "turn_prompt_tokens", "unit"]) == {"tokens", "count"}  # count: the n rows
    assert df[df.metric == "ttft_ms"]["turn"].isna().all()  # window figures carry no turn
    lat = df[(df.metric == "arrival_lateness_ms") & (df.statistic == "n")]
    assert len(lat) == 2 and (lat["value"] == 3).all()


def test_the_report_shows_per_turn_ttft_and_the_caching_ratio_per_framework(run):
    cfg, results = run
    ctx = build_context(cfg, results)
    wl = ctx["workloads"]
    assert ("workloads", "Conversations and prefix caching") in ctx["sections"]
    rows = {(r.framework, r.task): r for r in wl["caching"]}
    vllm = rows["vllm", "shared-prefix"]
    off = _doc(results, "vllm", "shared-prefix")["windows"][0]["ttft_ms"]["p50"]
    on = _doc(results, "vllm-prefix-cache", "shared-prefix")["windows"][0]["ttft_ms"]["p50"]
    assert (vllm.arm_off, vllm.arm_on, vllm.note) == ("vllm", "vllm-prefix-cache", "")
    assert vllm.ratio("ttft_p50") == pytest.approx(on / off)
    last = _doc(results, "vllm-prefix-cache", "chat-multiturn")["windows"][0]["per_turn"][-1]["ttft_ms"]["p50"]
    assert rows["vllm", "chat-multiturn"].on["repeat_ttft_p50"] == pytest.approx(last)
    # An arm without a prefix cache is shown as such, with its (missing) cells, never left out; one
    # with caching on and off but no results says why it has no ratio.
    naive = rows["transformers-naive", "chat-multiturn"]
    assert "has no prefix cache" in naive.note and naive.off["status"] == "missing" and naive.arm_on is None
    serve = rows["transformers-serve", "chat-multiturn"]
    assert serve.arm_on == "transformers-serve-prefix-cache" and serve.note == "no ratio: off missing, on missing"
    table = wl["turns"]["chat-multiturn"]
    ok = [r for r in table if r.status == "ok"]
    assert {r.arm for r in ok} == {"vllm", "vllm-prefix-cache"} and {r.caching for r in ok} == {False, True}
    assert all(len(r.turns) == 3 and r.last_over_first is not None for r in ok)
    html = render_html(ctx, inline_js=False)
    assert 'id="workloads"' in html and "TTFT per turn" in html and 'id="spec-plot-turn-ttft"' in html
    assert f"{vllm.ratio('ttft_p50'):.3g}"[:4] in html.replace(",", "")
    assert "Trace replay: scheduled against achieved arrivals" in html


def test_a_seed_report_has_no_workloads_section(tmp_path):
    from tests.resultsgen import make_config, write_results

    cfg = make_config(sweeps=False)
    write_results(cfg, tmp_path)
    ctx = build_context(cfg, tmp_path)
    assert ctx["workloads"] == {"tasks": []} and "workloads" not in [s for s, _ in ctx["sections"]]
    assert 'id="workloads"' not in render_html(ctx, inline_js=False)
