"""The OpenAI-compatible wire protocol, shared by the adapters that speak it.

vLLM, ``transformers serve`` and TGI >= 2 all serve ``/v1/completions`` and/or
``/v1/chat/completions``. Their differences (how to force the output length, whether the
stream ends with ``[DONE]``, which extra fields are rejected) stay in each adapter; the
parsing of responses and streams lives here once.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from servingbench.frameworks.base import (
    TOKENS_FROM_SERVER,
    TOKENS_UNKNOWN,
    Completion,
    StreamReader,
    StreamUpdate,
)
from servingbench.spec import GenerationParams, PromptItem

COMPLETIONS = "/v1/completions"
CHAT_COMPLETIONS = "/v1/chat/completions"


def sampling_fields(gen: GenerationParams, output_tokens: int) -> dict[str, Any]:
    return {"temperature": gen.temperature, "top_p": gen.top_p, "max_tokens": output_tokens}


def completion_body(model: str, item: PromptItem, gen: GenerationParams, output_tokens: int, stream: bool) -> dict[str, Any]:
    """A ``/v1/completions`` body for the already-templated prompt text."""
    body: dict[str, Any] = {"model": model, "prompt": item.prompt, **sampling_fields(gen, output_tokens)}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def chat_body(model: str, item: PromptItem, gen: GenerationParams, output_tokens: int, stream: bool) -> dict[str, Any]:
    """A ``/v1/chat/completions`` body; the server applies the chat template to ``messages``."""
    if not item.messages:
        raise ValueError(f"prompt {item.id}: chat request needs messages (the model has no chat template?)")
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in item.messages],
                            **sampling_fields(gen, output_tokens)}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def ask_usage_per_event(body: dict[str, Any]) -> dict[str, Any]:
    """Ask a stream for usage on every chunk (``stream_options.continuous_usage_stats``, vLLM
    and SGLang): its running ``completion_tokens`` says how many tokens each event carries."""
    if body.get("stream"):
        body["stream_options"] = {**body.get("stream_options", {}), "continuous_usage_stats": True}
    return body


def _usage_counts(usage: Any) -> tuple[int | None, int | None]:
    if not isinstance(usage, dict):
        return None, None
    return usage.get("completion_tokens"), usage.get("prompt_tokens")


def _choice_text(choice: dict[str, Any]) -> str:
    if "text" in choice:
        return choice.get("text") or ""
    msg = choice.get("delta") or choice.get("message") or {}
    return (msg.get("content") or "") if isinstance(msg, dict) else ""


def parse_completion(status: int, headers: Mapping[str, str], body: bytes) -> Completion:
    """Parse a non-streamed completion or chat completion."""
    try:
        data = json.loads(body)
    except ValueError:
        return Completion(error=f"HTTP {status}: body is not JSON: {body[:200]!r}")
    if status >= 400 or "error" in data and not data.get("choices"):
        err = data.get("error") if isinstance(data, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err
        return Completion(error=f"HTTP {status}: {msg or data.get('detail') or body[:200]!r}")
    choices = data.get("choices") or []
    text = "".join(_choice_text(c) for c in choices)
    finish = choices[0].get("finish_reason") if choices else None
    out, prompt = _usage_counts(data.get("usage"))
    return Completion(text=text, output_tokens=out,
                      output_tokens_source=TOKENS_FROM_SERVER if out is not None else TOKENS_UNKNOWN,
                      prompt_tokens=prompt, finish_reason=finish)


class OpenAIStreamReader(StreamReader):
    """Reads ``data:`` payloads of an OpenAI-style SSE stream.

    A chunk counts as content only if it carries generated output: the role-only first chat
    chunk and the final usage-only chunk (empty ``choices``) do not. With ``usage_per_event``
    (the request asked for usage on every chunk, see ``ask_usage_per_event``) each chunk's
    running ``completion_tokens`` minus the previous one is the number of tokens it carries,
    so an event whose text the server held back still counts its token; a chunk without usage
    then carries an unknown number. The final usage-only chunk is never an event's count.
    """

    def __init__(self, usage_per_event: bool = False) -> None:
        self._usage_per_event = usage_per_event
        self._running = 0  # completion_tokens of the last chunk that had choices and usage
        self._parts: list[str] = []
        self._out: int | None = None
        self._prompt: int | None = None
        self._finish: str | None = None
        self._error: str | None = None

    def feed(self, data: str) -> StreamUpdate:
        if data.strip() == "[DONE]":
            return StreamUpdate(done=True)
        try:
            chunk = json.loads(data)
        except ValueError:
            self._error = f"malformed stream event: {data[:200]!r}"
            return StreamUpdate(error=self._error, done=True)
        if not isinstance(chunk, dict):
            self._error = f"malformed stream event: {data[:200]!r}"
            return StreamUpdate(error=self._error, done=True)
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            self._error = str(err.get("message") if isinstance(err, dict) else err)
            return StreamUpdate(error=self._error, done=True)
        out, prompt = _usage_counts(chunk.get("usage"))
        if out is not None:
            self._out, self._prompt = out, prompt
        text = ""
        choices = chunk.get("choices") or []
        for choice in choices:
            text += _choice_text(choice)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        if text:
            self._parts.append(text)
        tokens = None
        if self._usage_per_event and choices and isinstance(out, int) and not isinstance(out, bool):
            tokens, self._running = max(0, out - self._running), max(out, self._running)
        return StreamUpdate(text=text, tokens=tokens)

    def result(self) -> Completion:
        return Completion(
            text="".join(self._parts),
            output_tokens=self._out,
            output_tokens_source=TOKENS_FROM_SERVER if self._out is not None else TOKENS_UNKNOWN,
            prompt_tokens=self._prompt,
            finish_reason=self._finish,
            error=self._error,
        )
