"""Requests break while the server stays up: HTTP 500/503, a connection reset, a request past
its timeout, broken streams (a malformed event, a stream cut off, an ``error`` event in TGI's
and the naive server's forms, a stream that never ends), and malformed answers (a JSON list
where an object belongs, a token count as a string, ``choices: [null]``, an HTML page with
status 200, truncated JSON, a JSON answer to a stream request, ...: ``MALFORMED``). Every
failed request is counted in its window's ``failed`` and ``errors`` with a readable reason,
never dropped and never an exception out of the cell, on both client transports.

Stand-ins only: a real server does not answer 503, reset a connection or send a malformed
event on demand. tests/scripted_server.py writes the byte sequences; standins.FaultServer adds
the TCP reset (RST) it cannot. tests/test_client.py already covers the vLLM (OpenAI) stream
faults one request at a time; these extend them to windows, to TGI and to the naive server,
and through run_cell to the result file.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from servingbench.runtime.cell import CellFailed, run_cell
from servingbench.runtime.client import LoadClient, WindowPlan
from servingbench.runtime.frameworks import get_adapter, known_arms
from servingbench.runtime.metrics import window_summary
from servingbench.runtime.providers import external_server
from servingbench.runtime.results import cell_path, failure_path, requests_path
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec
from tests.reliability.conftest import MODEL
from tests.reliability.standins import RST, SSE_HEAD, FaultServer, http_json, sse_event
from tests.scripted_server import ScriptedServer, sse

pytestmark = pytest.mark.fault
TRANSPORTS = ["http1", "httpx"]
GEN = GenerationParams(temperature=0.7, top_p=0.9, max_tokens=50)


def _server(arm: str) -> ServerSpec:
    framework = {"tgi": "tgi", "transformers-naive": "transformers", "vllm": "vllm"}[arm]
    return ServerSpec(arm=arm, framework=framework, model="m", model_dir="models/m", hf_id="x/m",
                      weights="real", device="cuda", dtype="bfloat16", context_length=2048)


def _items(n: int) -> list[PromptItem]:
    return [PromptItem(id=f"p{i}", prompt="Hello there", prompt_tokens=3, target_output_tokens=5) for i in range(n)]


def _window(url: str, arm: str, n: int, stream: bool, transport: str, timeout: float, concurrency: int = 1):
    async def go():
        async with LoadClient(url, get_adapter(arm), _server(arm), GEN, "forced", timeout,
                              max_connections=concurrency, transport=transport) as client:
            return await client.run_window(WindowPlan(items=_items(n), concurrency=concurrency, stream=stream))

    recs, window_s = asyncio.run(go())
    return recs, window_summary(recs, window_s, concurrency, stream)


# -- HTTP errors, resets, timeouts: one window, nothing dropped --------------------------------------
NAIVE_OK = {"text": "a b c d e", "generated_tokens": 5, "prompt_tokens": 3, "finish_reason": "length"}


def naive_ok(stream: bool) -> list:
    if not stream:
        return [http_json(200, json.dumps(NAIVE_OK).encode(), "OK")]
    return [SSE_HEAD, sse_event('{"text": "a b "}'), 0.01, sse_event('{"text": "c d e"}'),
            sse_event(json.dumps({k: v for k, v in NAIVE_OK.items() if k != "text"})), sse_event("[DONE]")]


def mixed_plan(stream: bool, timeout: float):
    """Ten requests: five answer, five fail, each failure of another kind."""
    def plan(path: str, body: bytes, n: int) -> list:
        if n == 1:
            return [http_json(500, b'{"error": "RuntimeError: boom"}')]
        if n == 3:
            return [http_json(503, b'{"error": "overloaded"}')]
        if n == 4:
            return [RST]  # reset before any byte of the answer
        if n == 6:
            return [timeout * 2.5] + naive_ok(stream)  # answers, but too late
        if n == 7:  # reset in the middle of the answer
            head = SSE_HEAD + sse_event('{"text": "a b "}') if stream else \
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"text\": "
            return [head, 0.05, RST]
        return naive_ok(stream)
    return plan


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["sync", "stream"])
def test_http_errors_resets_and_timeouts_are_counted_in_the_window(mode, transport):
    timeout = 1.0
    with FaultServer(mixed_plan(mode == "stream", timeout)) as srv:
        recs, summary = _window(srv.url, "transformers-naive", 10, mode == "stream", transport, timeout,
                                concurrency=2)
    failed = [r for r in recs if r.error]
    assert summary.requests == 10 == len(recs), "no request dropped"
    assert summary.completed == 5 and summary.failed == 5 == len(failed), [r.error for r in recs]
    assert sum(summary.errors.values()) == 5
    assert {"HTTP 500", "HTTP 503", "timeout after 1 s"} <= set(summary.errors), summary.errors
    assert summary.errors["ReadError"] == 2  # the two resets (before and during the answer)
    assert summary.throughput_req_s == pytest.approx(5 / summary.window_s)  # completed only
    assert summary.output_tokens_actual_total == 25


def test_failed_requests_reach_the_result_file(cell_spec_for, chat_workload, tmp_path):
    """Through run_cell (`servingbench measure --url` path): a cell where half the requests
    fail is a finished cell whose window counts them and whose requests file lists them all."""
    spec = cell_spec_for(mode="sync", requests=6, request_timeout_s=1.0)

    def plan(path, body, n):
        return [http_json(503, b'{"error": "overloaded"}')] if n % 2 else naive_ok(False)

    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    with FaultServer(plan) as srv:
        result = run_cell(spec, chat_workload, out, results, provider=external_server(srv.url))
    w = result["windows"][0]
    assert (w["requests"], w["completed"], w["failed"], w["errors"]) == (6, 3, 3, {"HTTP 503": 3})
    lines = [json.loads(x) for x in requests_path(out).read_text().splitlines()]
    assert len(lines) == 6 and sum(1 for r in lines if r["error"]) == 3
    assert json.loads(out.read_text())["windows"][0]["failed"] == 3
    assert not failure_path(out).exists()


def test_a_cell_whose_every_request_fails_is_a_failed_cell(cell_spec_for, chat_workload, tmp_path):
    spec = cell_spec_for(mode="stream", requests=4, request_timeout_s=1.0)
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "stream")
    with FaultServer(lambda path, body, n: [http_json(500, b'{"error": "CUDA error: device-side assert"}')]) as srv:
        with pytest.raises(CellFailed) as err:
            run_cell(spec, chat_workload, out, results, provider=external_server(srv.url))
    assert "transformers-naive/smollm2-135m/chat/stream" in str(err.value) and "(requests_failed)" in str(err.value)
    assert not out.exists() and not requests_path(out).exists()
    record = json.loads(failure_path(out).read_text())
    assert record["category"] == "requests_failed" and "HTTP 500: 4" in record["reason"]
    assert record["requests"] == {"requests": 4, "completed": 0, "failed": 4, "errors": {"HTTP 500": 4}}


# -- broken streams, per adapter -----------------------------------------------------------------------
def tgi_token(i: int, text: str) -> str:
    return json.dumps({"index": i, "token": {"id": i, "text": text, "logprob": -0.5, "special": False},
                       "generated_text": None, "details": None})


def chunked(*parts: bytes) -> list:
    return [(0.0, f"{len(p):x}\r\n".encode() + p + b"\r\n") for p in parts]


# (adapter, fault) -> (route, script, text the request's error must contain)
TGI_SEP = b"data:"  # TGI writes data:{json} with no space
STREAMS = {
    ("tgi", "malformed event"): (sse(tgi_token(1, "A"), "{not json", sep=TGI_SEP), "malformed stream event"),
    ("tgi", "cut off before its end"): (sse(tgi_token(1, "A"), tgi_token(2, "B"), sep=TGI_SEP) + [(0.01, None)],
                                        "before TGI's final event"),
    ("tgi", "error event"): (sse(tgi_token(1, "A"), json.dumps({
        "error": "Request failed during generation: Server error: CUDA out of memory",
        "error_type": "generation"}), sep=TGI_SEP), "generation: Request failed during generation"),
    ("tgi", "never ends"): (sse(*[tgi_token(i, "x") for i in range(60)], gap=0.1, sep=TGI_SEP), "timeout after 1 s"),
    ("tgi", "chunked body cut mid-stream"): (chunked(TGI_SEP + tgi_token(1, "A").encode() + b"\n\n") + [(0.01, None)],
                                             "RemoteProtocolError: peer closed connection"),
    ("transformers-naive", "malformed event"): (sse('{"text": "a"}', '{"text": "b"', "[DONE]"), "malformed stream event"),
    ("transformers-naive", "cut off before its end"): (sse('{"text": "a"}', '{"text": "b"}') + [(0.01, None)], "cut off"),
    ("transformers-naive", "error event"): (sse('{"text": "a"}', '{"error": "RuntimeError: generation failed"}',
                                                "[DONE]"), "RuntimeError: generation failed"),
    ("transformers-naive", "never ends"): (sse(*['{"text": "x"}'] * 60, gap=0.1), "timeout after 1 s"),
    ("transformers-naive", "chunked body cut mid-stream"): (chunked(b'data: {"text": "a"}\n\n') + [(0.01, None)],
                                                            "RemoteProtocolError: peer closed connection"),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("arm,fault", list(STREAMS), ids=[f"{a}-{f.replace(' ', '_')}" for a, f in STREAMS])
def test_broken_stream_is_a_counted_request_error(arm, fault, transport):
    script, needle = STREAMS[(arm, fault)]
    headers = {"Content-Type": "text/event-stream"}
    if fault.startswith("chunked"):
        headers["Transfer-Encoding"] = "chunked"
    with ScriptedServer({"/generate_stream": lambda r: (200, headers, script)}) as srv:
        recs, summary = _window(srv.url, arm, 2, True, transport, timeout=1.0)
    assert summary.requests == 2 and summary.failed == 2 and summary.completed == 0, summary
    assert sum(summary.errors.values()) == 2
    for rec in recs:
        assert rec.error and needle in rec.error, rec.error
        assert rec.warmup is False and rec.prompt_id.startswith("p")


# -- malformed answers: every shape an adapter does not expect is a counted request error -------------
HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
JSON_CT, SSE_CT = "application/json", "text/event-stream"


def oai_choice(text: str = "a b c", finish: str | None = "length") -> dict:
    return {"index": 0, "text": text, "finish_reason": finish}


def oai(choices=None, usage=None, **extra) -> bytes:
    body = {"id": "c", "object": "text_completion",
            "choices": [oai_choice()] if choices is None else choices,
            "usage": {"prompt_tokens": 3, "completion_tokens": 5} if usage is None else usage, **extra}
    return json.dumps(body).encode()


def oai_chunk(choices=None, usage=None) -> str:
    return json.dumps({"id": "c", "choices": [oai_choice("a ", None)] if choices is None else choices,
                       **({"usage": usage} if usage is not None else {})})


def tgi_answer(details=None, **changes) -> bytes:
    body = {"generated_text": "a b c", "details": details if isinstance(details, str) else
            {"finish_reason": "length", "generated_tokens": 5, **(details or {})}}
    body.update(changes)
    return json.dumps(body).encode()


def tgi_final(**details) -> str:
    return json.dumps({"index": 3, "token": {"id": 3, "text": "c", "logprob": -0.5, "special": False},
                       "generated_text": "a b c",
                       "details": {"finish_reason": "length", "generated_tokens": 3, **details}})


def naive_answer(**changes) -> bytes:
    return json.dumps({**NAIVE_OK, **changes}).encode()


# (arm, mode, what) -> (status, content type, body or SSE payloads, text the request's error must contain).
# Sync bodies are bytes; stream answers are a list of SSE payloads (or bytes: a whole non-SSE body).
MALFORMED = {
    # vLLM / OpenAI-compatible, non-streamed
    ("vllm", "sync", "a JSON list where the object belongs"): (200, JSON_CT, b"[" + oai() + b"]",
                                                               "malformed answer: the answer is a list, not an object"),
    ("vllm", "sync", "usage.completion_tokens as a string"): (200, JSON_CT, oai(usage={"completion_tokens": "5"}),
                                                              "usage.completion_tokens is a string ('5')"),
    ("vllm", "sync", "choices: [null]"): (200, JSON_CT, oai(choices=[None]), "choices[0] is null, not an object"),
    ("vllm", "sync", "an HTML page with status 200"): (200, "text/html", HTML, "the server answered HTML, not JSON"),
    ("vllm", "sync", "an HTML page labelled as JSON"): (200, JSON_CT, HTML, "the server answered HTML, not JSON"),
    ("vllm", "sync", "an HTML error page from a proxy"): (502, "text/html", HTML,
                                                          "HTTP 502: the server answered HTML, not JSON"),
    ("vllm", "sync", "truncated JSON"): (200, JSON_CT, oai()[:40], "the server answered truncated JSON"),
    ("vllm", "sync", "invalid JSON"): (200, JSON_CT, b'{"choices": [}', "the server answered invalid JSON"),
    ("vllm", "sync", "missing choices"): (200, JSON_CT, json.dumps({"id": "c", "usage": {}}).encode(),
                                          "malformed answer: no choices"),
    ("vllm", "sync", "empty choices"): (200, JSON_CT, oai(choices=[]), "malformed answer: no choices"),
    ("vllm", "sync", "choices as an object"): (200, JSON_CT, oai(choices={"0": oai_choice()}),
                                               "choices is an object, not a list"),
    ("vllm", "sync", "text as a number"): (200, JSON_CT, oai(choices=[oai_choice(text=7)]),
                                           "choices[0].text is a number"),
    ("vllm", "sync", "message as a string"): (200, JSON_CT, oai(choices=[{"index": 0, "message": "hi"}]),
                                              "choices[0].message is a string"),
    ("vllm", "sync", "finish_reason as a number"): (200, JSON_CT, oai(choices=[oai_choice(finish=1)]),
                                                    "choices[0].finish_reason is a number"),
    ("vllm", "sync", "a negative token count"): (200, JSON_CT, oai(usage={"completion_tokens": -5}),
                                                 "usage.completion_tokens is a number (-5), not a whole number"),
    ("vllm", "sync", "a fractional token count"): (200, JSON_CT, oai(usage={"completion_tokens": 4.5}),
                                                   "not a whole number"),
    ("vllm", "sync", "a boolean token count"): (200, JSON_CT, oai(usage={"completion_tokens": True}),
                                                "usage.completion_tokens is a boolean"),
    ("vllm", "sync", "usage as a list"): (200, JSON_CT, oai(usage=[5]), "usage is a list, not an object"),
    ("vllm", "sync", "a JSON null"): (200, JSON_CT, b"null", "the answer is null, not an object"),
    ("vllm", "sync", "a JSON string"): (200, JSON_CT, b'"done"', "the answer is a string, not an object"),
    ("vllm", "sync", "an empty body"): (200, JSON_CT, b"", "the server answered an empty body"),
    ("vllm", "sync", "plain text"): (200, "text/plain", b"Internal Server Error", "the server answered plain text"),
    ("vllm", "sync", "a body that is not UTF-8"): (200, JSON_CT, b'{"choices": [{"text": "\xff\xfe"}]}',
                                                   "the server answered non-UTF-8 bytes"),
    ("vllm", "sync", "an event stream to a sync request"): (200, SSE_CT, b"data: " + oai() + b"\n\n",
                                                            "the server answered SSE, not JSON"),
    # vLLM / OpenAI-compatible, streamed
    ("vllm", "stream", "an event that is a JSON list"): (200, SSE_CT, ["[1, 2]", "[DONE]"],
                                                         "malformed stream event: the event is a list"),
    ("vllm", "stream", "an event that is null"): (200, SSE_CT, [oai_chunk(), "null", "[DONE]"],
                                                  "malformed stream event: the event is null"),
    ("vllm", "stream", "choices: [null] in a chunk"): (200, SSE_CT, [oai_chunk(), oai_chunk([None]), "[DONE]"],
                                                       "malformed stream event: choices[0] is null"),
    ("vllm", "stream", "usage.completion_tokens as a string"): (
        200, SSE_CT, [oai_chunk(), oai_chunk([], usage={"completion_tokens": "5"}), "[DONE]"],
        "usage.completion_tokens is a string"),
    ("vllm", "stream", "choices as a string"): (200, SSE_CT, [oai_chunk("abc"), "[DONE]"],
                                                "choices is a string, not a list"),
    ("vllm", "stream", "delta as a string"): (200, SSE_CT, [oai_chunk([{"index": 0, "delta": "hi"}]), "[DONE]"],
                                              "choices[0].delta is a string"),
    ("vllm", "stream", "content as a number"): (200, SSE_CT, [oai_chunk([{"index": 0, "delta": {"content": 3}}]),
                                                              "[DONE]"], "choices[0].delta.content is a number"),
    ("vllm", "stream", "truncated JSON in an event"): (200, SSE_CT, [oai_chunk(), oai_chunk()[:25], "[DONE]"],
                                                       "malformed stream event: not JSON"),
    ("vllm", "stream", "an HTML page with status 200"): (200, "text/html", HTML, "the server answered HTML, not SSE"),
    ("vllm", "stream", "a JSON answer to a stream request"): (200, JSON_CT, oai(),
                                                              "the server answered JSON, not SSE"),
    ("vllm", "stream", "an HTML error page"): (503, "text/html", HTML, "HTTP 503: the server answered HTML"),
    # TGI native, non-streamed
    ("tgi", "sync", "a list holding a number"): (200, JSON_CT, b"[5]", "the answer is a number, not an object"),
    ("tgi", "sync", "an empty list"): (200, JSON_CT, b"[]", "the answer is a list, not an object"),
    ("tgi", "sync", "details.generated_tokens as a string"): (200, JSON_CT, tgi_answer({"generated_tokens": "5"}),
                                                              "details.generated_tokens is a string"),
    ("tgi", "sync", "generated_text as a list"): (200, JSON_CT, tgi_answer(generated_text=["a"]),
                                                  "generated_text is a list, not a string"),
    ("tgi", "sync", "details as a string"): (200, JSON_CT, tgi_answer(details="none"), "details is a string, not an object"),
    ("tgi", "sync", "no generated_text"): (200, JSON_CT, json.dumps({"details": None}).encode(),
                                           "malformed answer: no generated_text"),
    ("tgi", "sync", "an HTML page with status 200"): (200, "text/html", HTML, "the server answered HTML, not JSON"),
    ("tgi", "sync", "truncated JSON"): (200, JSON_CT, tgi_answer()[:30], "the server answered truncated JSON"),
    ("tgi", "sync", "an empty body"): (200, JSON_CT, b"", "the server answered an empty body"),
    # TGI native, streamed
    ("tgi", "stream", "token as a string"): (200, SSE_CT, [tgi_token(1, "A"), json.dumps({"index": 2, "token": "B"})],
                                             "malformed stream event: token is a string, not an object"),
    ("tgi", "stream", "token.text as a number"): (200, SSE_CT, [json.dumps({"index": 1, "token": {"id": 1, "text": 5}})],
                                                  "token.text is a number"),
    ("tgi", "stream", "generated_tokens as a string"): (200, SSE_CT, [tgi_token(1, "A"),
                                                                      tgi_final(generated_tokens="3")],
                                                        "details.generated_tokens is a string"),
    ("tgi", "stream", "generated_text as a number"): (200, SSE_CT, [tgi_token(1, "A"), json.dumps(
        {"index": 2, "token": {"id": 2, "text": "B", "special": False}, "generated_text": 12})],
        "generated_text is a number"),
    ("tgi", "stream", "an event that is a JSON list"): (200, SSE_CT, [tgi_token(1, "A"), "[]"],
                                                        "malformed stream event: the event is a list"),
    ("tgi", "stream", "an HTML page with status 200"): (200, "text/html", HTML, "the server answered HTML, not SSE"),
    ("tgi", "stream", "a JSON answer to a stream request"): (200, JSON_CT, tgi_answer(),
                                                             "the server answered JSON, not SSE"),
    # transformers-naive (our own server's protocol)
    ("transformers-naive", "sync", "a JSON list"): (200, JSON_CT, b"[" + naive_answer() + b"]",
                                                    "the answer is a list, not an object"),
    ("transformers-naive", "sync", "generated_tokens as a string"): (200, JSON_CT, naive_answer(generated_tokens="5"),
                                                                     "generated_tokens is a string"),
    ("transformers-naive", "sync", "text as a number"): (200, JSON_CT, naive_answer(text=1), "text is a number"),
    ("transformers-naive", "sync", "no text"): (200, JSON_CT, json.dumps({"generated_tokens": 5}).encode(),
                                                "malformed answer: no text"),
    ("transformers-naive", "sync", "an HTML page with status 200"): (200, "text/html", HTML,
                                                                     "the server answered HTML, not JSON"),
    ("transformers-naive", "stream", "an event that is a JSON list"): (200, SSE_CT, ['{"text": "a"}', "[1]", "[DONE]"],
                                                                       "malformed stream event: the event is a list"),
    ("transformers-naive", "stream", "text as an object"): (200, SSE_CT, ['{"text": {"t": "a"}}', "[DONE]"],
                                                            "text is an object, not a string"),
    ("transformers-naive", "stream", "generated_tokens as a string"): (
        200, SSE_CT, ['{"text": "a b c d e"}', '{"generated_tokens": "5", "prompt_tokens": 3}', "[DONE]"],
        "generated_tokens is a string"),
    ("transformers-naive", "stream", "a JSON answer to a stream request"): (200, JSON_CT, naive_answer(),
                                                                            "the server answered JSON, not SSE"),
}
ROUTES = {("vllm", "sync"): "/v1/completions", ("vllm", "stream"): "/v1/completions",
          ("tgi", "sync"): "/generate", ("tgi", "stream"): "/generate_stream",
          ("transformers-naive", "sync"): "/generate", ("transformers-naive", "stream"): "/generate_stream"}


def _answer_script(ctype: str, body) -> tuple[dict[str, str], list]:
    if isinstance(body, bytes):
        return {"Content-Type": ctype, "Content-Length": str(len(body))}, [(0.0, body)]
    return {"Content-Type": ctype}, sse(*body)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("arm,mode,what", list(MALFORMED), ids=[f"{a}-{m}-{w.replace(' ', '_')}" for a, m, w in MALFORMED])
def test_malformed_answer_is_a_counted_request_error(arm, mode, what, transport):
    status, ctype, body, needle = MALFORMED[(arm, mode, what)]
    headers, script = _answer_script(ctype, body)
    with ScriptedServer({ROUTES[(arm, mode)]: lambda r: (status, headers, script)}) as srv:
        recs, summary = _window(srv.url, arm, 2, mode == "stream", transport, timeout=5.0)
    assert summary.requests == 2 and summary.failed == 2 and summary.completed == 0, summary
    for rec in recs:
        assert rec.error and needle in rec.error, rec.error
        assert "\n" not in rec.error and len(rec.error) < 400, rec.error
    # The window counts them under a readable kind: the reason's head, whole (not cut at 40 characters).
    assert set(summary.errors) == {rec.error.split(":", 1)[0] for rec in recs}, summary.errors


# Shapes a strict reader could refuse but that carry a whole, honest answer: they are completed.
TOLERATED = {
    ("vllm", "sync", "JSON labelled text/plain"): (200, "text/plain", oai(), None),
    ("vllm", "sync", "a token count written as 5.0"): (200, JSON_CT, oai(usage={"completion_tokens": 5.0}), None),
    ("vllm", "stream", "no content type on the stream"): (200, "", [oai_chunk(), oai_chunk([], usage={
        "completion_tokens": 5}), "[DONE]"], None),
    ("vllm", "stream", "bytes that are not UTF-8 in a text"): (200, SSE_CT, None, None),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("arm,mode,what", list(TOLERATED), ids=[f"{a}-{m}-{w.replace(' ', '_')}" for a, m, w in TOLERATED])
def test_odd_but_whole_answer_is_completed(arm, mode, what, transport):
    status, ctype, body, _ = TOLERATED[(arm, mode, what)]
    if body is None:  # invalid UTF-8 inside an event: read with replacement characters
        headers = {"Content-Type": SSE_CT}
        script = [(0.0, b'data: {"choices": [{"index": 0, "text": "a \xff\xfe b"}]}\n\n'),
                  (0.0, b"data: " + oai_chunk([], usage={"completion_tokens": 5}).encode() + b"\n\n"),
                  (0.0, b"data: [DONE]\n\n")]
    else:
        headers, script = _answer_script(ctype, body)
        if not ctype:
            headers.pop("Content-Type")
    with ScriptedServer({ROUTES[(arm, mode)]: lambda r: (status, headers, script)}) as srv:
        recs, summary = _window(srv.url, arm, 2, mode == "stream", transport, timeout=5.0)
    assert summary.completed == 2 and summary.failed == 0, [r.error for r in recs]
    assert all(r.output_tokens == 5 for r in recs)


# Every registered adapter, fed the worst it can be sent: none may raise (new adapters included).
BAD_BODIES = [b"", b"null", b"[]", b"[null]", b"[1]", b'"x"', b"7", b"{", HTML, b"\xff\xfe", b'{"choices": [null]}',
              b'{"choices": "x"}', b'{"choices": [{"text": 1}], "usage": {"completion_tokens": "5"}}',
              b'{"generated_text": 1, "details": []}', b'{"text": [], "generated_tokens": {}}', b'{"error": {"a": 1}}']
BAD_EVENTS = ["null", "[]", "[1]", '"x"', "7", "{", '{"choices": [null]}', '{"choices": "x"}',
              '{"choices": [{"delta": 5}]}', '{"usage": {"completion_tokens": "5"}}', '{"token": 5}',
              '{"token": {"text": 5}}', '{"details": 5, "generated_text": "x"}', '{"text": 5}',
              '{"generated_tokens": "5"}', '{"error": {"a": 1}}', "\ufffd", ""]


@pytest.mark.parametrize("arm", sorted(known_arms()))
def test_no_adapter_raises_on_a_malformed_answer(arm):
    adapter = get_adapter(arm)
    for status in (200, 500):
        for body in BAD_BODIES:
            for ctype in (JSON_CT, "text/html"):
                done = adapter.parse_response(status, {"Content-Type": ctype}, body)
                assert isinstance(done.error, str) and done.error, (arm, status, body, done)
    for event in BAD_EVENTS:  # a shape this adapter does not read may pass; none may raise
        reader = adapter.stream_reader()
        upd = reader.feed(event)
        done = reader.result()
        assert isinstance(upd.text, str) and (done.error is None or isinstance(done.error, str)), (arm, event)


def test_malformed_answers_reach_the_result_file(cell_spec_for, chat_workload, tmp_path):
    """Through run_cell: a server that answers a third of its requests with an HTML page, a
    JSON list or a string token count gives a finished cell that counts each of them."""
    spec = cell_spec_for(mode="sync", requests=9, request_timeout_s=5.0)
    bad = [b"<html><body>502 Bad Gateway</body></html>", b"[" + naive_answer() + b"]",
           naive_answer(generated_tokens="5")]

    def plan(path, body, n):
        if n % 3 == 1:
            return [http_json(200, bad[(n // 3) % 3], "OK")]
        return naive_ok(False)

    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    with FaultServer(plan) as srv:
        result = run_cell(spec, chat_workload, out, results, provider=external_server(srv.url))
    w = result["windows"][0]
    assert (w["requests"], w["completed"], w["failed"]) == (9, 6, 3), w
    assert set(w["errors"]) == {"the server answered HTML, not JSON", "malformed answer"}, w["errors"]
    lines = [json.loads(x) for x in requests_path(out).read_text().splitlines()]
    assert sorted(r["error"] for r in lines if r["error"]) == sorted([
        "malformed answer: generated_tokens is a string ('5'), not a whole number",
        "malformed answer: the answer is a list, not an object",
        "the server answered HTML, not JSON: application/json, '<html><body>502 Bad Gateway</body></html>'"])
