"""Requests break while the server stays up: HTTP 500/503, a connection reset, a request past
its timeout, and broken streams (a malformed event, a stream cut off, an ``error`` event in
TGI's and the naive server's forms, a stream that never ends). Every failed request is counted
in its window's ``failed`` and ``errors``, never dropped, on both client transports.

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

from servingbench.cell import CellFailed, run_cell
from servingbench.client import LoadClient, WindowPlan
from servingbench.frameworks import get_adapter
from servingbench.metrics import window_summary
from servingbench.pool import external_server
from servingbench.results import cell_path, failure_path, requests_path
from servingbench.spec import GenerationParams, PromptItem, ServerSpec
from tests.reliability.conftest import MODEL
from tests.reliability.standins import RST, SSE_HEAD, FaultServer, http_json, sse_event
from tests.scripted_server import ScriptedServer, sse

pytestmark = pytest.mark.fault
TRANSPORTS = ["http1", "httpx"]
GEN = GenerationParams(temperature=0.7, top_p=0.9, max_tokens=50)


def _server(arm: str) -> ServerSpec:
    framework = {"tgi": "tgi", "transformers-naive": "transformers"}[arm]
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
    assert summary["requests"] == 10 == len(recs), "no request dropped"
    assert summary["completed"] == 5 and summary["failed"] == 5 == len(failed), [r.error for r in recs]
    assert sum(summary["errors"].values()) == 5
    assert {"HTTP 500", "HTTP 503", "timeout after 1 s"} <= set(summary["errors"]), summary["errors"]
    assert summary["errors"]["ReadError"] == 2  # the two resets (before and during the answer)
    assert summary["throughput_req_s"] == pytest.approx(5 / summary["window_s"])  # completed only
    assert summary["output_tokens_actual_total"] == 25


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
    assert summary["requests"] == 2 and summary["failed"] == 2 and summary["completed"] == 0, summary
    assert sum(summary["errors"].values()) == 2
    for rec in recs:
        assert rec.error and needle in rec.error, rec.error
        assert rec.warmup is False and rec.prompt_id.startswith("p")
