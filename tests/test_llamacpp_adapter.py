"""The llamacpp adapter without a server: what it asks llama-server for, and how it reads the
answers (payloads in llama-server's own format, as its source writes them)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from servingbench.host.config import load_config, server_spec
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.frameworks.llamacpp import BINARY_ENV, gguf_path
from servingbench.runtime.spec import GenerationParams, PromptItem
from tests.conftest import REPO

TIMINGS = {"cache_n": 0, "prompt_n": 42, "prompt_ms": 80.5, "prompt_per_token_ms": 1.9, "prompt_per_second": 521.7,
           "predicted_n": 7, "predicted_ms": 120.0, "predicted_per_token_ms": 20.0, "predicted_per_second": 50.0}


@pytest.fixture
def server():
    return server_spec(load_config(REPO / "configs" / "cpu.yaml"), "llamacpp", "smollm2-135m")


def test_launch_serves_the_gguf_with_one_models_context_per_slot(server, monkeypatch):
    monkeypatch.setenv(BINARY_ENV, "/opt/llama/llama-server")
    argv = get_adapter("llamacpp").launch(server, "127.0.0.1", 8123).argv
    assert argv[0] == "/opt/llama/llama-server"
    assert argv[argv.index("--model") + 1] == gguf_path("models/smollm2-135m") == "models/smollm2-135m.gguf"
    assert argv[argv.index("--parallel") + 1] == "4" and argv.count("--parallel") == 1  # from server_args
    assert argv[argv.index("--ctx-size") + 1] == str(4 * server.context_length)
    assert argv[argv.index("--cache-ram") + 1] == "0"  # prefix caching off: no prompt states kept
    assert "--n-gpu-layers" not in argv
    gpu = dataclasses.replace(server, device="cuda", server_args=(), prefix_caching=True)
    argv = get_adapter("llamacpp").launch(gpu, "127.0.0.1", 8123).argv
    assert argv[argv.index("--parallel") + 1] == "4" and "--cache-ram" not in argv
    assert argv[argv.index("--n-gpu-layers") + 1] == "999"


def test_dummy_weights_and_unknown_dtypes_are_refused(server):
    with pytest.raises(ValueError, match="dummy"):
        get_adapter("llamacpp").launch(dataclasses.replace(server, weights="dummy"), "127.0.0.1", 1)
    with pytest.raises(ValueError, match="dtype"):
        get_adapter("llamacpp").launch(dataclasses.replace(server, dtype="auto"), "127.0.0.1", 1)


def test_requests_force_the_length_and_sample_with_temperature_and_top_p_only(server):
    item = PromptItem(id="p", prompt="<|im_start|>user\nHi<|im_end|>\n", prompt_tokens=9, target_output_tokens=5)
    req = get_adapter("llamacpp").build_request(server, item, GenerationParams(0.9, 0.95, 100), 5, True, True)
    assert req.path == "/v1/completions"
    assert req.json == {"model": "smollm2-135m", "prompt": item.prompt, "max_tokens": 5, "temperature": 0.9,
                        "top_p": 0.95, "top_k": 0, "min_p": 0.0, "cache_prompt": False, "ignore_eos": True,
                        "stream": True, "stream_options": {"include_usage": True}}
    natural = get_adapter("llamacpp").build_request(server, item, GenerationParams(0.9, 0.95, 100), 100, False, False)
    assert "ignore_eos" not in natural.json and "stream" not in natural.json


def test_sync_answer_keeps_usage_and_timings():
    body = {"choices": [{"text": "a b c", "index": 0, "finish_reason": "length"}], "object": "text_completion",
            "usage": {"completion_tokens": 7, "prompt_tokens": 42, "total_tokens": 49}, "timings": TIMINGS}
    done = get_adapter("llamacpp").parse_response(200, {}, json.dumps(body).encode())
    assert (done.text, done.output_tokens, done.prompt_tokens, done.output_tokens_source) == ("a b c", 7, 42, "server")
    assert done.server_timing == {k: float(TIMINGS[k]) for k in
                                  ("cache_n", "prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_token_ms")}
    adapter = get_adapter("llamacpp")
    assert adapter.server_ttft_ms(done.server_timing) == 80.5 and adapter.server_tpot_ms(done.server_timing) == 20.0
    err = adapter.parse_response(400, {}, json.dumps({"error": {"code": 400, "message": "bad"}}).encode())
    assert err.error and "bad" in err.error and err.server_timing == {}


def test_stream_reader_takes_text_then_usage_and_timings_from_the_final_chunk():
    reader = get_adapter("llamacpp").stream_reader()
    texts = [reader.feed(json.dumps({"choices": [{"text": t, "index": 0, "finish_reason": None}]})).text
             for t in ("Hel", "lo")]
    final = {"choices": [{"text": "", "index": 0, "finish_reason": "length"}], "usage": {"completion_tokens": 2,
             "prompt_tokens": 3, "total_tokens": 5}, "timings": dict(TIMINGS, predicted_n=2)}
    assert reader.feed(json.dumps(final)).text == ""
    assert reader.feed("[DONE]").done
    done = reader.result()
    assert texts == ["Hel", "lo"] and done.text == "Hello" and done.output_tokens == 2
    assert done.finish_reason == "length" and done.server_timing["prompt_ms"] == 80.5
    assert get_adapter("llamacpp").server_tpot_ms(done.server_timing) == 20.0
    one = dict(TIMINGS, predicted_n=1)
    assert get_adapter("llamacpp").server_tpot_ms(one) is None  # no decode step after the first token
