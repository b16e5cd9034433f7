"""The SGLang arm: command line, readiness through 503, requests, stream parsing, usage and
/metrics, unit by unit and end to end against tests/sglang_standin.py (a stand-in that
reproduces what SGLang 0.5.16 did on the H200; no GPU here can run SGLang itself)."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import httpx
import pytest

from servingbench.runtime.cell import run_cell
from servingbench.host.config import ConfigError, cell_spec, parse_config, server_spec
from servingbench.runtime.frameworks import get_adapter, known_arms, openai_api
from servingbench.runtime.frameworks.base import Launch
from servingbench.runtime.frameworks.sglang import SGLangAdapter
from servingbench.runtime.lifecycle import ServerProcess
from servingbench.runtime.providers import fresh_server
from servingbench.runtime.spec import CellSpec, GenerationParams, PromptItem, ServerSpec

SGLANG = get_adapter("sglang")
REPO = Path(__file__).resolve().parent.parent


def server(**change) -> ServerSpec:
    base = ServerSpec(arm="sglang", framework="sglang", model="llama-2-7b-chat", model_dir="models/llama-2-7b-chat",
                      hf_id="meta-llama/Llama-2-7b-chat-hf", weights="dummy", device="cuda", dtype="float16",
                      context_length=2048, profile="current", server_args=("--attention-backend", "fa3"),
                      gpu_memory_utilization=0.85)
    return dataclasses.replace(base, **change)


ITEM = PromptItem(id="p0", prompt="[INST] Hello [/INST]", prompt_tokens=8, target_output_tokens=12,
                  messages=({"role": "user", "content": "Hello"},))
GEN = GenerationParams(temperature=0.7, top_p=0.95, max_tokens=150)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# -- command line ------------------------------------------------------------------------------
def test_launch_passes_the_kits_server_settings() -> None:
    argv = SGLANG.launch(server(), "127.0.0.1", 31234).argv
    assert argv[:3] == [sys.executable, "-m", "sglang.launch_server"]
    assert flag(argv, "--model-path") == "models/llama-2-7b-chat"
    assert flag(argv, "--served-model-name") == "llama-2-7b-chat"
    assert (flag(argv, "--host"), flag(argv, "--port")) == ("127.0.0.1", "31234")
    assert flag(argv, "--dtype") == "float16" and flag(argv, "--context-length") == "2048"
    assert flag(argv, "--mem-fraction-static") == "0.85"
    assert flag(argv, "--load-format") == "dummy" and flag(argv, "--device") == "cuda"
    assert "--enable-metrics" in argv and "--disable-radix-cache" in argv
    assert argv[-2:] == ["--attention-backend", "fa3"]  # the arm's own arguments come last: they win


def test_launch_follows_prefix_caching_weights_and_device() -> None:
    on = SGLANG.launch(server(prefix_caching=True), "h", 1).argv
    assert "--disable-radix-cache" not in on  # SGLang's default is its radix cache on
    real = SGLANG.launch(server(weights="real", model_dir="meta-llama/Llama-2-7b-chat-hf"), "h", 1)
    assert "--load-format" not in real.argv and "HF_HUB_OFFLINE" not in real.env
    assert SGLANG.launch(server(), "h", 1).env["HF_HUB_OFFLINE"] == "1"
    cpu = SGLANG.launch(server(device="cpu"), "h", 1).argv
    assert "--mem-fraction-static" not in cpu and flag(cpu, "--device") == "cpu"


def test_hf_token_never_reaches_argv_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_" + "y" * 34
    monkeypatch.setenv("HF_TOKEN", token)
    launch = SGLANG.launch(server(weights="real"), "h", 1)
    assert token not in " ".join(launch.argv) and token not in json.dumps(launch.env)
    assert "HF_TOKEN" in launch.passthrough_env


def test_seed_profile_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="SGLang did not exist in the seed era"):
        SGLANG.launch(server(profile="seed"), "h", 1)
    with pytest.raises(ValueError, match="seed era"):
        SGLANG.build_request(server(profile="seed"), ITEM, GEN, 12, True, True)


# -- requests ----------------------------------------------------------------------------------
def test_stream_request_forces_length_and_asks_usage_on_every_chunk() -> None:
    req = SGLANG.build_request(server(), ITEM, GEN, 12, True, True)
    assert req.method == "POST" and req.path == "/v1/completions"
    body = req.json
    assert body["model"] == "llama-2-7b-chat" and body["prompt"] == ITEM.prompt
    assert (body["max_tokens"], body["min_tokens"], body["ignore_eos"]) == (12, 12, True)
    assert (body["temperature"], body["top_p"]) == (0.7, 0.95)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_sync_and_capped_requests() -> None:
    body = SGLANG.build_request(server(), ITEM, GEN, 40, False, False).json
    assert "stream" not in body and "stream_options" not in body
    assert "ignore_eos" not in body and "min_tokens" not in body and body["max_tokens"] == 40


def test_chat_route_sends_messages() -> None:
    chat = SGLangAdapter()
    chat.route = openai_api.CHAT_COMPLETIONS
    req = chat.build_request(server(), ITEM, GEN, 12, True, True)
    assert req.path == "/v1/chat/completions" and req.json["messages"] == [{"role": "user", "content": "Hello"}]
    assert chat.takes_text_prompt is False and SGLANG.takes_text_prompt is True


# -- responses ---------------------------------------------------------------------------------
def _chunk(text: str, done: int | None, finish: str | None = None) -> str:
    out = {"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
    if done is not None:
        out["usage"] = {"prompt_tokens": 7, "completion_tokens": done, "total_tokens": 7 + done}
    return json.dumps(out)


def test_stream_reader_counts_tokens_of_events_without_text() -> None:
    """SGLang on the H200: one event per token, empty text while the detokenizer holds it back."""
    reader = SGLANG.stream_reader()
    updates = [reader.feed(p) for p in (_chunk("a", 1), _chunk("", 2), _chunk("bc", 3), _chunk("", 4, "length"))]
    usage = json.dumps({"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}})
    tail = [reader.feed(usage), reader.feed("[DONE]")]
    assert [(u.text, u.tokens) for u in updates] == [("a", 1), ("", 1), ("bc", 1), ("", 1)]
    assert all(u.carries_output for u in updates)
    assert tail[0].tokens is None and not tail[0].carries_output  # the final usage chunk is no event
    assert tail[1].done
    done = reader.result()
    assert (done.text, done.output_tokens, done.output_tokens_source, done.finish_reason) == ("abc", 4, "server", "length")


def test_stream_reader_without_per_chunk_usage_knows_no_counts() -> None:
    reader = SGLANG.stream_reader()
    assert reader.feed(_chunk("a", None)).tokens is None
    assert not reader.feed(_chunk("", None)).carries_output


def test_sync_response_takes_usage() -> None:
    body = json.dumps({"choices": [{"index": 0, "text": "hi", "finish_reason": "length"}],
                       "usage": {"prompt_tokens": 7, "completion_tokens": 12}}).encode()
    done = SGLANG.parse_response(200, {}, body)
    assert (done.text, done.output_tokens, done.prompt_tokens, done.error) == ("hi", 12, 7, None)
    err = SGLANG.parse_response(400, {}, b'{"object": "error", "message": "bad", "code": 400}')
    assert err.error and err.error.startswith("HTTP 400")


def test_metrics_names_are_sglangs_and_summed_over_label_sets() -> None:
    text = "\n".join([
        "# TYPE sglang:time_to_first_token_seconds histogram",
        'sglang:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 3.0',
        'sglang:time_to_first_token_seconds_sum{model_name="m",priority="0"} 0.25',
        'sglang:time_to_first_token_seconds_count{model_name="m",priority="0"} 3.0',
        'sglang:time_to_first_token_seconds_sum{model_name="m",priority="1"} 0.05',
        'sglang:time_to_first_token_seconds_count{model_name="m",priority="1"} 1.0',
        'sglang:inter_token_latency_seconds_sum{model_name="m"} 1.5',
        'sglang:inter_token_latency_seconds_count{model_name="m"} 300.0',
        'vllm:time_to_first_token_seconds_sum{model_name="m"} 99',
    ])
    got = SGLANG.server_side_timings(text)
    assert got["ttft"] == pytest.approx((0.30, 4.0)) and got["itl"] == pytest.approx((1.5, 300.0))
    assert SGLANG.server_metrics_path() == "/metrics"
    assert SGLANG.server_side_timings("# nothing here\n") == {}


# -- config ------------------------------------------------------------------------------------
def _config(profile: str = "current", **arm) -> dict:
    data = json.loads(json.dumps(_BASE))
    data["profile"] = profile
    data["frameworks"]["sglang"].update(arm)
    return data


_BASE = {
    "device": "cuda", "weights": "dummy", "modes": ["stream"],
    "frameworks": {"sglang": {"framework": "sglang", "server_args": ["--attention-backend", "fa3"]}},
    "models": {
        "gpt2": {"hf_id": "openai-community/gpt2", "params": "124M", "architecture": {
            "model_type": "gpt2", "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
            "vocab_size": 50257, "max_position_embeddings": 1024}},
        "phi-2": {"hf_id": "microsoft/phi-2", "params": "2.7B", "architecture": {
            "model_type": "phi", "num_hidden_layers": 32, "hidden_size": 2560, "num_attention_heads": 32,
            "vocab_size": 51200, "max_position_embeddings": 2048}}},
    "tasks": {"qa": {"input_tokens": [10, 20], "output_tokens": [5, 10]}},
    "sweeps": {"concurrency": None, "context": None},
    "generation": {"gpt2": {"qa": {"temperature": 0.3, "top_p": 1.0, "max_tokens": 12}},
                   "phi-2": {"qa": {"temperature": 0.2, "top_p": 1.0, "max_tokens": 12}}},
}


def test_sglang_is_a_known_arm_and_seed_configs_are_refused() -> None:
    assert "sglang" in known_arms()
    cfg = parse_config(_config())
    assert server_spec(cfg, "sglang", "gpt2").framework == "sglang"
    with pytest.raises(ConfigError, match=r"frameworks\.sglang: cannot run under profile seed: SGLang did not exist"):
        parse_config(_config("seed"), "h200.yaml")


def test_per_model_server_args_are_appended_and_recorded_apart() -> None:
    cfg = parse_config(_config(model_server_args={"phi-2": ["--disable-cuda-graph"]}))
    phi, gpt2 = server_spec(cfg, "sglang", "phi-2"), server_spec(cfg, "sglang", "gpt2")
    assert phi.server_args == ("--attention-backend", "fa3", "--disable-cuda-graph")
    assert phi.model_server_args == ("--disable-cuda-graph",)
    assert gpt2.server_args == ("--attention-backend", "fa3") and gpt2.model_server_args == ()
    assert phi.key() != gpt2.key()
    spec = cell_spec(cfg, "sglang", "phi-2", "qa", "stream")
    assert CellSpec.from_json(spec.to_json()) == spec  # survives the trip through run-cell --spec
    assert SGLANG.launch(phi, "h", 1).argv[-1] == "--disable-cuda-graph"
    with pytest.raises(ConfigError, match=r"model_server_args\.llama: unknown model"):
        parse_config(_config(model_server_args={"llama": ["--x"]}))


# -- end to end against the stand-in ---------------------------------------------------------------
def _standin_launch(text_mode: str, warmup_s: float):
    """The real adapter's launch, with the stand-in module in place of sglang.launch_server."""
    real = SGLangAdapter.launch

    def launch(self, srv: ServerSpec, host: str, port: int) -> Launch:
        out = real(self, srv, host, port)
        i = out.argv.index("sglang.launch_server")
        argv = out.argv[:i] + ["tests.sglang_standin"] + out.argv[i + 1:]
        return Launch(argv + ["--warmup-s", str(warmup_s), "--text-mode", text_mode], {**out.env, "PYTHONPATH": str(REPO)})
    return launch


def test_readiness_waits_through_503_until_warm_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SGLangAdapter, "launch", _standin_launch("held", 1.5))
    proc = ServerProcess(SGLANG, server(weights="dummy"), tmp_path / "server.log")
    try:
        proc.start()
        startup = proc.wait_ready(60)
        stats = httpx.get(proc.base_url + "/standin/stats", trust_env=False).json()
    finally:
        proc.stop()
    assert startup >= 1.5
    assert 503 in stats["health"] and stats["health"][-1] == 200
    assert stats["health"].index(200) > stats["health"].index(503)  # 503 first, never taken as failure
    assert stats["args"]["enable_metrics"] and stats["args"]["disable_radix_cache"]
    assert stats["bodies"][-1]["model"] == "llama-2-7b-chat"  # the readiness request came after health


@pytest.mark.parametrize("text_mode", ["held", "empty"])
def test_cell_against_the_standin(text_mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream cell whose events carry empty text (held back, or all of them, as GPT-2's did on
    the H200): every request completes, TTFT is the first token's event, ITL is per token, the
    output length is exactly the requested one, and the server's own TTFT and ITL sit beside."""
    monkeypatch.setattr(SGLangAdapter, "launch", _standin_launch(text_mode, 0.5))
    items = [PromptItem(id=f"p{i}", prompt=f"prompt {i}", prompt_tokens=3, target_output_tokens=10 + i)
             for i in range(4)]
    workload = tmp_path / "w.jsonl"
    workload.write_text("".join(json.dumps(dataclasses.asdict(it)) + "\n" for it in items))
    spec = CellSpec(server=server(model_dir=str(tmp_path)), task="qa", mode="stream",
                    generation=GenerationParams(0.3, 1.0, 40), requests=4, warmup_requests=1,
                    concurrency_levels=(1, 2), server_start_timeout_s=60, request_timeout_s=30)
    out = tmp_path / "results" / "cells" / "sglang" / "m" / "qa" / "stream.json"
    result = run_cell(spec, workload, out, tmp_path / "results", provider=fresh_server, progress_stream=io.StringIO())
    records = [json.loads(x) for x in out.with_name("stream.requests.jsonl").read_text().splitlines()]
    assert {r["error"] for r in records} == {None}
    for r in records:
        assert r["output_tokens"] == r["output_tokens_requested"] and r["output_tokens_source"] == "server"
        assert r["event_tokens"] == [1] * r["output_tokens"]  # one event per token, text or not
        assert r["ttft_ms"] >= 30 and r["ttft_ms"] == r["event_offsets_ms"][0]
    w = result["windows"][0]
    assert w["itl_unknown_requests"] == 0 and w["itl_ms"]["n"] == sum(r["output_tokens"] - 1 for r in records[:4])
    assert 8 <= w["itl_ms"]["p50"] <= 40  # the stand-in's 10 ms per token (plus scheduling)
    assert w["tokens_per_event"]["mean"] == 1.0
    assert w["output_tokens_mismatched"] == 0
    assert w["server_ttft_ms_mean"] == pytest.approx(30, abs=15)
    assert w["server_itl_ms_mean"] == pytest.approx(10, abs=8)
    assert result["server"]["server_settings"]["model_server_args"] == []
