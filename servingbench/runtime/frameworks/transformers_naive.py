"""``transformers-naive``: the seed users' own set-up, a small HTTP server of ours around
``model.generate`` (see ``transformers_naive_server``), one request at a time.

Its protocol is ours: ``POST /generate`` answers JSON; ``POST /generate_stream`` answers SSE
with one ``data: {"text": ..., "tokens": N}`` event per streamer chunk (N: the tokens it brings),
a final event with the token counts, then ``data: [DONE]``. Length is forced with
``min_new_tokens``.
"""

from __future__ import annotations

import sys
import json
from typing import Mapping

from servingbench.runtime.frameworks.base import (
    TOKENS_FROM_SERVER,
    TOKENS_UNKNOWN,
    Adapter,
    Completion,
    HttpRequest,
    Launch,
    StreamReader,
    StreamUpdate,
)
from servingbench.runtime.malformed import (Malformed, event_json, guard_feed, guard_parse, json_answer, obj, opt_count,
    opt_str)
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec


def _completion(data: dict, error: str | None = None) -> Completion:
    """A Completion from the server's answer (or its stream's last event), its fields checked."""
    tokens = opt_count(data.get("generated_tokens"), "generated_tokens")
    return Completion(text=opt_str(data.get("text"), "text") or "", output_tokens=tokens,
                      output_tokens_source=TOKENS_FROM_SERVER if tokens is not None else TOKENS_UNKNOWN,
                      prompt_tokens=opt_count(data.get("prompt_tokens"), "prompt_tokens"),
                      finish_reason=opt_str(data.get("finish_reason"), "finish_reason"),
                      error=error or (str(data["error"]) if data.get("error") else None))


@guard_parse
def parse_answer(status: int, headers: Mapping[str, str], body: bytes) -> Completion:
    """Read ``/generate``'s JSON answer; any other shape is the request's error."""
    if status >= 400:
        try:
            data = json.loads(body)
        except ValueError:
            return Completion(error=f"HTTP {status}: body is not JSON: {body[:200]!r}")
        return Completion(error=f"HTTP {status}: {data.get('error', data) if isinstance(data, dict) else data}")
    data = obj(json_answer(headers, body), "the answer")
    if "text" not in data and not data.get("error"):
        raise Malformed("no text")
    return _completion(data)


class NaiveStreamReader(StreamReader):
    def __init__(self) -> None:
        self._parts: list[str] = []
        self._final: Completion | None = None
        self._error: str | None = None

    @guard_feed
    def feed(self, data: str) -> StreamUpdate:
        if data.strip() == "[DONE]":
            return StreamUpdate(done=True)
        event = event_json(data)
        if event.get("error"):
            self._error = str(event["error"])
            return StreamUpdate(error=self._error, done=True)
        if "generated_tokens" in event:
            self._final = _completion(event)
            return StreamUpdate()
        text = opt_str(event.get("text"), "text") or ""
        if text:
            self._parts.append(text)
        tokens = event.get("tokens")  # absent from servers of older kits: unknown
        return StreamUpdate(text=text, tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None)

    def result(self) -> Completion:
        done = self._final or Completion()
        done.text, done.error = "".join(self._parts), self._error or done.error
        return done


class TransformersNaiveAdapter(Adapter):
    name = "transformers-naive"
    framework = "transformers"
    distributions = ("transformers",)
    can_force_output_length = True
    health_path = "/health"

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        argv = [sys.executable, "-m", "servingbench.runtime.frameworks.servers.transformers_naive_server",
                "--model", server.model_dir, "--host", host, "--port", str(port),
                "--device", server.device, "--dtype", server.dtype, "--weights", server.weights,
                *server.server_args]
        return Launch(argv=argv, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                      "HF_HUB_DISABLE_UPDATE_CHECK": "1"})

    def build_request(self, server: ServerSpec, item: PromptItem, gen: GenerationParams,
                      output_tokens: int, force_length: bool, stream: bool) -> HttpRequest:
        body = {"prompt": item.prompt, "max_new_tokens": output_tokens,
                "temperature": gen.temperature, "top_p": gen.top_p, "do_sample": True}
        if force_length:
            body["min_new_tokens"] = output_tokens
        return HttpRequest("POST", "/generate_stream" if stream else "/generate", body)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        return parse_answer(status, headers, body)

    def stream_reader(self) -> StreamReader:
        return NaiveStreamReader()


ADAPTER = TransformersNaiveAdapter()
