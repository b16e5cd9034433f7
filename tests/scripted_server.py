"""A scripted HTTP server for the client's edge cases.

A stand-in, not a framework: it exists only to produce exact byte sequences and faults that a
real server will not produce on demand (an event split across reads, several tokens in one
event, a stream cut off, HTTP 500, a stream that never ends). Real-server behaviour is tested
against real vLLM and Transformers servers in test_servers.py.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# A script: list of (delay_s, bytes) chunks written in order; None bytes = close abruptly.
Script = list[tuple[float, bytes | None]]


class ScriptedServer:
    def __init__(self, routes: dict[str, Callable[[dict], tuple[int, dict[str, str], Script]]]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                self._serve(b"")

            def do_POST(self):
                self._serve(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def _serve(self, body: bytes):
                outer.requests.append((self.path, body))
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, headers, script = route({"body": body})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Connection", "close")
                self.end_headers()
                for delay, chunk in script:
                    if delay:
                        time.sleep(delay)
                    if chunk is None:  # cut the connection mid-body
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    try:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        return
                self.close_connection = "Content-Length" not in headers

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sse(*payloads: str, gap: float = 0.0, sep: bytes = b"data: ") -> Script:
    return [(gap, sep + p.encode() + b"\n\n") for p in payloads]


def json_body(data: bytes) -> tuple[dict[str, str], Script]:
    return {"Content-Type": "application/json", "Content-Length": str(len(data))}, [(0.0, data)]
