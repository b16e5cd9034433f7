"""A stand-in for SGLang 0.5.16's HTTP server, as seen on the H200 (shared/tools/sglang-wheelhouse).

A stand-in, not SGLang: no GPU here can run SGLang, and this process exists so that the kit's
SGLang path (launch flags, readiness, requests, stream parsing, usage, /metrics) runs end to end
against a server whose true answer is known exactly. It reproduces what SGLang did on the H200:
- ``/health`` answers 503 until its own warm-up has finished, then 200;
- ``/v1/completions`` and ``/v1/chat/completions`` stream ONE SSE event PER GENERATED TOKEN, also
  when the detokenizer holds the token's text back: such events carry empty text (``--text-mode
  held``: every third token's text arrives with the next token's; ``--text-mode empty``: no event
  carries text at all, as GPT-2 and Phi-2 with generated dummy tokenizers did there), then a final
  usage chunk (``stream_options.include_usage``) and ``data: [DONE]``; with
  ``stream_options.continuous_usage_stats`` every chunk carries the running usage, as SGLang does;
- ``ignore_eos`` makes the output exactly ``max_tokens`` long; without it the stand-in "hits EOS"
  after half of them (so a test can tell that forced length was asked for);
- ``/metrics`` (only with ``--enable-metrics``) has ``sglang:time_to_first_token_seconds`` and
  ``sglang:inter_token_latency_seconds`` histograms of what this process itself timed.
Streams use chunked transfer encoding, as uvicorn does. ``GET /standin/stats`` tells a test what
the stand-in saw (health answers, request bodies).

    python -m tests.sglang_standin --model-path DIR --served-model-name M --host H --port P \
        [--enable-metrics] [--warmup-s S] [--text-mode text|held|empty] [--token-gap-s S] ...

Unknown flags (SGLang's others) are accepted and ignored; those received are listed in stats.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FIRST_TOKEN_S = 0.03


class State:
    def __init__(self, args: argparse.Namespace, unknown: list[str]) -> None:
        self.args, self.unknown = args, unknown
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.health: list[int] = []
        self.bodies: list[dict[str, Any]] = []
        self.ttft = [0.0, 0]  # sum seconds, count
        self.itl = [0.0, 0]

    def warm(self) -> bool:
        return time.monotonic() - self.t0 >= self.args.warmup_s

    def metrics(self) -> str:
        name = self.args.served_model_name
        lines = []
        for metric, (total, count) in (("sglang:time_to_first_token_seconds", self.ttft),
                                       ("sglang:inter_token_latency_seconds", self.itl)):
            lines += [f"# HELP {metric} stand-in", f"# TYPE {metric} histogram",
                      f'{metric}_bucket{{le="+Inf",model_name="{name}"}} {count}.0',
                      f'{metric}_sum{{model_name="{name}"}} {total}',
                      f'{metric}_count{{model_name="{name}"}} {count}.0']
        return "\n".join(lines) + "\n"


def token_texts(n: int, mode: str) -> list[str]:
    """The text each token's event carries."""
    if mode == "empty":
        return [""] * n
    words = [f"w{i} " for i in range(n)]
    if mode == "text":
        return words
    out = []
    for i in range(n):  # held: token i%3==1 is held back and arrives with the next token
        if i % 3 == 1 and i + 1 < n:
            out.append("")
        elif i % 3 == 2:
            out.append(words[i - 1] + words[i])
        else:
            out.append(words[i])
    return out


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path in ("/health", "/health_generate"):
                status = 200 if state.warm() else 503
                with state.lock:
                    state.health.append(status)
                self._send(status, b"")
            elif self.path == "/metrics" and state.args.enable_metrics:
                with state.lock:
                    text = state.metrics()
                self._send(200, text.encode(), "text/plain; version=0.0.4")
            elif self.path == "/standin/stats":
                with state.lock:
                    data = {"health": state.health, "bodies": state.bodies, "unknown_flags": state.unknown,
                            "args": vars(state.args)}
                self._send(200, json.dumps(data).encode())
            else:
                self._send(404, b'{"detail": "Not Found"}')

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw or b"{}")
            with state.lock:
                state.bodies.append(body)
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._send(404, b'{"detail": "Not Found"}')
                return
            if not state.warm():
                self._send(503, b'{"error": {"message": "server is starting"}}')
                return
            if body.get("model") != state.args.served_model_name:
                self._send(404, json.dumps({"object": "error", "message": f"model {body.get('model')!r} not found",
                                            "code": 404}).encode())
                return
            chat = self.path.endswith("chat/completions")
            n = int(body.get("max_tokens") or 16)
            n = n if body.get("ignore_eos") else max(1, n // 2)
            finish = "length" if body.get("ignore_eos") else "stop"
            usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
            texts = token_texts(n, state.args.text_mode)
            if not body.get("stream"):
                time.sleep(FIRST_TOKEN_S + state.args.token_gap_s * (n - 1))
                choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(texts)}} if chat
                          else {"index": 0, "text": "".join(texts)})
                self._send(200, json.dumps({"id": "x", "object": "chat.completion" if chat else "text_completion",
                                            "choices": [{**choice, "finish_reason": finish}],
                                            "usage": usage}).encode())
                return
            self._stream(body, chat, n, texts, finish, usage)

        def _chunk(self, payload: str) -> None:
            data = f"data: {payload}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _stream(self, body: dict, chat: bool, n: int, texts: list[str], finish: str, usage: dict) -> None:
            opts = body.get("stream_options") or {}
            per_chunk = bool(opts.get("continuous_usage_stats"))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            t_start = time.perf_counter()

            def chunk(text: str | None, done: int, fin: str | None = None, role: bool = False) -> str:
                if chat:
                    delta = {"role": "assistant", "content": ""} if role else {"content": text}
                    choice = {"index": 0, "delta": delta, "finish_reason": fin}
                else:
                    choice = {"index": 0, "text": text, "finish_reason": fin}
                out: dict[str, Any] = {"id": "x", "object": "chat.completion.chunk" if chat else "text_completion",
                                       "choices": [choice]}
                if per_chunk:
                    out["usage"] = {"prompt_tokens": 7, "completion_tokens": done, "total_tokens": 7 + done}
                return json.dumps(out)

            if chat:
                self._chunk(chunk(None, 0, role=True))
            time.sleep(FIRST_TOKEN_S)
            last = time.perf_counter()
            with state.lock:
                state.ttft[0] += last - t_start
                state.ttft[1] += 1
            for i, text in enumerate(texts):
                if i:
                    time.sleep(state.args.token_gap_s)
                    now = time.perf_counter()
                    with state.lock:
                        state.itl[0] += now - last
                        state.itl[1] += 1
                    last = now
                self._chunk(chunk(text, i + 1, finish if i == n - 1 else None))
            if opts.get("include_usage"):
                self._chunk(json.dumps({"id": "x", "object": "text_completion", "choices": [], "usage": usage}))
            self._chunk("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--served-model-name", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--enable-metrics", action="store_true")
    ap.add_argument("--disable-radix-cache", action="store_true")
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--text-mode", choices=("text", "held", "empty"), default="held")
    ap.add_argument("--token-gap-s", type=float, default=0.01)
    args, unknown = ap.parse_known_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(State(args, unknown)))
    server.daemon_threads = True
    print(f"stand-in SGLang on {args.host}:{args.port} (warm-up {args.warmup_s} s)", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
