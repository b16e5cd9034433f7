"""The OpenAI-compatible wire protocol, shared by the adapters that speak it.

vLLM, ``transformers serve`` and TGI >= 2 all serve ``/v1/completions`` and/or
``/v1/chat/completions``. Their differences (how to force the output length, whether the
stream ends with ``[DONE]``, which extra fields are rejected) stay in each adapter; the
parsing of responses and streams lives here once.
"""

from __future__ import annotations

from typing import Any, Mapping

from servingbench.runtime.frameworks.base import (
    TOKENS_FROM_SERVER,
    TOKENS_UNKNOWN,
    Adapter,
    Completion,
    StreamReader,
    StreamUpdate,
)
from servingbench.runtime.malformed import (Malformed, event_json, guard_feed, guard_parse, json_answer, obj, opt_count,
    opt_list, opt_obj, opt_str, snippet)
from servingbench.runtime.spec import GenerationParams, PromptItem

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


def _usage_counts(usage: Any, where: str = "usage") -> tuple[int | None, int | None]:
    usage = opt_obj(usage, where)
    return (opt_count(usage.get("completion_tokens"), f"{where}.completion_tokens"),
            opt_count(usage.get("prompt_tokens"), f"{where}.prompt_tokens"))


def _choice_text(choice: Any, where: str) -> str:
    choice = obj(choice, where)
    if "text" in choice:
        return opt_str(choice.get("text"), f"{where}.text") or ""
    key = "delta" if "delta" in choice else "message"
    msg = opt_obj(choice.get(key), f"{where}.{key}")
    return opt_str(msg.get("content"), f"{where}.{key}.content") or ""


def _finish_reason(choice: dict[str, Any], where: str) -> str | None:
    return opt_str(choice.get("finish_reason"), f"{where}.finish_reason")


@guard_parse
def parse_completion(status: int, headers: Mapping[str, str], body: bytes) -> Completion:
    """Parse a non-streamed completion or chat completion. An answer of any other shape is
    the request's error, naming what was wrong (malformed.py)."""
    data = json_answer(headers, body)
    if status >= 400 or isinstance(data, dict) and "error" in data and not data.get("choices"):
        err = data.get("error") if isinstance(data, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err
        detail = data.get("detail") if isinstance(data, dict) else None
        return Completion(error=f"HTTP {status}: {msg or detail or snippet(body)}")
    data = obj(data, "the answer")
    choices = opt_list(data.get("choices"), "choices")
    if not choices:
        raise Malformed("no choices")
    text = "".join(_choice_text(c, f"choices[{i}]") for i, c in enumerate(choices))
    finish = _finish_reason(choices[0], "choices[0]")
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
    A chunk of any other shape ends the stream with an error naming what was wrong.
    """

    def __init__(self, usage_per_event: bool = False) -> None:
        self._usage_per_event = usage_per_event
        self._running = 0  # completion_tokens of the last chunk that had choices and usage
        self._parts: list[str] = []
        self._out: int | None = None
        self._prompt: int | None = None
        self._finish: str | None = None
        self._error: str | None = None

    @guard_feed
    def feed(self, data: str) -> StreamUpdate:
        if data.strip() == "[DONE]":
            return StreamUpdate(done=True)
        chunk = event_json(data)
        if "error" in chunk and not chunk.get("choices"):
            err = chunk["error"]
            self._error = str(err.get("message") if isinstance(err, dict) else err)
            return StreamUpdate(error=self._error, done=True)
        out, prompt = _usage_counts(chunk.get("usage"))
        if out is not None:
            self._out, self._prompt = out, prompt
        text = ""
        choices = opt_list(chunk.get("choices"), "choices")
        for i, choice in enumerate(choices):
            text += _choice_text(choice, f"choices[{i}]")
            finish = _finish_reason(choice, f"choices[{i}]")
            if finish:
                self._finish = finish
        if text:
            self._parts.append(text)
        tokens = None
        if self._usage_per_event and choices and out is not None:
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


class UsagePerEventAdapter(Adapter):
    """Base of adapters whose OpenAI-compatible server streams usage on every chunk when asked
    (vLLM, SGLang): answers and streams are read here, with per-event token counts, and the
    server's Prometheus metrics are on ``/metrics``."""

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        return parse_completion(status, headers, body)

    def stream_reader(self) -> StreamReader:
        return OpenAIStreamReader(usage_per_event=True)

    def server_metrics_path(self) -> str | None:
        return "/metrics"
