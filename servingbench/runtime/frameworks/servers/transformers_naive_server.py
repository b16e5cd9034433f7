"""The naive Transformers server: what a careful engineer writes around ``model.generate``.

One model, one request at a time (a single worker thread runs every ``generate``; further
requests wait in their handler threads), a sync endpoint and an SSE stream endpoint that sends
each token's text as it is generated (``TokenStreamer``). No batching, no paged attention: this
is the baseline the seed users ran. It runs only where torch and transformers are installed (the
Transformers image, or the CPU environment).

    python -m servingbench.runtime.frameworks.transformers_naive_server --model DIR --port 8000

Measured through the kit on an H200 (gpt2, dummy weights), its TPOT was 1.03x a bare
``generate`` loop's and each decode step's wall time equalled the generate thread's CPU time:
no waits for the GIL, the streamer's reader or the socket (docs/transformers-fidelity.md).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "auto": "auto"}
# The seed image's Transformers (4.36) names it torch_dtype; 4.56+ renamed it dtype.
_DTYPE_KW = "dtype" if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56) else "torch_dtype"


class TokenStreamer(TextIteratorStreamer):
    """``TextIteratorStreamer`` that hands over each token's text as soon as it decodes whole.

    The stock streamer holds text back to the last space so that no word is split; on text with
    few spaces (random weights and their generated tokenizers) one event then carried 3-5 tokens,
    which moved decode steps into TTFT and out of TPOT and ITL. Here only an incomplete UTF-8
    sequence (decoded as U+FFFD) waits for the next token, as vLLM's detokenizer does. Each piece
    of text is handed over with the number of tokens it brings (usually 1; more after a wait), so
    the stream can say how many tokens each event carries.
    """

    _unsent = 0  # tokens generated since the last piece handed over

    def put(self, value: torch.Tensor) -> None:
        if len(value.shape) > 1 and value.shape[0] > 1:
            raise ValueError("TokenStreamer only supports batch size 1")
        if len(value.shape) > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        ids = value.tolist()
        self.token_cache.extend(ids)
        self._unsent += len(ids)
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\ufffd") or len(text) <= self.print_len:
            return
        self.on_finalized_text(text[self.print_len:])
        self.print_len = len(text)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Queue (text, tokens it brings); ``end()`` calls this with the rest and stream_end."""
        self.text_queue.put((text, self._unsent), timeout=self.timeout)
        self._unsent = 0
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)


class Generator:
    """Holds the model; one long-lived worker thread runs every request, in arrival order.

    Why one thread and not the handler's: on an H100 (torch 2.11, transformers 5.17) the first
    ``generate`` in each new thread cost ~4 s more (gpt2, 50 tokens: 85-97 ms/token, then 12 ms
    in the same thread; scripts/device/diag_naive_threads.py). ThreadingHTTPServer gives every
    request a new thread, so every request paid it.
    """

    def __init__(self, model_dir: str, device: str, dtype: str, weights: str) -> None:
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.worker.submit(self._load, model_dir, device, dtype, weights).result()

    def _load(self, model_dir: str, device: str, dtype: str, weights: str) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        torch_dtype = DTYPES[dtype]
        if weights == "dummy" and not _has_weights(model_dir):
            # The real architecture with random weights: decode cost does not depend on values.
            config = AutoConfig.from_pretrained(model_dir)
            with torch.device(device):
                self.model = AutoModelForCausalLM.from_config(config, **{_DTYPE_KW: torch_dtype})
        else:
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, **{_DTYPE_KW: torch_dtype}).to(device)
        self.model.eval()
        self.device = device

    def _kwargs(self, req: dict[str, Any]) -> dict[str, Any]:
        inputs = self.tokenizer(req["prompt"], return_tensors="pt").to(self.device)
        inputs.pop("token_type_ids", None)  # some tokenizers return it; generate() rejects it
        kw: dict[str, Any] = dict(**inputs, max_new_tokens=int(req.get("max_new_tokens", 64)),
                                  do_sample=bool(req.get("do_sample", True)),
                                  temperature=float(req.get("temperature", 1.0)),
                                  top_p=float(req.get("top_p", 1.0)),
                                  pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        if req.get("min_new_tokens"):
            kw["min_new_tokens"] = int(req["min_new_tokens"])
        return kw

    def _finish(self, kw: dict[str, Any], output: torch.Tensor) -> dict[str, Any]:
        prompt_len = kw["input_ids"].shape[1]
        new = output[0, prompt_len:]
        eos = self.tokenizer.eos_token_id
        hit_eos = eos is not None and len(new) > 0 and int(new[-1]) == eos
        return {"prompt_tokens": int(prompt_len), "generated_tokens": int(len(new)),
                "finish_reason": "stop" if hit_eos else "length"}

    def _run(self, req: dict[str, Any], streamer: TokenStreamer | None) -> dict[str, Any]:
        """On the worker thread: tokenize, generate, count."""
        try:
            with torch.inference_mode():
                kw = self._kwargs(req)
                output = self.model.generate(**kw, **({"streamer": streamer} if streamer else {}))
        except Exception:
            if streamer is not None:
                streamer.end()  # a stream whose generate failed must not leave its reader waiting
            raise
        result = self._finish(kw, output)
        if streamer is None:
            result["text"] = self.tokenizer.decode(output[0, kw["input_ids"].shape[1]:], skip_special_tokens=True)
        return result

    def generate(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.worker.submit(self._run, req, None).result()

    def stream(self, req: dict[str, Any], emit) -> dict[str, Any]:
        streamer = TokenStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        done = self.worker.submit(self._run, req, streamer)
        for text, tokens in streamer:
            if text or tokens:  # a token whose text never decoded still counts
                emit({"text": text, "tokens": tokens})
        return done.result()  # re-raises generate's error: sent as a stream error event


def _has_weights(model_dir: str) -> bool:
    from pathlib import Path

    return any(Path(model_dir).glob("*.safetensors")) or any(Path(model_dir).glob("*.bin"))


def make_handler(gen: Generator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # One small write per token: without TCP_NODELAY, Nagle may hold a token back until the
        # client acknowledges the previous one (up to its delayed-ACK time, 40 ms on Linux).
        disable_nagle_algorithm = True

        def log_message(self, fmt: str, *args: Any) -> None:  # one line per request on stderr
            super().log_message(fmt, *args)

        def _json(self, status: int, data: dict[str, Any]) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200, {"status": "ok"})
            else:
                self._json(404, {"error": f"no route {self.path}"})

        def _body(self) -> dict[str, Any] | None:
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except ValueError:
                self._json(400, {"error": "body is not JSON"})
                return None
            if not isinstance(req, dict) or not isinstance(req.get("prompt"), str):
                self._json(422, {"error": "field 'prompt' (string) is required"})
                return None
            return req

        def do_POST(self) -> None:
            if self.path not in ("/generate", "/generate_stream"):
                self._json(404, {"error": f"no route {self.path}"})
                return
            req = self._body()
            if req is None:
                return
            if self.path == "/generate":
                try:
                    self._json(200, gen.generate(req))
                except Exception as exc:
                    self._json(500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def emit(event: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()

            try:
                emit(gen.stream(req, emit))
            except Exception as exc:
                emit({"error": f"{type(exc).__name__}: {exc}"})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def make_server(gen: Generator, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(gen))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    ap.add_argument("--weights", default="real", choices=["real", "dummy"])
    args = ap.parse_args(argv)
    gen = Generator(args.model, args.device, args.dtype, args.weights)
    server = make_server(gen, args.host, args.port)
    print(f"transformers-naive serving {args.model} on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
