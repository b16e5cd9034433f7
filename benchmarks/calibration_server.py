"""A zero-work OpenAI-compatible ``/v1/completions`` server for calibrating load clients.

It generates nothing: for a request with ``max_tokens`` = N it writes N content events in
vLLM's framing (``data: {json}\\n\\n`` inside HTTP/1.1 chunked encoding, the last one with
``finish_reason: "length"``), a usage-only event when ``stream_options.include_usage`` is
set, and ``data: [DONE]``. Event k (0-based) is due at ``arrival + ttft + k * interval``.

It records, per request, in arrival order: ``key`` (the prompt text, which the driver makes
unique), ``rid`` (the request's ``X-Request-ID`` header, which some clients send; else null) and

- ``arrival_ns``: the kernel's receive time of the bytes that completed the request
  (``SO_TIMESTAMPNS``, moved onto CLOCK_MONOTONIC), so that a burst of requests the server
  reads one after the other does not make later ones look as if they arrived late (without
  kernel stamps: the time right after the read);
- ``send_ns``: for each content event, the moment just before its ``send`` system call.

Clocks. Both figures come from ``CLOCK_MONOTONIC`` (``time.clock_gettime_ns``). On Linux
that clock is one system-wide clock, shared by every process and never stepped (NTP may
only slew it, equally for everyone), and it is the clock behind ``time.perf_counter_ns``
in CPython, which both load clients use; ``client_overhead.py`` checks that before it
trusts a cross-process difference. Two kinds of error are derived from these records:

- clock-free: the server's own TTFT (``send_ns[0] - arrival_ns``) and inter-event gaps
  are differences within this process, compared with the client's differences within its
  process. "TTFT error" = client TTFT - server TTFT: the request path (client stamp to
  server arrival) plus the first event's path (server write to client stamp). It is the
  figure that matters when comparing a client TTFT with a server-side TTFT metric.
- shared-clock: "event lag" = client receive stamp - server send stamp of the same event.

Routes: ``POST /v1/completions``, ``GET /health``, ``GET /metrics`` (a vLLM-style TTFT
histogram sum/count from the server's own stamps), ``GET /calibration/records`` (returns
and clears the records), ``POST /calibration/config`` (``{"interval_ms", "ttft_ms"}``).

Written on raw non-blocking sockets driven by the event loop's reader callbacks and timers
(no task per request; uvloop when importable: this is a measuring tool, not servingbench's
runtime) so that it is much cheaper per event than any client it measures; the driver
reports its CPU use beside the client's. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import socket
import struct
import sys
import time

CLOCK = time.CLOCK_MONOTONIC


def now_ns() -> int:
    return time.clock_gettime_ns(CLOCK)


class State:
    def __init__(self, interval_ms: float, ttft_ms: float, model: str) -> None:
        self.interval_ns = int(interval_ms * 1e6)
        self.ttft_ns = int(ttft_ms * 1e6)
        self.model = model
        self.records: list[dict] = []
        self.seq = 0
        self.ttft_sum_s = 0.0
        self.ttft_count = 0
        self.kernel_stamps = sys.platform.startswith("linux")


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nserver: calibration\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                b"transfer-encoding: chunked\r\n\r\n")
_DONE = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


def _plain(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 %s\r\nserver: calibration\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (status.encode(), ctype, len(body), body))


_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # asm-generic value (x86-64, arm64)
_ANC = socket.CMSG_SPACE(16)


class Conn:
    """One client connection on a raw non-blocking socket (reads with ``recvmsg`` to get the
    kernel's receive time of each request; writes straight to ``send``)."""

    __slots__ = ("st", "sock", "fd", "loop", "buf", "out", "closed", "writing")

    def __init__(self, st: State, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.st, self.sock, self.fd, self.loop = st, sock, sock.fileno(), loop
        self.buf = b""
        self.out = bytearray()
        self.closed = False
        self.writing = False
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if st.kernel_stamps:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            except OSError:
                st.kernel_stamps = False
        loop.add_reader(self.fd, self.on_readable)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            if self.writing:
                self.loop.remove_writer(self.fd)
            self.sock.close()

    def write(self, data: bytes) -> None:
        """Send now; what the kernel does not take waits for the socket to drain."""
        if self.closed:
            return
        if self.out:
            self.out += data
            return
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close()
            return
        if n < len(data):
            self.out += data[n:]
            self.writing = True
            self.loop.add_writer(self.fd, self.on_writable)

    def on_writable(self) -> None:
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del self.out[:n]
        if not self.out:
            self.writing = False
            self.loop.remove_writer(self.fd)

    def on_readable(self) -> None:
        try:
            data, anc, _f, _a = self.sock.recvmsg(65536, _ANC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        arrival = now_ns()
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = struct.unpack_from("qq", cdata)
                k = sec * 1_000_000_000 + nsec - (time.time_ns() - now_ns())
                if k <= arrival and arrival - k < 10_000_000_000:
                    arrival = k
        if not data:
            self.close()
            return
        self.buf += data
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = self.buf[:i].decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, path, _ = lines[0].split(" ", 2)
            except ValueError:
                self.write(_plain("400 Bad Request", b"{}"))
                self.close()
                return
            length, rid = 0, None
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v.strip())
                elif k == "x-request-id":
                    rid = v.strip()
            end = i + 4 + length
            if len(self.buf) < end:
                return
            body = self.buf[i + 4:end]
            self.buf = self.buf[end:]
            self.handle(method, path, body, arrival, rid)

    def handle(self, method: str, path: str, body: bytes, arrival: int, rid: str | None = None) -> None:
        st = self.st
        path = path.split("?", 1)[0]
        if path == "/v1/completions" and method == "POST":
            try:
                req = json.loads(body)
            except ValueError:
                self.write(_plain("400 Bad Request", b'{"error":"bad json"}'))
                return
            Stream(self, req, arrival, rid).start()
        elif path == "/health":
            self.write(_plain("200 OK", b""))
        elif path == "/metrics":
            text = ("# TYPE vllm:time_to_first_token_seconds histogram\n"
                    f'vllm:time_to_first_token_seconds_sum{{model_name="{st.model}"}} {st.ttft_sum_s!r}\n'
                    f'vllm:time_to_first_token_seconds_count{{model_name="{st.model}"}} {st.ttft_count}.0\n')
            self.write(_plain("200 OK", text.encode(), b"text/plain; version=0.0.4"))
        elif path == "/calibration/records":
            ru = resource.getrusage(resource.RUSAGE_SELF)
            out = json.dumps({"clock": "CLOCK_MONOTONIC", "kernel_stamps": st.kernel_stamps,
                              "cpu_s": ru.ru_utime + ru.ru_stime, "records": st.records}).encode()
            st.records = []
            self.write(_plain("200 OK", out))
        elif path == "/calibration/config" and method == "POST":
            cfg = json.loads(body or b"{}")
            if "interval_ms" in cfg:
                st.interval_ns = int(float(cfg["interval_ms"]) * 1e6)
            if "ttft_ms" in cfg:
                st.ttft_ns = int(float(cfg["ttft_ms"]) * 1e6)
            self.write(_plain("200 OK", json.dumps({"interval_ms": st.interval_ns / 1e6,
                                                    "ttft_ms": st.ttft_ns / 1e6}).encode()))
        elif path == "/v1/models":
            self.write(_plain("200 OK", json.dumps({"object": "list", "data": [
                {"id": st.model, "object": "model", "owned_by": "calibration"}]}).encode()))
        else:
            self.write(_plain("404 Not Found", b'{"error":"not found"}'))


class Stream:
    """One completion: its events go out from timer callbacks (no task per request)."""

    __slots__ = ("conn", "n", "k", "due", "interval", "sends", "mid", "last", "tail", "arrival", "stream", "rid")

    def __init__(self, conn: Conn, req: dict, arrival: int, header_rid: str | None = None) -> None:
        st = conn.st
        self.conn, self.arrival = conn, arrival
        self.n = max(1, int(req.get("max_tokens") or 16))
        prompt = req.get("prompt")
        key = prompt if isinstance(prompt, str) else json.dumps(prompt)
        self.stream = bool(req.get("stream"))
        usage = self.stream and bool((req.get("stream_options") or {}).get("include_usage"))
        st.seq += 1
        self.rid = rid = b"cmpl-%d" % st.seq
        self.sends: list[int] = []
        st.records.append({"key": key, "rid": header_rid, "arrival_ns": arrival, "send_ns": self.sends})
        self.k = 0
        self.due = arrival + st.ttft_ns
        self.interval = st.interval_ns
        model = st.model.encode()
        pre = (b'data: {"id":"' + rid + b'","object":"text_completion","created":0,"model":"' + model
               + b'","choices":[{"index":0,"text":" tok","logprobs":null,"finish_reason":')
        self.mid = _chunk(pre + b'null,"stop_reason":null}],"usage":null}\n\n')
        self.last = _chunk(pre + b'"length","stop_reason":null}],"usage":null}\n\n')
        self.tail = _DONE
        if usage:
            self.tail = _chunk(b'data: {"id":"' + rid + b'","object":"text_completion","created":0,"model":"' + model
                               + b'","choices":[],"usage":{"prompt_tokens":1,"total_tokens":%d,'
                               b'"completion_tokens":%d}}\n\n' % (self.n + 1, self.n)) + _DONE

    def start(self) -> None:
        if not self.stream:
            self.conn.loop.call_later(max(0.0, (self.due + (self.n - 1) * self.interval - now_ns()) / 1e9),
                                      self.whole)
            return
        self.conn.write(_STREAM_HEAD)
        self.step()

    def whole(self) -> None:
        st, n = self.conn.st, self.n
        t = now_ns()
        self.sends.append(t)
        body = json.dumps({"id": self.rid.decode(), "object": "text_completion", "created": 0,
                           "model": st.model, "choices": [{"index": 0, "text": " tok" * n, "logprobs": None,
                                                           "finish_reason": "length"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}}).encode()
        st.ttft_sum_s += (t - self.arrival) / 1e9
        st.ttft_count += 1
        self.conn.write(_plain("200 OK", body))

    def step(self) -> None:
        """Send every event that is due, then sleep until the next one."""
        conn, sends = self.conn, self.sends
        while self.k < self.n:
            if conn.closed:
                return
            t = now_ns()
            if t < self.due:
                conn.loop.call_later((self.due - t) / 1e9, self.step)
                return
            sends.append(t)
            self.k += 1
            conn.write(self.last if self.k == self.n else self.mid)
            self.due += self.interval
        st = conn.st
        st.ttft_sum_s += (sends[0] - self.arrival) / 1e9
        st.ttft_count += 1
        conn.write(self.tail)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=int(os.environ.get("CALIB_PORT", "0")))
    ap.add_argument("--interval-ms", type=float, default=float(os.environ.get("CALIB_INTERVAL_MS", "10")))
    ap.add_argument("--ttft-ms", type=float, default=float(os.environ.get("CALIB_TTFT_MS", "10")))
    ap.add_argument("--model", default="calibration")
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to one core")
    ap.add_argument("--sched", choices=("fifo", "nice", "none"), default="none",
                    help="fifo: SCHED_FIFO priority 1; nice: nice -10 (both need privilege)")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    if args.sched == "fifo":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError:
            args.sched = "nice"
    if args.sched == "nice":
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except OSError:
            pass
    if not args.no_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found]
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    gc.freeze()
    st = State(args.interval_ms, args.ttft_ms, args.model)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", args.port))
        lsock.listen(4096)
        lsock.setblocking(False)

        def accept() -> None:
            for _ in range(64):
                try:
                    sock, _addr = lsock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                Conn(st, sock, loop)

        loop.add_reader(lsock.fileno(), accept)
        port = lsock.getsockname()[1]
        print(f"READY http://127.0.0.1:{port} loop={type(loop).__module__}", flush=True)
        await loop.create_future()  # until killed

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
