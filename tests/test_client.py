"""The client's clock and counting rules (DESIGN §3), against scripted byte streams."""

from __future__ import annotations

import asyncio
import json

import pytest

from servingbench.runtime.client import LoadClient, WindowPlan
from servingbench.runtime.records import RequestRecord, Stats
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.metrics import percentile, stats, tpot_ms, window_summary
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec
from servingbench.runtime.sse import SSEParser, parse_events
from tests.scripted_server import ScriptedServer, json_body, sse

SERVER = ServerSpec(arm="vllm", framework="vllm", model="m", model_dir="models/m", hf_id="x/m",
                    weights="real", device="cpu", dtype="bfloat16", context_length=2048)
GEN = GenerationParams(temperature=0.7, top_p=0.9, max_tokens=50)
ITEM = PromptItem(id="p0", prompt="Hello there", prompt_tokens=3, target_output_tokens=5)


def chunk(text: str | None = None, role: bool = False, usage: int | None = None, finish: str | None = None) -> str:
    choices = []
    if text is not None or role or finish:
        delta = {"role": "assistant"} if role else {}
        choices.append({"index": 0, "text": text or "", "finish_reason": finish})
    out = {"id": "c", "object": "text_completion", "choices": choices}
    if usage is not None:
        out["usage"] = {"prompt_tokens": 3, "completion_tokens": usage, "total_tokens": 3 + usage}
    return json.dumps(out)


def run(url: str, stream: bool = True, timeout: float = 10.0, item: PromptItem = ITEM) -> RequestRecord:
    async def go():
        async with LoadClient(url, get_adapter("vllm"), SERVER, GEN, "forced", timeout) as c:
            return await c.send(item, stream, RequestRecord(prompt_id=item.id))
    return asyncio.run(go())


# -- SSE framing ------------------------------------------------------------------------------
def test_sse_parser_handles_both_framings_and_split_reads():
    body = b'data:{"a":1}\n\ndata: {"b":2}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n'
    assert parse_events(body) == ['{"a":1}', '{"b":2}', "[DONE]"]
    p = SSEParser()
    got = []
    for i in range(len(body)):  # one byte at a time: events complete exactly once
        got += p.feed(body[i:i + 1])
    assert got == ['{"a":1}', '{"b":2}', "[DONE]"]


def test_sse_unterminated_last_event_is_flushed():
    p = SSEParser()
    assert p.feed(b'data: {"x":1}') == []
    assert p.flush() == ['{"x":1}']


# -- clock and counts -------------------------------------------------------------------------
def test_ttft_skips_role_only_and_empty_chunks_and_tokens_come_from_usage():
    # First event is role-only / empty; one event carries three tokens; usage says 5.
    script = sse(chunk(role=True), chunk(""), gap=0.15) + sse(chunk("Hello world, "), chunk("friend"),
                                                              chunk(finish="length"), chunk(usage=5), "[DONE]", gap=0.05)
    with ScriptedServer({"/v1/completions": lambda r: (200, {"Content-Type": "text/event-stream"}, script)}) as s:
        rec = run(s.url)
    assert rec.error is None
    assert rec.ttft_ms is not None and rec.ttft_ms >= 300  # after two empty events 0.15 s apart
    assert len(rec.event_offsets_ms) == 2  # two content events...
    assert rec.output_tokens == 5 and rec.output_tokens_source == "server"  # ...but five tokens
    assert 0 < rec.ttft_ms < rec.e2e_ms == rec.event_offsets_ms[-1]


def test_sync_e2e_is_last_byte_and_no_ttft():
    body = json.dumps({"choices": [{"text": "abc", "finish_reason": "length"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 5}}).encode()
    headers, script = json_body(body)
    with ScriptedServer({"/v1/completions": lambda r: (200, headers, [(0.2, b"")] + script)}) as s:
        rec = run(s.url, stream=False)
    assert rec.error is None and rec.ttft_ms is None
    assert rec.e2e_ms >= 200 and rec.output_tokens == 5


def test_request_body_forces_length_for_vllm():
    body = json.dumps({"choices": [{"text": "x"}], "usage": {"completion_tokens": 5}}).encode()
    headers, script = json_body(body)
    with ScriptedServer({"/v1/completions": lambda r: (200, headers, script)}) as s:
        run(s.url, stream=False)
        sent = json.loads(s.requests[-1][1])
    assert sent["max_tokens"] == 5 and sent["ignore_eos"] is True and sent["model"] == "m"


@pytest.mark.parametrize("name,status,script,needle", [
    ("http 500", 500, [(0, b'{"error": {"message": "boom"}}')], "HTTP 500"),
    ("cut off", 200, sse(chunk("a"), chunk("b")) + [(0.01, None)], "cut off"),
    ("malformed", 200, sse("{not json"), "malformed"),
    ("error event", 200, sse(chunk("a"), json.dumps({"error": {"message": "overloaded"}})), "overloaded"),
    ("no text", 200, sse(chunk(usage=0), "[DONE]"), "no generated text"),
])
def test_faults_become_request_errors(name, status, script, needle):
    ctype = "text/event-stream" if status == 200 else "application/json"
    with ScriptedServer({"/v1/completions": lambda r: (status, {"Content-Type": ctype}, script)}) as s:
        rec = run(s.url)
    assert rec.error and needle in rec.error, rec.error


def test_a_stream_that_never_ends_times_out():
    script = sse(chunk("a")) + [(0.3, b": ping\n\n")] * 20
    with ScriptedServer({"/v1/completions": lambda r: (200, {"Content-Type": "text/event-stream"}, script)}) as s:
        rec = run(s.url, timeout=1.0)
    assert rec.error == "timeout after 1 s"


def test_window_counts_failures_apart_and_throughput_uses_completed_only():
    state = {"n": 0}

    def route(r):
        state["n"] += 1
        if state["n"] % 3 == 0:
            return 503, {"Content-Type": "application/json", "Content-Length": "2"}, [(0, b"{}")]
        return 200, {"Content-Type": "text/event-stream"}, sse(chunk("tok"), chunk(usage=5), "[DONE]", gap=0.01)

    items = [PromptItem(id=f"p{i}", prompt="x", prompt_tokens=1, target_output_tokens=5) for i in range(9)]

    async def go():
        async with LoadClient(s.url, get_adapter("vllm"), SERVER, GEN, "forced", 5.0) as c:
            return await c.run_window(WindowPlan(items=items, concurrency=3, stream=True))

    with ScriptedServer({"/v1/completions": route}) as s:
        recs, window_s = asyncio.run(go())
    summary = window_summary(recs, window_s, 3, True)
    assert summary.requests == 9 and summary.failed == 3 and summary.completed == 6
    assert summary.errors == {"HTTP 503": 3}
    assert summary.throughput_req_s == pytest.approx(6 / window_s)
    assert summary.output_tokens_actual_total == 30 and summary.output_tokens_mismatched == 0


def test_open_loop_records_queueing_apart_from_latency():
    script = sse(chunk("tok"), chunk(usage=5), "[DONE]", gap=0.2)
    items = [PromptItem(id=f"p{i}", prompt="x", prompt_tokens=1, target_output_tokens=5) for i in range(4)]

    async def go():
        async with LoadClient(s.url, get_adapter("vllm"), SERVER, GEN, "forced", 10.0) as c:
            # 50 req/s arrivals but one slot: later requests wait for the slot (queue_ms > 0).
            return await c.run_window(WindowPlan(items=items, concurrency=1, stream=True, request_rate=50.0, seed=1))

    with ScriptedServer({"/v1/completions": lambda r: (200, {"Content-Type": "text/event-stream"}, script)}) as s:
        recs, _ = asyncio.run(go())
    queued = sorted(r.queue_ms for r in recs)
    assert queued[-1] > 300  # the last waited for ~3 requests of ~0.6 s
    assert all(r.ttft_ms < 400 for r in recs)  # queueing is not hidden in TTFT


# -- summary maths ----------------------------------------------------------------------------
def test_percentiles_match_numpy():
    np = pytest.importorskip("numpy")
    vals = sorted([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(vals, q) == pytest.approx(float(np.percentile(vals, q)))
    assert stats([None, 2.0, 4.0]) == Stats(n=2, mean=3.0, p50=3.0, p90=3.8, p99=3.98, min=2.0, max=4.0)
    assert stats([None]) is None


def test_tpot_definition():
    rec = RequestRecord(prompt_id="x", ttft_ms=100.0, e2e_ms=500.0, output_tokens=5)
    assert tpot_ms(rec) == pytest.approx(100.0)
    assert tpot_ms(RequestRecord(prompt_id="x", ttft_ms=100.0, e2e_ms=500.0, output_tokens=1)) is None
