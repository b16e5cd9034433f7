"""The load generator: asyncio, one connection pool, per-request timestamps.

Definitions (DESIGN §3): ``dispatch`` is stamped with ``perf_counter_ns`` after the request is
built and after any wait for a concurrency slot, right before the request's bytes are written
to the socket; TTFT is dispatch to the first event carrying generated output (text, or a token
count the server gives: see frameworks.base.StreamUpdate); E2E is dispatch to the last byte
(sync) or the last such event (stream). Each such event's time and, where the server says it,
its number of tokens are kept per request (``event_offsets_ms``, ``event_tokens``).

Two transports. ``http1`` (the default for ``http://``): servingbench.runtime.http1, a hand-written
HTTP/1.1 client on raw sockets that parses each stream inside the event loop's read callback
and stamps each received block with the kernel's receive time where Linux gives it
(``SO_TIMESTAMPNS``), else right after the read; there the wait for a free or new connection
comes before dispatch and so counts as ``queue_ms``. ``httpx``: the reference path (and
the one for ``https://``), where dispatch is stamped before ``AsyncClient.send`` and each
chunk when httpx yields it. benchmarks/client_overhead.py measures both; benchmarks/RESULTS.md
has the figures. Runtime module: standard library + httpx.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

import httpx

from servingbench.runtime.frameworks.base import (
    TOKENS_FROM_TOKENIZER,
    Adapter,
    Completion,
)
from servingbench.runtime import http1
from servingbench.runtime.malformed import is_event_stream, not_a_stream
from servingbench.runtime.records import RequestRecord
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec
from servingbench.runtime.sse import SSEParser

NS_PER_MS = 1_000_000


@dataclass
class WindowPlan:
    """One measured window: which prompts, how many at once, open or closed loop."""

    items: list[PromptItem]
    concurrency: int
    stream: bool
    window: int = 0
    warmup: bool = False
    request_rate: float = 0.0  # > 0: open-loop arrivals at this rate, at most `concurrency` in flight
    seed: int = 0
    burstiness: float = 1.0  # open loop: 1 = Poisson, else gamma gaps of this shape (arrival_offsets)
    trial: int = 0  # run.trials: which repetition of this concurrency level
    prompt_tokens_target: int | None = None  # context sweep: the prompt length of this window
    # A workload's own schedule (conversations, trace replay) instead of the closed or open loop:
    # called as scheduler(plan, one, fail); see LoadClient.run_window.
    scheduler: "Scheduler | None" = None


TokenCounter = Callable[[str], "int | None"]
Send = Callable[[PromptItem, int], Awaitable[RequestRecord]]
Fail = Callable[[PromptItem, str], RequestRecord]
Scheduler = Callable[[WindowPlan, Send, Fail], Awaitable[None]]
TRANSPORTS = ("auto", "http1", "httpx")


def arrival_offsets(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Seconds from a window's start of ``n`` open-loop arrivals at ``rate`` per second.

    Burstiness 1: a Poisson process (exponential gaps). Otherwise gamma gaps of shape
    ``burstiness`` and mean 1/rate (scale 1 / (rate x burstiness)), as vLLM's benchmark_serving
    draws them: below 1 burstier than Poisson, above 1 more regular. Both only scale their
    draws by 1/rate, so one seed gives the same arrival pattern at every rate, compressed or
    stretched (common random numbers: windows at different rates differ only by the rate).
    """
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate) if burstiness == 1.0 else rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        out.append(t)
    return out


class _Sink:
    """One response, fed by servingbench.runtime.http1 from inside the read callback: a stream is parsed
    event by event as its bytes arrive, anything else (a sync answer, an HTTP error) is kept."""

    __slots__ = ("t0", "stream", "status", "headers", "parts", "parser", "reader", "offsets", "counts", "ended")

    def __init__(self, stream: bool, reader: Any) -> None:
        self.t0 = 0
        self.stream = stream
        self.status = 0
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] = []
        self.parser = SSEParser() if stream else None
        self.reader = reader
        self.offsets: list[float] = []
        self.counts: list[int | None] = []
        self.ended = False

    def on_head(self, status: int, headers: dict[str, str], t_ns: int) -> None:
        self.status, self.headers = status, headers
        if status >= 400 or not is_event_stream(headers):  # kept whole, read as an answer
            self.parser = None

    def on_body(self, data: bytes, t_ns: int) -> None:
        parser = self.parser
        if parser is None:
            self.parts.append(data)
            return
        reader, offsets, counts = self.reader, self.offsets, self.counts
        for payload in parser.feed(data):
            upd = reader.feed(payload)
            if upd.text or upd.tokens:
                offsets.append((t_ns - self.t0) / NS_PER_MS)
                counts.append(upd.tokens)
            if upd.done:
                self.ended = True


def _error_text(exc: Exception) -> str:
    """A transport error as a request record's error: its type, and its message if it has one."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class LoadClient:
    """Sends requests to one server through one httpx connection pool."""

    def __init__(self, base_url: str, adapter: Adapter, server: ServerSpec, gen: GenerationParams,
                 policy: str, timeout_s: float, max_connections: int = 256,
                 count_tokens: TokenCounter | None = None, transport: str = "auto", keep_text: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self.adapter = adapter
        self.server = server
        self.gen = gen
        self.policy = policy
        self.timeout_s = timeout_s
        self.count_tokens = count_tokens
        self.keep_text = keep_text  # records carry the answer text (a conversation's next turn needs it)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        #: httpx client on the same server: the httpx transport's requests, and the unmeasured
        #: calls (the server's /metrics, health checks) that cells make between windows.
        # trust_env=False: a proxy variable on a GPU host must never route benchmark traffic.
        self.http = httpx.AsyncClient(base_url=self.base_url, limits=limits, trust_env=False,
                                      timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0)))
        if transport == "auto":
            transport = os.environ.get("SERVINGBENCH_CLIENT_TRANSPORT", "auto")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport: {transport!r} is not one of {TRANSPORTS}")
        if transport == "auto":
            # http1 needs a selector event loop's add_reader (not Windows' proactor loop).
            transport = "http1" if self.base_url.startswith("http://") and sys.platform != "win32" else "httpx"
        #: "http1" or "httpx": the path the measured requests take (see the module notes).
        self.transport = transport
        self._max_connections = max_connections
        self._pool: http1.Pool | None = None  # made in the running loop, on first use
        #: The last open-loop window's most requests in flight at once (capped by its concurrency).
        self.peak_in_flight = 0

    @property
    def stamps(self) -> str:
        """Where receive times come from: "kernel" (SO_TIMESTAMPNS), "read" (after the read
        call) or "httpx" (when httpx yields a chunk); "unknown" before the first connection."""
        if self.transport == "httpx":
            return "httpx"
        if self._pool is None or self._pool.kernel_stamps is None:
            return "unknown"
        return "kernel" if self._pool.kernel_stamps else "read"

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        await self.http.aclose()

    async def __aenter__(self) -> "LoadClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- one request --------------------------------------------------------------------------
    async def send(self, item: PromptItem, stream: bool, rec: RequestRecord) -> RequestRecord:
        """Send one request and fill ``rec``; never raises for request-level failures."""
        tokens, forced = self.adapter.effective_output_tokens(item, self.gen, self.policy)
        rec.output_tokens_requested, rec.output_tokens_forced = tokens, forced
        rec.prompt_tokens = item.prompt_tokens
        spec = self.adapter.build_request(self.server, item, self.gen, tokens, forced, stream)
        if self.transport == "http1":
            return await self._send_http1(spec, stream, rec)
        request = self.http.build_request(spec.method, spec.path, json=spec.json)
        try:
            done = await asyncio.wait_for(self._exchange(request, stream, rec), timeout=self.timeout_s)
        except (asyncio.TimeoutError, httpx.HTTPError) as exc:
            return self._failed(rec, exc)
        return self._finish(rec, done)

    def _failed(self, rec: RequestRecord, exc: Exception) -> RequestRecord:
        """A request that got no complete response (timeout, or transport error of either transport)."""
        rec.error = f"timeout after {self.timeout_s:g} s" if isinstance(exc, asyncio.TimeoutError) else _error_text(exc)
        return rec

    def _finish(self, rec: RequestRecord, done: Completion) -> RequestRecord:
        self._take(rec, done)
        if self.keep_text and rec.error is None:
            rec.output_text = done.text
        if rec.error is None and rec.output_tokens is None and self.count_tokens and done.text:
            counted = self.count_tokens(done.text)
            if counted is not None:
                rec.output_tokens, rec.output_tokens_source = counted, TOKENS_FROM_TOKENIZER
        return rec

    async def _send_http1(self, spec: Any, stream: bool, rec: RequestRecord) -> RequestRecord:
        pool = self._pool
        if pool is None or pool.loop is not asyncio.get_running_loop():  # first use, or a new loop
            pool = self._pool = http1.Pool(self.base_url, self._max_connections,
                                           connect_timeout_s=min(self.timeout_s, 30.0))
        data = http1.encode_request(spec.method, pool.prefix + spec.path, pool.host_header, spec.json)
        sink = _Sink(stream, self.adapter.stream_reader() if stream else None)
        ex = http1.Exchange()

        def on_send(t_ns: int) -> None:
            rec.dispatch_ns = sink.t0 = t_ns

        try:
            await ex.run(pool, data, sink, pool.loop.time() + self.timeout_s, on_send)
        except (asyncio.TimeoutError, http1.HTTPError) as exc:
            return self._failed(rec, exc)
        rec.http_status = sink.status
        if not stream or sink.parser is None:
            done = self._answer(stream, sink.status, sink.headers, b"".join(sink.parts))
            rec.e2e_ms = (ex.end_ns - sink.t0) / NS_PER_MS
            return self._finish(rec, done)
        return self._finish(rec, self._end_stream(sink.parser, sink.reader, sink.offsets, sink.counts,
                                                  sink.ended, rec))

    def _answer(self, stream: bool, status: int, headers: Any, body: bytes) -> Completion:
        """A whole (not streamed) answer: an HTTP error, a sync answer, or a stream request
        answered with something that is not an event stream (an error naming what it was)."""
        if stream and status < 400:
            return Completion(error=not_a_stream(headers, body))
        done = self.adapter.parse_response(status, headers, body)
        if done.error is None and status >= 400:
            done.error = f"HTTP {status}"
        return done

    async def _exchange(self, request: httpx.Request, stream: bool, rec: RequestRecord) -> Completion:
        rec.dispatch_ns = t0 = time.perf_counter_ns()
        resp = await self.http.send(request, stream=stream)
        try:
            rec.http_status = resp.status_code
            if not stream or resp.status_code >= 400 or not is_event_stream(resp.headers):
                body = await resp.aread()
                t_end = time.perf_counter_ns()
                done = self._answer(stream, resp.status_code, resp.headers, body)
                rec.e2e_ms = (t_end - t0) / NS_PER_MS
                return done
            return await self._read_stream(resp, t0, rec)
        finally:
            await resp.aclose()

    async def _read_stream(self, resp: httpx.Response, t0: int, rec: RequestRecord) -> Completion:
        parser, reader = SSEParser(), self.adapter.stream_reader()
        offsets: list[float] = []
        counts: list[int | None] = []
        ended = False
        async for chunk in resp.aiter_raw():
            now = time.perf_counter_ns()
            for payload in parser.feed(chunk):
                upd = reader.feed(payload)
                if upd.text or upd.tokens:
                    offsets.append((now - t0) / NS_PER_MS)
                    counts.append(upd.tokens)
                if upd.done:
                    ended = True
        return self._end_stream(parser, reader, offsets, counts, ended, rec)

    def _end_stream(self, parser: SSEParser, reader: Any, offsets: list[float], counts: list[int | None],
                    ended: bool, rec: RequestRecord) -> Completion:
        for payload in parser.flush():
            upd = reader.feed(payload)
            ended = ended or upd.done
        done = reader.result()
        if done.error is None and not ended:
            if self.adapter.stream_has_done_marker or done.finish_reason is None:
                done.error = "stream ended before its end marker (cut off)"
        rec.event_offsets_ms = offsets
        rec.event_tokens = counts if any(c is not None for c in counts) else None
        if offsets:  # never a TTFT from an event that carried no output (DESIGN §3)
            rec.ttft_ms, rec.e2e_ms = offsets[0], offsets[-1]
        elif done.error is None:
            done.error = "stream carried no generated text and no token counts"
        return done

    @staticmethod
    def _take(rec: RequestRecord, done: Completion) -> None:
        rec.error = rec.error or done.error
        rec.output_tokens = done.output_tokens
        rec.output_tokens_source = done.output_tokens_source
        rec.server_prompt_tokens = done.prompt_tokens
        rec.finish_reason = done.finish_reason
        rec.server_timing = dict(done.server_timing)

    # -- one window ---------------------------------------------------------------------------
    async def run_window(self, plan: WindowPlan,
                         on_done: Callable[[RequestRecord], None] | None = None) -> tuple[list[RequestRecord], float]:
        """Run a window; return its records (in completion order) and its wall time in seconds."""
        records: list[RequestRecord] = []
        start = time.perf_counter_ns()

        def record(item: PromptItem, error: str | None = None) -> RequestRecord:
            rec = RequestRecord(prompt_id=item.id, window=plan.window, concurrency=plan.concurrency,
                                warmup=plan.warmup, error=error)
            rec.label(item)
            return rec

        def done(rec: RequestRecord) -> RequestRecord:
            records.append(rec)
            if on_done is not None:
                on_done(rec)
            return rec

        async def one(item: PromptItem, scheduled_ns: int) -> RequestRecord:
            rec = record(item)
            await self.send(item, plan.stream, rec)
            rec.queue_ms = max(0.0, (rec.dispatch_ns - scheduled_ns) / NS_PER_MS) if rec.dispatch_ns else 0.0
            return done(rec)

        def fail(item: PromptItem, reason: str) -> RequestRecord:
            """A request the schedule could not send (a conversation whose earlier turn failed)."""
            return done(record(item, reason))

        if plan.scheduler is not None:
            await plan.scheduler(plan, one, fail)
        elif plan.request_rate > 0:
            await self._open_loop(plan, one)
        else:
            await self._closed_loop(plan, one)
        return records, (time.perf_counter_ns() - start) / 1e9

    @staticmethod
    async def _closed_loop(plan: WindowPlan, one: Callable[[PromptItem, int], Any]) -> None:
        queue: Iterable[PromptItem] = iter(plan.items)

        async def worker() -> None:
            for item in queue:  # shared iterator: each worker takes the next prompt when free
                await one(item, time.perf_counter_ns())

        await asyncio.gather(*(worker() for _ in range(min(plan.concurrency, len(plan.items)))))

    async def _open_loop(self, plan: WindowPlan, one: Callable[[PromptItem, int], Any]) -> None:
        slots = asyncio.Semaphore(plan.concurrency)
        t0 = time.perf_counter_ns()
        tasks = []
        in_flight = [0]
        self.peak_in_flight = 0

        async def gated(item: PromptItem, scheduled: int) -> None:
            async with slots:  # time waiting here is client queueing, recorded as queue_ms
                in_flight[0] += 1
                self.peak_in_flight = max(self.peak_in_flight, in_flight[0])
                try:
                    rec = await one(item, scheduled)
                finally:
                    in_flight[0] -= 1
            rec.mark_schedule(scheduled, t0)  # achieved against scheduled; the slot wait counts as late

        offsets = arrival_offsets(len(plan.items), plan.request_rate, plan.burstiness, plan.seed)
        for item, offset in zip(plan.items, offsets):
            t = t0 + int(offset * 1e9)
            delay = (t - time.perf_counter_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(gated(item, t)))
        await asyncio.gather(*tasks)
