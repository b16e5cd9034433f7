"""The TGI adapters (``tgi``, ``tgi-openai``) against TGI's own recorded answers and API schemas.

TGI cannot run here (no GPU, no Docker), so the wire format comes from
``tests/fixtures/tgi/`` (a copy of the project's ``shared/fixtures/tgi/``): integration-test snapshots and the OpenAPI descriptions of TGI 1.1.0
and 3.3.7. Every request body the adapters build is validated against those schemas.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.frameworks.base import TOKENS_FROM_SERVER
from servingbench.runtime.frameworks.tgi import ADAPTER as TGI
from servingbench.runtime.frameworks.tgi import TGIStreamReader
from servingbench.runtime.frameworks.tgi_openai import ADAPTER as TGI_OPENAI
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec
from servingbench.runtime.sse import SSEParser

REPO = Path(__file__).resolve().parents[1]
# A copy of the project's shared/fixtures/tgi/ (its README says where each file comes from), kept
# in the repo so that a fresh clone runs these tests too.
FIXTURES = REPO / "tests" / "fixtures" / "tgi"

GENERATE_SNAPSHOTS = ["gpt2", "llama_simple", "mistral", "phi"]
LINES = {"seed": "1.1.0", "current": "3.3.7"}  # profile -> TGI version of its OpenAPI fixture


# --- helpers ------------------------------------------------------------------------------

def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def generate_snapshots() -> list[tuple[str, dict]]:
    """Every recorded /generate answer: the four single ones and the four of the load test."""
    cases = [(n, fixture(f"snapshot_test_flash_{n}.json")) for n in GENERATE_SNAPSHOTS]
    cases += [(f"mistral_load[{i}]", r) for i, r in enumerate(fixture("snapshot_test_flash_mistral_load.json"))]
    return cases


def server(profile: str = "current", **kw: Any) -> ServerSpec:
    base = dict(arm="tgi", framework="tgi", model="mistral-7b-instruct", model_dir="models/mistral-7b-instruct",
                hf_id="mistralai/Mistral-7B-Instruct-v0.1", weights="real", device="cuda", dtype="float16",
                context_length=4096, profile=profile)
    base.update(kw)
    return ServerSpec(**base)


def item(prompt: str = "What is deep learning?", **extra: Any) -> PromptItem:
    return PromptItem(id="p1", prompt=prompt, prompt_tokens=6, target_output_tokens=20,
                      messages=({"role": "user", "content": prompt},), extra=dict(extra))


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema 2020-12: ``nullable: true`` becomes an allowed null.

    TGI's schemas (utoipa) already write exclusiveMinimum/Maximum as numbers, the 2020-12 way.
    """
    if isinstance(node, list):
        return [_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k not in ("nullable", "example", "discriminator")}
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


_VALIDATORS: dict[tuple[str, str], Draft202012Validator] = {}


def validator(version: str, schema_name: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<schema_name>`` of TGI's OpenAPI ``version``."""
    key = (version, schema_name)
    if key not in _VALIDATORS:
        uri = f"urn:tgi-openapi:{version}"
        doc = _to_json_schema(fixture(f"openapi_v{version}.json"))
        registry = Registry().with_resource(uri, Resource.from_contents(doc, default_specification=DRAFT202012))
        _VALIDATORS[key] = Draft202012Validator({"$ref": f"{uri}#/components/schemas/{schema_name}"},
                                                registry=registry)
    return _VALIDATORS[key]


def errors(version: str, schema_name: str, instance: Any) -> list[str]:
    return [e.message for e in validator(version, schema_name).iter_errors(instance)]


def request_schema(version: str, path: str) -> str:
    """The request-body schema TGI's OpenAPI names for a route."""
    doc = fixture(f"openapi_v{version}.json")
    ref = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


def sse_body(events: list[Any], space: bool = False, done_marker: bool = False) -> bytes:
    """An SSE body as TGI writes it: ``data:{json}`` (serde_json: compact, UTF-8), blank line."""
    sep = "data: " if space else "data:"
    out = "".join(f"{sep}{json.dumps(e, separators=(',', ':'), ensure_ascii=False)}\n\n" for e in events)
    if done_marker:
        out += f"{sep}[DONE]\n\n"
    return out.encode()


def payloads(body: bytes, chunk: int = 7) -> list[str]:
    """Split with the client's own SSE parser, in small chunks so events straddle reads."""
    parser, out = SSEParser(), []
    for i in range(0, len(body), chunk):
        out += parser.feed(body[i:i + chunk])
    return out + parser.flush()


def native_stream_events(snapshot: dict, line: str, prompt_tokens: int = 7) -> list[dict]:
    """The /generate_stream events TGI would send for a recorded /generate answer (details on)."""
    tokens = snapshot["details"]["tokens"]
    events = []
    for i, tok in enumerate(tokens, 1):
        events.append({"index": i, "token": tok, "generated_text": None, "details": None})
    details = {"finish_reason": snapshot["details"]["finish_reason"],
               "generated_tokens": snapshot["details"]["generated_tokens"], "seed": None}
    if line == "current":
        details["input_length"] = prompt_tokens  # StreamDetails gained input_length in TGI 2
    events[-1].update(generated_text=snapshot["generated_text"], details=details)
    if line == "seed":
        for e in events:
            e.pop("index")  # TGI 1.1's StreamResponse has no index
    return events


def feed_all(reader: Any, data: list[str]) -> list[Any]:
    return [reader.feed(p) for p in data]


# --- /generate ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,snap", generate_snapshots(), ids=[n for n, _ in generate_snapshots()])
def test_generate_snapshot_parses(name: str, snap: dict) -> None:
    done = TGI.parse_response(200, {"Content-Type": "application/json"}, json.dumps(snap).encode())
    assert done.error is None
    assert done.text == snap["generated_text"]
    assert done.output_tokens == snap["details"]["generated_tokens"] == len(snap["details"]["tokens"])
    assert done.output_tokens_source == TOKENS_FROM_SERVER
    assert done.finish_reason == "length"


@pytest.mark.parametrize("version", LINES.values())
@pytest.mark.parametrize("name,snap", generate_snapshots(), ids=[n for n, _ in generate_snapshots()])
def test_generate_snapshots_are_schema_valid_once_client_nulls_are_dropped(version: str, name: str, snap: dict) -> None:
    # The snapshots are the Python client's model dumps: they write best_of_sequences and
    # top_tokens as null where the server omits them (skip_serializing_if). Drop those.
    wire = json.loads(json.dumps(snap))
    for key in ("best_of_sequences", "top_tokens"):
        if wire["details"].get(key) is None:
            wire["details"].pop(key, None)
    assert errors(version, "GenerateResponse", wire) == []
    if version == "3.3.7" and snap["details"].get("top_tokens", []) is None:
        assert errors(version, "GenerateResponse", snap), "top_tokens: null is not what the server writes"


def test_timing_and_count_headers_become_numbers() -> None:
    snap = fixture("snapshot_test_flash_llama_simple.json")
    headers = {"X-Total-Time": "812", "x-validation-time": "2", "x-queue-time": "0", "x-inference-time": "809",
               "x-time-per-token": "80", "x-prompt-tokens": "5", "x-generated-tokens": "10",
               "x-compute-type": "1-nvidia-a10g"}
    done = TGI.parse_response(200, headers, json.dumps(snap).encode())
    assert done.server_timing == {"total_ms": 812.0, "validation_ms": 2.0, "queue_ms": 0.0,
                                  "inference_ms": 809.0, "time_per_token_ms": 80.0}
    assert all(isinstance(v, float) for v in done.server_timing.values())
    assert done.prompt_tokens == 5 and done.output_tokens == 10


def test_count_headers_stand_in_when_details_are_missing() -> None:
    body = json.dumps({"generated_text": "hi"}).encode()
    done = TGI.parse_response(200, {"x-generated-tokens": "3", "x-prompt-tokens": "9"}, body)
    assert (done.output_tokens, done.prompt_tokens, done.output_tokens_source) == (3, 9, TOKENS_FROM_SERVER)
    bare = TGI.parse_response(200, {}, body)
    assert bare.output_tokens is None and bare.output_tokens_source == "unknown"


@pytest.mark.parametrize("status,kind,message", [
    (422, "validation", "Input validation error: `top_p` must be > 0.0 and < 1.0"),
    (424, "generation", "Request failed during generation"),
    (429, "overloaded", "Model is overloaded"),
    (500, "incomplete_generation", "Incomplete generation"),
])
def test_error_bodies_become_clear_errors(status: int, kind: str, message: str) -> None:
    body = {"error": message, "error_type": kind}
    assert errors("3.3.7", "ErrorResponse", body) == []
    for adapter in (TGI, TGI_OPENAI):
        done = adapter.parse_response(status, {}, json.dumps(body).encode())
        assert done.error == f"HTTP {status} {kind}: {message}"
        assert done.text == "" and done.output_tokens is None


def test_non_json_error_body_is_reported_with_its_status() -> None:
    done = TGI.parse_response(413, {}, b"Failed to buffer the request body: length limit exceeded")
    assert done.error.startswith("HTTP 413") and "length limit" in done.error


# --- /generate_stream ---------------------------------------------------------------------

@pytest.mark.parametrize("profile", LINES)
@pytest.mark.parametrize("name,snap", generate_snapshots()[:4], ids=GENERATE_SNAPSHOTS)
def test_native_stream_rebuilt_from_snapshot(profile: str, name: str, snap: dict) -> None:
    events = native_stream_events(snap, profile)
    for e in events:  # the rebuilt events are what TGI's schema says a StreamResponse is
        assert errors(LINES[profile], "StreamResponse", e) == []
    body = sse_body(events)
    assert b"data: " not in body and body.startswith(b"data:{")
    data = payloads(body)
    assert len(data) == len(events)
    reader = TGI.stream_reader()
    updates = feed_all(reader, data)
    assert [u.done for u in updates] == [False] * (len(events) - 1) + [True]
    assert "".join(u.text for u in updates) == snap["generated_text"]
    done = reader.result()
    assert done.error is None
    assert done.text == snap["generated_text"]
    assert done.output_tokens == snap["details"]["generated_tokens"]
    assert done.output_tokens_source == TOKENS_FROM_SERVER
    assert done.finish_reason == "length"
    assert done.prompt_tokens == (7 if profile == "current" else None)


def test_special_token_is_not_content() -> None:
    events = [
        {"index": 1, "token": {"id": 22557, "text": "Hello", "logprob": -0.1, "special": False},
         "generated_text": None, "details": None},
        {"index": 2, "token": {"id": 2, "text": "</s>", "logprob": -0.2, "special": True},
         "generated_text": "Hello", "details": {"finish_reason": "eos_token", "generated_tokens": 2,
                                                 "seed": 42, "input_length": 3}},
    ]
    reader = TGIStreamReader()
    updates = feed_all(reader, payloads(sse_body(events)))
    assert [(u.text, u.done) for u in updates] == [("Hello", False), ("", True)]
    done = reader.result()
    assert (done.text, done.output_tokens, done.finish_reason) == ("Hello", 2, "eos_token")


def test_stream_error_event_ends_the_stream() -> None:
    first = {"index": 1, "token": {"id": 5, "text": "A", "logprob": -1.0, "special": False},
             "generated_text": None, "details": None}
    err = {"error": "Request failed during generation: Server error: CUDA out of memory", "error_type": "generation"}
    reader = TGIStreamReader()
    updates = feed_all(reader, payloads(sse_body([first, err])))
    assert updates[1].done and updates[1].error == f"generation: {err['error']}"
    assert reader.result().error == f"generation: {err['error']}"


def test_stream_cut_off_before_final_event_is_an_error() -> None:
    first = {"index": 1, "token": {"id": 5, "text": "A", "logprob": -1.0, "special": False},
             "generated_text": None, "details": None}
    reader = TGIStreamReader()
    feed_all(reader, payloads(sse_body([first])))
    assert "final event" in reader.result().error


def test_malformed_event_is_an_error() -> None:
    update = TGIStreamReader().feed("{not json")
    assert update.done and "malformed" in update.error


# --- the OpenAI routes (tgi-openai) ---------------------------------------------------------

@pytest.mark.parametrize("name,tokens,prompt,texts", [
    ("snapshot_test_flash_llama_completion_stream_usage.json", 10, 40, 10),
    # A streamed chat (chunk list), 3 tokens of which the last, EOS, carries no text.
    ("snapshot_test_chat_openai_usage.json", 3, 39, 2),
])
def test_openai_stream_snapshot_usage_on_last_chunk(name: str, tokens: int, prompt: int, texts: int) -> None:
    chunks = fixture(name)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == tokens
    reader = TGI_OPENAI.stream_reader()
    updates = feed_all(reader, payloads(sse_body(chunks, done_marker=True)))
    assert sum(1 for u in updates if u.text) == texts
    assert updates[-1].done and not updates[-2].text  # usage chunk, then [DONE]
    done = reader.result()
    assert done.error is None
    assert done.output_tokens == tokens and done.prompt_tokens == prompt
    assert done.output_tokens_source == TOKENS_FROM_SERVER
    assert done.text == "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"])


def test_openai_sync_completion_takes_usage_and_timing_headers() -> None:
    body = {"id": "", "created": 1741373593, "model": "mistralai/Mistral-7B-Instruct-v0.1",
            "system_fingerprint": "3.3.7-native", "object": "text_completion",
            "choices": [{"index": 0, "text": " for /api/v1", "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}
    assert errors("3.3.7", "CompletionFinal", body) == []
    done = TGI_OPENAI.parse_response(200, {"x-total-time": "95", "x-queue-time": "1"}, json.dumps(body).encode())
    assert (done.text, done.output_tokens, done.prompt_tokens) == (" for /api/v1", 4, 5)
    assert done.server_timing == {"total_ms": 95.0, "queue_ms": 1.0}


# --- requests: sampling rules -----------------------------------------------------------------

def test_top_p_one_is_sent_as_no_top_p() -> None:
    req = TGI.build_request(server(), item(), GenerationParams(0.3, 1.0, 40), 40, False, False)
    assert "top_p" not in req.json["parameters"]
    assert req.json["parameters"]["temperature"] == 0.3
    req = TGI.build_request(server(), item(), GenerationParams(0.9, 0.95, 100), 100, False, True)
    assert req.json["parameters"]["top_p"] == 0.95 and req.json["parameters"]["temperature"] == 0.9
    for route in ("/v1/completions", "/v1/chat/completions"):
        adapter = _openai_adapter(route)
        capped = adapter.build_request(server(), item(), GenerationParams(0.3, 1.0, 40), 40, False, True)
        assert "top_p" not in capped.json
        body = adapter.build_request(server(), item(), GenerationParams(0.7, 0.85, 120), 120, False, False).json
        assert (body["top_p"], body["temperature"]) == (0.85, 0.7)


def test_native_request_shape() -> None:
    sync = TGI.build_request(server(), item(seed=42), GenerationParams(0.8, 0.9, 120), 64, True, False)
    assert (sync.method, sync.path) == ("POST", "/generate")
    assert sync.json == {"inputs": "What is deep learning?", "parameters": {
        "max_new_tokens": 64, "temperature": 0.8, "top_p": 0.9, "do_sample": True, "details": True,
        "decoder_input_details": False, "return_full_text": False, "seed": 42}}
    stream = TGI.build_request(server(), item(), GenerationParams(0.8, 0.9, 120), 64, False, True)
    assert stream.path == "/generate_stream" and "seed" not in stream.json["parameters"]


@pytest.mark.parametrize("gen,tokens,what", [
    (GenerationParams(0.0, 0.9, 10), 10, "temperature"),
    (GenerationParams(-1.0, 0.9, 10), 10, "temperature"),
    (GenerationParams(0.7, 0.0, 10), 10, "top_p"),
    (GenerationParams(0.7, 1.5, 10), 10, "top_p"),
    (GenerationParams(0.7, 0.9, 10), 0, "max_new_tokens"),
])
def test_invalid_sampling_is_refused_before_sending(gen: GenerationParams, tokens: int, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        TGI.build_request(server(), item(), gen, tokens, False, False)


def test_openai_bodies_follow_tgi_quirks() -> None:
    comp = _openai_adapter("/v1/completions").build_request(
        server(), item(), GenerationParams(0.8, 0.9, 120), 64, False, True).json
    assert comp["model"] == "tgi"  # anything else is read as a LoRA adapter id
    assert comp["prompt"] == ["What is deep learning?"] and comp["stream"] is True
    assert "stream_options" not in comp  # chat-only in TGI; completions streams end with usage anyway
    chat = _openai_adapter("/v1/chat/completions").build_request(
        server(), item(), GenerationParams(0.8, 0.9, 120), 64, False, True).json
    assert chat["stream_options"] == {"include_usage": True} and chat["messages"][0]["role"] == "user"


def _openai_adapter(route: str) -> Any:
    adapter = type(TGI_OPENAI)()
    adapter.route = route
    return adapter


# --- requests: against TGI's OpenAPI ------------------------------------------------------------

def matrix_generation() -> list[GenerationParams]:
    """Every generation setting of the seed matrix (config.yaml), plus edge values."""
    table = yaml.safe_load((REPO / "config.yaml").read_text())["generation"]
    gens = {GenerationParams(**g) for tasks in table.values() for g in tasks.values()}
    gens |= {GenerationParams(1.0, 1.0, 1), GenerationParams(0.05, 0.999, 511)}
    return sorted(gens, key=lambda g: (g.temperature, g.top_p, g.max_tokens))


@pytest.mark.parametrize("profile", LINES)
@pytest.mark.parametrize("stream", [False, True])
def test_native_bodies_are_valid_for_tgi_openapi(profile: str, stream: bool) -> None:
    version = LINES[profile]
    for gen in matrix_generation():
        for it in (item(), item(seed=1234)):
            req = TGI.build_request(server(profile), it, gen, gen.max_tokens, False, stream)
            schema = request_schema(version, req.path)
            assert schema == "GenerateRequest"
            assert errors(version, schema, req.json) == [], (gen, req.json)


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_bodies_are_valid_for_tgi_3_openapi(route: str, stream: bool) -> None:
    adapter = _openai_adapter(route)
    for gen in matrix_generation():
        req = adapter.build_request(server(), item(), gen, gen.max_tokens, False, stream)
        assert req.path == route
        assert errors("3.3.7", request_schema("3.3.7", route), req.json) == [], (gen, req.json)


def test_readiness_request_is_valid() -> None:
    for profile, version in LINES.items():
        req = TGI.readiness_request(server(profile))
        assert "top_p" not in req.json["parameters"]
        assert errors(version, "GenerateRequest", req.json) == []


@pytest.mark.parametrize("version", LINES.values())
def test_schema_catches_bad_bodies(version: str) -> None:
    good = {"inputs": "x", "parameters": {"max_new_tokens": 10, "temperature": 0.7, "top_p": 0.9, "do_sample": True}}
    assert errors(version, "GenerateRequest", good) == []

    def bad(**params: Any) -> list[str]:
        return errors(version, "GenerateRequest", {"inputs": "x", "parameters": {**good["parameters"], **params}})

    assert bad(temperature=0)  # exclusiveMinimum 0
    assert bad(top_p=0)  # exclusiveMinimum 0
    assert bad(top_p=1.5)  # maximum 1
    assert bad(max_new_tokens="10")
    assert errors(version, "GenerateRequest", {"parameters": good["parameters"]})  # inputs required
    # The schema allows top_p == 1 (maximum, inclusive) but the router rejects it with 422
    # (validation.rs: top_p must be > 0 and < 1): the adapter's own rule is what guards it.
    assert bad(top_p=1.0) == []
    if version == "1.1.0":
        assert bad(max_new_tokens=0)  # exclusiveMinimum 0 (3.3.7 writes only minimum 0)
        # 1.1.0's schema caps max_new_tokens below 512 (a doc annotation; the router bounds it
        # by --max-total-tokens). The seed matrix asks for at most 150.
        assert bad(max_new_tokens=512)


def test_openai_schema_catches_bad_bodies() -> None:
    ok = {"model": "tgi", "prompt": ["x"], "max_tokens": 10}
    assert errors("3.3.7", "CompletionRequest", ok) == []
    assert errors("3.3.7", "CompletionRequest", {"model": "tgi", "max_tokens": 10})  # prompt required
    assert errors("3.3.7", "CompletionRequest", {**ok, "max_tokens": -1})
    assert errors("3.3.7", "ChatRequest", {"model": "tgi", "messages": [{"role": "user"}]})  # no content
    assert errors("3.3.7", "ChatRequest", {"model": "tgi", "messages": [{"role": "user", "content": "x"}],
                                           "stream_options": {"include_usage": "yes"}})


# --- launch ---------------------------------------------------------------------------------

def test_launch_flags_follow_the_profile() -> None:
    seed = TGI.launch(server("seed", server_args=("--max-concurrent-requests", "256")), "127.0.0.1", 8080)
    argv = seed.argv
    assert argv[0] == "text-generation-launcher"
    assert _flag(argv, "--model-id") == "models/mistral-7b-instruct"
    assert (_flag(argv, "--hostname"), _flag(argv, "--port")) == ("127.0.0.1", "8080")
    assert _flag(argv, "--max-input-length") == "4095" and "--max-input-tokens" not in argv
    assert _flag(argv, "--max-total-tokens") == "4096"
    assert _flag(argv, "--dtype") == "float16"
    assert _flag(argv, "--cuda-memory-fraction") == "0.85"
    assert argv[-2:] == ["--max-concurrent-requests", "256"]
    assert "PREFIX_CACHING" not in seed.env
    current = TGI.launch(server("current", dtype="bfloat16"), "0.0.0.0", 3000)
    assert _flag(current.argv, "--max-input-tokens") == "4095" and "--max-input-length" not in current.argv
    assert _flag(current.argv, "--dtype") == "bfloat16"
    assert current.env["PREFIX_CACHING"] == "0" and current.env["HF_HUB_OFFLINE"] == "1"
    assert TGI.launch(server("current", prefix_caching=True), "h", 1).env["PREFIX_CACHING"] == "1"
    assert "--dtype" not in TGI.launch(server(dtype="auto"), "h", 1).argv


def test_model_id_falls_back_to_the_hub_id() -> None:
    argv = TGI.launch(server(model_dir=""), "h", 1).argv
    assert _flag(argv, "--model-id") == "mistralai/Mistral-7B-Instruct-v0.1"


def test_long_context_on_tgi1_raises_the_prefill_budget() -> None:
    argv = TGI.launch(server("seed", context_length=8192), "h", 1).argv
    assert _flag(argv, "--max-batch-prefill-tokens") == "8191"


def test_dummy_weights_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="TGI cannot run dummy weights"):
        TGI.launch(server(weights="dummy"), "h", 1)


@pytest.mark.parametrize("change,what", [
    (dict(profile=""), "profile"),
    (dict(profile="seed", prefix_caching=True), "prefix caching"),
    (dict(dtype="float32"), "dtype"),
    (dict(device="cpu"), "GPU"),
])
def test_unrunnable_setups_are_refused(change: dict, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        TGI.launch(server(**change), "h", 1)


def test_openai_arm_needs_tgi_2_or_later() -> None:
    with pytest.raises(ValueError, match="no /v1 routes"):
        TGI_OPENAI.launch(server("seed"), "h", 1)
    with pytest.raises(ValueError, match="no /v1 routes"):
        TGI_OPENAI.build_request(server("seed"), item(), GenerationParams(0.7, 0.9, 10), 10, False, False)
    assert TGI_OPENAI.launch(server("current"), "h", 1).argv == TGI.launch(server("current"), "h", 1).argv


def test_hf_token_never_reaches_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_" + "x" * 34
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", token)
    for adapter in (TGI, TGI_OPENAI):
        for spec in (server("current"), server("current", model_dir=""), server("seed")):
            if adapter is TGI_OPENAI and spec.profile == "seed":
                continue
            launch = adapter.launch(spec, "h", 1)
            assert token not in " ".join(launch.argv) and token not in json.dumps(launch.env)
            # TGI 3.x reads HF_TOKEN, TGI 1.x HUGGING_FACE_HUB_TOKEN: both pass through the env only.
            assert {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} <= set(launch.passthrough_env)
    with pytest.raises(ValueError, match="HF_TOKEN"):
        TGI.launch(server(env=(("HF_TOKEN", token),)), "h", 1)
    with pytest.raises(ValueError, match="token"):
        TGI.launch(server(server_args=("--revision", token)), "h", 1)


def test_adapter_facts_and_registry() -> None:
    assert get_adapter("tgi") is TGI and get_adapter("tgi-openai") is TGI_OPENAI
    assert TGI.can_force_output_length is False and TGI_OPENAI.can_force_output_length is False
    assert TGI.health_path == "/health" and TGI.server_metrics_path() == "/metrics"
    assert TGI.stream_has_done_marker is False and TGI_OPENAI.stream_has_done_marker is True
    # Forced policy on TGI: the target becomes a cap, never a forced length.
    it = dataclasses.replace(item(), target_output_tokens=30)
    assert TGI.effective_output_tokens(it, GenerationParams(0.7, 0.9, 100), "forced") == (30, False)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]
