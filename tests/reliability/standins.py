"""Stand-ins for faults that a real server will not produce on demand on this machine.

- ``standin_server.py`` modes (a tiny script run as the "server" command):
  ``never-ready`` listens and answers 503 to everything forever, with a grandchild process
  (a server that hangs while loading; the grandchild checks that the whole tree is stopped);
  ``oom`` prints PyTorch's CUDA out-of-memory traceback line and exits 1 (no GPU here);
  ``bind`` binds the port it is given and serves /health, so a taken port fails it the way a
  real server fails (``OSError: [Errno 98] Address already in use``);
  ``secret-then-die`` prints its command line and environment, then exits 1 (a failure whose
  last log lines carry a token).
- ``StandinAdapter``: the transformers-naive adapter (same request protocol) launching one
  of those modes instead of the naive server (the arm's ``server_args`` appended).
- ``EchoEnvAdapter``: the *real* naive server, launched through a wrapper that first prints
  the whole environment to its log (a server that echoes its environment), then execs it.
- ``EchoArgsAdapter``: the same, with the arm's ``server_args`` on the wrapper's command line
  (which it prints with its environment) and left off the naive server's, which takes none.
- ``FaultServer``: a raw TCP HTTP/1.1 server whose replies are scripted per request, down to
  a TCP reset (RST), which neither tests/scripted_server.py nor a real server gives on demand.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Union

from servingbench.runtime.frameworks.base import Launch
from servingbench.runtime.frameworks.transformers_naive import TransformersNaiveAdapter
from servingbench.runtime.spec import ServerSpec

STANDIN = Path(__file__).with_name("standin_server.py")
OOM_LINE = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.53 GiB. GPU 0 has a total capacity of 79.19 GiB"


class StandinAdapter(TransformersNaiveAdapter):
    """transformers-naive's protocol, but the server command is the stand-in in ``mode``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        return Launch(argv=[sys.executable, str(STANDIN), self.mode, "--host", host, "--port", str(port),
                            *server.server_args])


_ECHO_THEN_EXEC = (
    "import os, sys\n"
    "print('server environment:', dict(os.environ), flush=True)\n"
    "for k in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN'):\n"
    "    print(f'{k}={os.environ.get(k)}', flush=True)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


class EchoEnvAdapter(TransformersNaiveAdapter):
    """The real naive server, started by a wrapper that first echoes its environment."""

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        real = super().launch(server, host, port)
        assert real.argv[0] == sys.executable
        return Launch(argv=[sys.executable, "-c", _ECHO_THEN_EXEC, *real.argv[1:]], env=real.env)


_ECHO_ARGS_THEN_EXEC = (
    "import os, sys\n"
    "extra = int(sys.argv[1])\n"
    "print('server command line:', ' '.join(sys.argv), flush=True)\n"
    "print('server environment:', dict(os.environ), flush=True)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:len(sys.argv) - extra]])\n"
)


class EchoArgsAdapter(TransformersNaiveAdapter):
    """The real naive server behind a wrapper that prints its whole command line (the arm's
    server_args included) and environment, then execs the server without those flags."""

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        real = super().launch(dataclasses.replace(server, server_args=()), host, port)
        extra = list(server.server_args)
        return Launch(argv=[sys.executable, "-c", _ECHO_ARGS_THEN_EXEC, str(len(extra)), *real.argv[1:], *extra],
                      env=real.env)


# -- a raw, scripted HTTP/1.1 server --------------------------------------------------------------
RST = "RST"      # reset the connection (SO_LINGER 0): the client sees ECONNRESET
CLOSE = "CLOSE"  # close the connection (FIN)
Action = Union[bytes, float, str]
Plan = Callable[[str, bytes, int], list[Action]]  # (path, body, request number) -> actions


def http_json(status: int, body: bytes, reason: str = "X") -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def sse_event(payload: str) -> bytes:
    return b"data: " + payload.encode() + b"\n\n"


class FaultServer:
    """One thread per connection; each request (one per connection) gets the plan's actions."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.count = 0
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self) -> "FaultServer":
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _read_request(self, conn: socket.socket) -> tuple[str, str, bytes] | None:
        conn.settimeout(5)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return method, path, body

    def _serve(self, conn: socket.socket) -> None:
        try:
            req = self._read_request(conn)
            if req is None:
                return
            method, path, body = req
            if method == "GET" and path == "/health":
                conn.sendall(http_json(200, b'{"status":"ok"}', "OK"))
                return
            with self._lock:
                n = self.count
                self.count += 1
            for action in self.plan(path, body, n):
                if self._stop.is_set():
                    return
                if isinstance(action, (int, float)):
                    self._stop.wait(action)
                elif action == RST:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                elif action == CLOSE:
                    return
                else:
                    conn.sendall(action)
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def find_sentinels(sentinels: list[str], roots: list[Path], texts: dict[str, str]) -> list[str]:
    """Where any sentinel occurs: file paths under ``roots`` and names of ``texts``."""
    hits = []
    blobs = [s.encode() for s in sentinels]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and any(b in path.read_bytes() for b in blobs):
                hits.append(str(path))
    hits += [name for name, text in texts.items() if any(s in text for s in sentinels)]
    return hits
