"""A small HTTP/1.1 client on raw asyncio sockets: the load generator's measuring path.

Why not httpx here: ``benchmarks/client_overhead.py`` found httpx's pool (httpcore) doing
work proportional to the number of pooled connections for every request (and a ``poll``
system call per idle connection), and some 60-90 us of h11/anyio layers per streamed chunk;
at 64 concurrent streams our client spent 10 ms of CPU per request and was the bottleneck.
httpx stays for everything that is not measured (health, readiness, ``/metrics``).

What it does: plain ``http://`` only, one request at a time per connection (no pipelining),
keep-alive with a LIFO pool bounded by ``max_connections``, request bodies sent at once,
responses framed by ``Content-Length``, chunked encoding, or connection close. The response
is handed to a sink (``on_head``, ``on_body``, ``on_end``) from inside the event loop's read
callback, so a streamed event costs no task switch.

Clock: every received block of bytes is stamped. Where the kernel supports it (Linux,
``SO_TIMESTAMPNS``) the stamp is the kernel's receive time of the newest packet in the block,
moved from ``CLOCK_REALTIME`` onto ``time.perf_counter_ns()``'s clock by the offset between
the two clocks read at that moment; it does not grow when the event loop is busy with other
streams (several hundred streams that get a token in the same server step arrive together,
and user-space stamps of the last one would be late by the time spent parsing the others).
Otherwise, or if a kernel stamp is implausible, the stamp is ``perf_counter_ns()`` right after
the read. The send stamp is taken right before the request's first ``send`` call.
Runtime module: standard library only.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import struct
import sys
import time
from typing import Any, Callable, Protocol
from urllib.parse import urlsplit

# SO_TIMESTAMPNS (asm-generic value; x86-64, arm64, ...); the stdlib does not name it.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35) if sys.platform.startswith("linux") else None
_ANC_SIZE = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0
_TS = struct.Struct("qq")
_READ_SIZE = 64 * 1024  # a larger buffer costs ~20 us per read (a fresh 256 KiB allocation)
_MAX_HEAD = 64 * 1024

perf_ns = time.perf_counter_ns
wall_ns = time.time_ns


class HTTPError(Exception):
    """A transport-level failure of one exchange (the request gets an error, never a crash)."""


class ConnectError(HTTPError):
    pass


class ReadError(HTTPError):
    pass


class WriteError(HTTPError):
    pass


class RemoteProtocolError(HTTPError):
    pass


class Sink(Protocol):
    """Receives one response, from inside the event loop's read callback."""

    def on_head(self, status: int, headers: dict[str, str], t_ns: int) -> None: ...

    def on_body(self, data: bytes, t_ns: int) -> None: ...


def encode_request(method: str, target: str, host_header: str, json_body: Any = None) -> bytes:
    """The bytes of one request; JSON as httpx writes it (compact, UTF-8, no NaN)."""
    body = b""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\nAccept: */*\r\nUser-Agent: servingbench\r\n"
    if json_body is not None:
        body = json.dumps(json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        head += "Content-Type: application/json\r\n"
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


class Connection:
    """One keep-alive connection; reads are always armed so a server's close is seen at once."""

    __slots__ = ("pool", "sock", "fd", "loop", "kernel_stamps", "closed", "sink", "fut", "_buf", "_mode",
                 "_left", "_trailer", "_crlf", "_keep", "_got", "_t_last", "used")

    def __init__(self, pool: "Pool", sock: socket.socket, kernel_stamps: bool) -> None:
        self.pool, self.sock, self.fd = pool, sock, sock.fileno()
        self.loop = pool.loop
        self.kernel_stamps = kernel_stamps
        self.closed = False
        self.used = False  # has it carried a request before (a stale keep-alive may be retried)
        self.sink: Sink | None = None
        self.fut: asyncio.Future | None = None
        self._reset()
        self.loop.add_reader(self.fd, self._on_readable)

    def _reset(self) -> None:
        self._buf = b""
        self._mode = 0  # 0 head, 1 content-length, 2 chunked, 3 until close, 4 done
        self._left = 0
        self._trailer = False
        self._crlf = False
        self._keep = True
        self._got = False  # any response byte seen
        self._t_last = 0

    # -- one exchange -------------------------------------------------------------------------
    def start(self, data: bytes, sink: Sink) -> tuple[int, asyncio.Future]:
        """Send ``data`` and return (send stamp, future resolved with the end stamp or an error)."""
        self._reset()
        self.sink = sink
        fut = self.fut = self.loop.create_future()
        t = perf_ns()
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._finish(WriteError(f"{type(exc).__name__}: {exc}"))
            return t, fut
        if n < len(data):
            self.loop.create_task(self._send_rest(data[n:]))
        return t, fut

    async def _send_rest(self, rest: bytes) -> None:
        try:
            await self.loop.sock_sendall(self.sock, rest)
        except OSError as exc:
            self._finish(WriteError(f"{type(exc).__name__}: {exc}"))

    def _stamp(self, anc: list) -> int:
        t = perf_ns()
        if anc:
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = _TS.unpack_from(cdata)
                    k = sec * 1_000_000_000 + nsec - (wall_ns() - perf_ns())
                    # Plausible: not after the read, not older than the connection's last event.
                    if k <= t and t - k < 10_000_000_000:
                        return k
        return t

    def _on_readable(self) -> None:
        try:
            if self.kernel_stamps:
                data, anc, _flags, _addr = self.sock.recvmsg(_READ_SIZE, _ANC_SIZE)
                t = self._stamp(anc)
            else:
                data = self.sock.recv(_READ_SIZE)
                t = perf_ns()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(ReadError(f"{type(exc).__name__}: {exc}"), t_ns=perf_ns())
            self.close()
            return
        if t < self._t_last:  # one connection's stamps never go backwards
            t = self._t_last
        self._t_last = t
        if not data:
            self._on_eof(t)
            return
        if self.fut is None:  # bytes while idle: the server broke the protocol
            self.close()
            return
        self._got = True
        try:
            self._feed(data, t)
        except HTTPError as exc:
            self._finish(exc, t_ns=t)
            self.close()
        except Exception as exc:  # a sink failure must not escape into the event loop
            self._finish(RemoteProtocolError(f"{type(exc).__name__}: {exc}"), t_ns=t)
            self.close()

    def _on_eof(self, t: int) -> None:
        if self.fut is not None:
            if self._mode == 3:
                self._finish(None, t_ns=t)
            elif not self._got and self.used:
                self._finish(StaleConnection("server closed the kept-alive connection"), t_ns=t)
            else:
                self._finish(RemoteProtocolError("peer closed connection without sending complete message body"),
                             t_ns=t)
        self.close()

    def _feed(self, data: bytes, t: int) -> None:
        while self._mode == 0:
            buf = self._buf + data if self._buf else data
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > _MAX_HEAD:
                    raise RemoteProtocolError("response head too large")
                self._buf = buf
                return
            self._buf = b""
            self._head(buf[:i], t)
            data = buf[i + 4:]
            if self._mode == 4:
                if data:
                    raise RemoteProtocolError("bytes after the end of the response")
                self._finish(None, t_ns=t)
                return
            if not data:
                return
        sink = self.sink
        if self._mode == 2:
            body, end = self._dechunk(data)
            if body:
                sink.on_body(body, t)
            if end:
                self._finish(None, t_ns=t)
        elif self._mode == 1:
            if len(data) > self._left:
                raise RemoteProtocolError("more bytes than Content-Length")
            self._left -= len(data)
            sink.on_body(data, t)
            if self._left == 0:
                self._finish(None, t_ns=t)
        elif self._mode == 3:
            sink.on_body(data, t)
        else:
            raise RemoteProtocolError("bytes after the end of the response")

    def _head(self, head: bytes, t: int) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        try:
            version, status = parts[0], int(parts[1])
        except (IndexError, ValueError):
            raise RemoteProtocolError(f"bad status line {lines[0][:80]!r}") from None
        if not version.startswith("HTTP/1."):
            raise RemoteProtocolError(f"bad status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        conn = headers.get("connection", "").lower()
        self._keep = "close" not in conn and (version != "HTTP/1.0" or "keep-alive" in conn)
        if 100 <= status < 200:  # an interim answer (100 Continue): the real head follows
            self._mode = 0
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode = 2
        elif "content-length" in headers:
            try:
                self._left = int(headers["content-length"])
            except ValueError:
                raise RemoteProtocolError("bad Content-Length") from None
            self._mode = 1 if self._left > 0 else 4
        elif status in (204, 304):
            self._mode = 4
        else:
            self._mode = 3
            self._keep = False
        self.sink.on_head(status, headers, t)

    def _dechunk(self, data: bytes) -> tuple[bytes, bool]:
        if not self._buf and not self._left and not self._crlf and not self._trailer:
            # Fast path: the read is exactly one whole chunk (one event per chunk, as uvicorn
            # and TGI's server write them, read as it arrives).
            j = data.find(b"\r\n")
            if 0 < j <= 8 and data.endswith(b"\r\n"):
                try:
                    size = int(data[:j], 16)
                except ValueError:
                    size = -1
                if size > 0 and len(data) == j + 4 + size:
                    return data[j + 2:-2], False
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        i, n = 0, len(buf)
        end = False
        while i < n:
            if self._left:
                take = min(self._left, n - i)
                out.append(buf[i:i + take])
                i += take
                self._left -= take
                if self._left:
                    break
                self._crlf = True
            if self._crlf:
                if n - i < 2:
                    break
                if buf[i:i + 2] != b"\r\n":
                    raise RemoteProtocolError("bad chunk terminator")
                i += 2
                self._crlf = False
                continue
            j = buf.find(b"\r\n", i)
            if j < 0:
                if n - i > 1024:
                    raise RemoteProtocolError("chunk size line too long")
                break
            line = buf[i:j]
            i = j + 2
            if self._trailer:
                if not line:  # blank line after the last chunk's trailers: the end
                    end = True
                    break
                continue
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise RemoteProtocolError(f"bad chunk size {line[:40]!r}") from None
            if size == 0:
                self._trailer = True
            else:
                self._left = size
        rest = buf[i:]
        if end and rest:
            raise RemoteProtocolError("bytes after the end of the response")
        self._buf = rest
        return (out[0] if len(out) == 1 else b"".join(out)), end

    def _finish(self, error: HTTPError | None, t_ns: int = 0) -> None:
        fut, self.fut = self.fut, None
        self.sink = None
        if error is None and self._mode != 3:
            self._mode = 4
        if fut is not None and not fut.done():
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(t_ns)

    def reusable(self) -> bool:
        return not self.closed and self._keep and self._mode == 4 and self.fut is None and not self._buf

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.fd)
        except Exception:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        if self.fut is not None:
            self._finish(ReadError("connection closed"))
        self.pool._closed(self)


class StaleConnection(ReadError):
    """A kept-alive connection the server had closed before our request reached it."""


class Pool:
    """Keep-alive connections to one ``http://host:port``, at most ``max_connections`` open."""

    def __init__(self, base_url: str, max_connections: int, connect_timeout_s: float = 30.0,
                 kernel_stamps: bool = True) -> None:
        u = urlsplit(base_url)
        if u.scheme != "http":
            raise ValueError(f"http1.Pool speaks plain http only, not {u.scheme!r}")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.prefix = u.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = f"{host}:{self.port}" if u.port else host
        self.max_connections = max(1, max_connections)
        self.connect_timeout_s = connect_timeout_s
        self.want_kernel_stamps = kernel_stamps and _SO_TIMESTAMPNS is not None and _ANC_SIZE > 0
        self.kernel_stamps: bool | None = None  # known after the first connection
        self.loop = asyncio.get_running_loop()
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._addr: tuple | None = None
        self._family = socket.AF_INET

    async def _connect(self, deadline: float) -> Connection:
        if self._addr is None:
            infos = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            self._family, _, _, _, self._addr = infos[0]
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stamps = False
            if self.want_kernel_stamps:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                    stamps = True
                except OSError:
                    stamps = False
            left = min(self.connect_timeout_s, deadline - self.loop.time())
            await asyncio.wait_for(self.loop.sock_connect(sock, self._addr), max(0.0, left))
        except asyncio.TimeoutError:
            sock.close()
            raise ConnectError(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            sock.close()
            raise ConnectError(f"{type(exc).__name__}: {exc}") from None
        self.kernel_stamps = stamps if self.kernel_stamps is None else (self.kernel_stamps and stamps)
        conn = Connection(self, sock, stamps)
        self._all.add(conn)
        return conn

    async def acquire(self, deadline: float) -> Connection:
        """An idle connection, a new one, or (all ``max_connections`` busy) the next one freed."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        if self._open >= self.max_connections:
            fut = self.loop.create_future()
            self._waiters.append(fut)
            try:
                conn = await asyncio.wait_for(fut, max(0.0, deadline - self.loop.time()))
            except BaseException:
                if fut.done() and not fut.cancelled():
                    got = fut.result()
                    if got is None:
                        self._wake()
                    else:
                        self.release(got)
                raise
            if conn is not None:
                return conn
        self._open += 1
        try:
            return await self._connect(deadline)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    def release(self, conn: Connection) -> None:
        conn.used = True
        if not conn.reusable():
            conn.close()
            return
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return
        self._idle.append(conn)

    def _closed(self, conn: Connection) -> None:
        self._open -= 1
        self._all.discard(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    async def aclose(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.cancel()


class Exchange:
    """Runs one request on a pool: connection, send, wait, timeout, release. ``send_ns`` and
    ``end_ns`` are the stamps of the request's first send and of the response's last bytes."""

    __slots__ = ("send_ns", "end_ns")

    def __init__(self) -> None:
        self.send_ns = 0
        self.end_ns = 0

    async def run(self, pool: Pool, data: bytes, sink: Sink, deadline: float,
                  on_send: Callable[[int], None] | None = None) -> None:
        loop = pool.loop
        for attempt in (0, 1):
            conn = await pool.acquire(deadline)
            reused = conn.used
            self.send_ns, fut = conn.start(data, sink)
            if on_send is not None:
                on_send(self.send_ns)
            timer = loop.call_at(deadline, _expire, fut)
            try:
                self.end_ns = await fut
            except HTTPError:
                got = conn._got
                conn.close()
                if reused and not got and attempt == 0:
                    continue  # a kept-alive connection the server had closed: nothing reached it
                raise
            except BaseException:
                conn.close()
                raise
            finally:
                timer.cancel()
            pool.release(conn)
            return


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())
