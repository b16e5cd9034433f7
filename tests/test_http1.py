"""servingbench.runtime.http1, the load generator's hand-written HTTP/1.1 path: framing, keep-alive,
stale connections, stamps, and agreement with the httpx path on the same exchanges."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from servingbench.runtime import http1
from servingbench.runtime.client import LoadClient
from servingbench.runtime.records import RequestRecord
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec
from tests.scripted_server import ScriptedServer, json_body, sse

SERVER = ServerSpec(arm="vllm", framework="vllm", model="m", model_dir="models/m", hf_id="x/m",
                    weights="real", device="cpu", dtype="bfloat16", context_length=2048)
GEN = GenerationParams(temperature=0.7, top_p=0.9, max_tokens=50)
ITEM = PromptItem(id="p0", prompt="Hello there", prompt_tokens=3, target_output_tokens=5)


class Collect:
    def __init__(self) -> None:
        self.status, self.headers, self.body, self.stamps = 0, {}, b"", []

    def on_head(self, status, headers, t_ns):
        self.status, self.headers = status, headers

    def on_body(self, data, t_ns):
        self.body += data
        self.stamps.append(t_ns)


def bare_connection() -> http1.Connection:
    """A Connection with no socket, to drive the response parser directly."""
    conn = object.__new__(http1.Connection)
    conn._reset()
    conn.sink, conn.fut, conn.closed = Collect(), None, False
    return conn


def feed_all(response: bytes, step: int) -> Collect:
    conn = bare_connection()
    sink = conn.sink
    for i in range(0, len(response), step):
        conn._feed(response[i:i + step], i)
    assert conn._mode == 4, "response not complete"
    return sink


CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"d\r\ndata: {\"a\":1}\r\n2;ext=1\r\n\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n")


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_chunked_body_is_reassembled_whatever_the_reads(step):
    sink = feed_all(CHUNKED, step)
    assert sink.status == 200 and sink.headers["content-type"] == "text/event-stream"
    assert sink.body == b'data: {"a":1}\n\n'


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_content_length_body(step):
    resp = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}"
    sink = feed_all(resp, step)
    assert sink.status == 503 and sink.body == b"{}"


def test_bad_chunk_framing_is_a_protocol_error():
    conn = bare_connection()
    with pytest.raises(http1.RemoteProtocolError):
        conn._feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0)


async def _serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode().split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return await reader.readexactly(length) if length else b""


def test_keep_alive_reuse_and_a_stale_connection_is_retried_once():
    connections = []

    async def handler(reader, writer):
        connections.append(writer)
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if len(connections) == 1:
            # First connection: read the next request, then close without answering, as a
            # server whose keep-alive timer fired at that moment would.
            await _read_request(reader)
            writer.close()
            return
        try:
            while True:
                await _read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def go():
        server, url = await _serve(handler)
        pool = http1.Pool(url, 4)
        sinks = []
        for _ in range(3):
            sink = Collect()
            ex = http1.Exchange()
            await ex.run(pool, http1.encode_request("GET", "/", pool.host_header), sink,
                         pool.loop.time() + 5.0)
            sinks.append((sink, ex))
        await pool.aclose()
        server.close()
        return sinks

    sinks = asyncio.run(go())
    assert [s.body for s, _ in sinks] == [b"ok"] * 3
    assert len(connections) == 2  # one reuse failed and was retried on a new connection
    for sink, ex in sinks:
        assert ex.send_ns <= sink.stamps[0] <= ex.end_ns <= time.perf_counter_ns()


def test_receive_stamps_are_on_the_perf_counter_clock():
    """Kernel stamps (where available) are moved onto perf_counter_ns: after the send, not
    after the moment the client looked at the bytes."""
    async def handler(reader, writer):
        await _read_request(reader)
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def go():
        server, url = await _serve(handler)
        pool = http1.Pool(url, 1)
        sink, ex = Collect(), http1.Exchange()
        await ex.run(pool, http1.encode_request("GET", "/", pool.host_header), sink, pool.loop.time() + 5.0)
        after = time.perf_counter_ns()
        kernel = pool.kernel_stamps
        await pool.aclose()
        server.close()
        return sink, ex, after, kernel

    sink, ex, after, kernel = asyncio.run(go())
    assert 45 <= (sink.stamps[0] - ex.send_ns) / 1e6 < 1000
    assert sink.stamps[0] <= after
    assert kernel in (True, False)


def test_timeout_and_connect_error_become_request_errors():
    async def handler(reader, writer):
        await _read_request(reader)
        await asyncio.sleep(5)

    async def go():
        server, url = await _serve(handler)
        async with LoadClient(url, get_adapter("vllm"), SERVER, GEN, "forced", 0.3, transport="http1") as c:
            rec = await c.send(ITEM, True, RequestRecord(prompt_id="p0"))
        server.close()
        return rec

    assert asyncio.run(go()).error == "timeout after 0.3 s"

    async def refused():
        async with LoadClient("http://127.0.0.1:9", get_adapter("vllm"), SERVER, GEN, "forced", 2.0,
                              transport="http1") as c:
            return await c.send(ITEM, True, RequestRecord(prompt_id="p0"))

    assert asyncio.run(refused()).error.startswith("ConnectError")


def _chunk(text: str | None = None, usage: int | None = None) -> str:
    out = {"choices": [{"index": 0, "text": text, "finish_reason": None}] if text is not None else []}
    if usage is not None:
        out["usage"] = {"prompt_tokens": 3, "completion_tokens": usage}
    return json.dumps(out)


@pytest.mark.parametrize("stream", [True, False])
def test_both_transports_record_the_same_exchange(stream):
    if stream:
        script = sse(_chunk("a"), _chunk("b"), _chunk(usage=2), "[DONE]", gap=0.05)
        route = lambda r: (200, {"Content-Type": "text/event-stream"}, script)  # noqa: E731
    else:
        headers, script = json_body(json.dumps({"choices": [{"text": "ab", "finish_reason": "length"}],
                                                "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode())
        route = lambda r: (200, headers, [(0.05, b"")] + script)  # noqa: E731
    recs, sent = {}, {}
    with ScriptedServer({"/v1/completions": route}) as s:
        for transport in ("http1", "httpx"):
            async def go():
                async with LoadClient(s.url, get_adapter("vllm"), SERVER, GEN, "forced", 5.0,
                                      transport=transport) as c:
                    assert c.transport == transport
                    return await c.send(ITEM, stream, RequestRecord(prompt_id="p0"))
            recs[transport] = asyncio.run(go())
            sent[transport] = json.loads(s.requests[-1][1])
    a, b = recs["http1"], recs["httpx"]
    assert a.error is None and b.error is None
    assert sent["http1"] == sent["httpx"]
    for field in ("http_status", "output_tokens", "output_tokens_source", "finish_reason", "server_prompt_tokens"):
        assert getattr(a, field) == getattr(b, field), field
    assert len(a.event_offsets_ms) == len(b.event_offsets_ms) == (2 if stream else 0)
    assert (a.ttft_ms is None) == (b.ttft_ms is None)
    assert a.e2e_ms >= 50 and b.e2e_ms >= 50  # both include the server's 50 ms pause
