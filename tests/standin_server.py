"""A stand-in LLM server whose service is known exactly: k slots, a FIFO queue, a fixed prefill
time and a fixed time per output token.

Why a stand-in: the capacity search must find a capacity that is known in advance, and no
real server's capacity is known before it is measured. This one speaks vLLM's OpenAI
completions stream (``/v1/completions``, SSE, usage chunk, ``[DONE]``; ``/health``), so the
kit drives it with its real vLLM adapter and client. A request takes a slot in arrival order
(waiting in FIFO order when all ``k`` are busy); from the slot's start it streams its first
token after ``prefill_ms`` and each next one ``token_ms`` later, ``max_tokens`` tokens in all,
then frees the slot. Every deadline is counted from the slot's start (a late wake-up never
shifts the next ones), and a slot handed to a waiting request starts at the moment the previous
request's last token was due. So TTFT = wait for a slot + prefill_ms and TPOT = token_ms, and a
short discrete-event simulation (tests/test_capacity.py) gives the exact TTFT of every request
of a window from its arrival times.

Optionally it stalls (``--stall-at L --stall-ms S``): when a request arrives and brings the
requests in the server (waiting or served) to L, it sends nothing for S ms: every token due in
that time, and every deadline after it of the requests it holds, moves S ms later (what vLLM did
in two capacity searches on the H200, examples/h200-dummy: tokens stopped for 3.5-6.7 s with
requests in flight, then resumed; its log names no cause). Once by default; with ``--stall-every``, each time an arrival brings the count to L
after the previous stall ended (a server that stalls at that load every time). Without the stall
the service above is exact, so the capacity a search should find despite a one-off stall is
known.

Run: ``python -m tests.standin_server --slots 2 --prefill-ms 15 --token-ms 3``; it prints its
port on stdout and serves on 127.0.0.1 until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys


class Slots:
    """k slots handed out in arrival order; a freed slot goes straight to the oldest waiter."""

    def __init__(self, k: int) -> None:
        self.free = k
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    async def acquire(self, now: float) -> float:
        """Wait for a slot; return the time the slot is ours from (now, or when it was freed)."""
        if self.free and not self.waiters:
            self.free -= 1
            return now
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return max(await fut, now)  # freed late (a late wake-up): never before this request came

    def release(self, at: float) -> None:
        if self.waiters:
            self.waiters.popleft().set_result(at)
        else:
            self.free += 1


class Stall:
    """The optional silence: ``shift`` is the stall time so far (a request's deadlines move by the
    part of it after its slot started), ``resume_at`` the end of the current one."""

    def __init__(self, at: int, seconds: float, every: bool) -> None:
        self.at, self.seconds, self.every = at, seconds, every
        self.armed = at > 0
        self.in_server = 0
        self.shift = 0.0
        self.resume_at = 0.0

    def arrive(self, now: float) -> None:
        self.in_server += 1
        if self.armed and self.in_server >= self.at and now >= self.resume_at:
            self.resume_at, self.shift = now + self.seconds, self.shift + self.seconds
            self.armed = self.every


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: object) -> bytes:
    return _chunk(b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n")


async def _sleep_until(loop: asyncio.AbstractEventLoop, t: float) -> None:
    delay = t - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def serve_one(writer: asyncio.StreamWriter, body: dict, slots: Slots, prefill_s: float, token_s: float,
                    stall: Stall) -> None:
    loop = asyncio.get_running_loop()
    n = int(body.get("max_tokens") or 16)
    stall.arrive(loop.time())
    start = await slots.acquire(loop.time())
    shift0 = stall.shift  # stalls before the slot started are in its wait already

    def due(i: int) -> float:
        return start + prefill_s + i * token_s + stall.shift - shift0

    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for i in range(n):
            while loop.time() < max(due(i), stall.resume_at):  # a stall may begin while this one sleeps
                await _sleep_until(loop, max(due(i), stall.resume_at))
            chunk = {"id": "x", "object": "text_completion", "model": body.get("model"),
                     "choices": [{"index": 0, "text": " tok", "finish_reason": "length" if i == n - 1 else None}]}
            writer.write(_event(chunk))
            await writer.drain()
    finally:
        stall.in_server -= 1
        slots.release(due(n - 1))  # the next request's slot starts when this one's last token was due
    writer.write(_event({"id": "x", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": n,
                                                           "total_tokens": n + 1}}))
    writer.write(_event(b"[DONE]") + _chunk(b""))
    await writer.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slots: Slots,
                 prefill_s: float, token_s: float, stall: Stall) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "POST" and path.endswith("/completions"):
                body = json.loads(raw or b"{}")
                if body.get("stream"):
                    await serve_one(writer, body, slots, prefill_s, token_s, stall)
                    continue
            status, payload = (b"200 OK", b"{}") if path in ("/health", "/v1/models") else (b"404 Not Found", b"{}")
            writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, len(payload), payload))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main_async(k: int, prefill_ms: float, token_ms: float, stall: Stall) -> None:
    slots = Slots(k)
    server = await asyncio.start_server(lambda r, w: handle(r, w, slots, prefill_ms / 1000, token_ms / 1000, stall),
                                        "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.standin_server")
    ap.add_argument("--slots", type=int, required=True)
    ap.add_argument("--prefill-ms", type=float, required=True)
    ap.add_argument("--token-ms", type=float, required=True)
    ap.add_argument("--stall-at", type=int, default=0, help="requests in the server that start a stall (0: never)")
    ap.add_argument("--stall-ms", type=float, default=0.0)
    ap.add_argument("--stall-every", action="store_true", help="stall every time, not once")
    a = ap.parse_args(argv)
    asyncio.run(main_async(a.slots, a.prefill_ms, a.token_ms, Stall(a.stall_at, a.stall_ms / 1000, a.stall_every)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
