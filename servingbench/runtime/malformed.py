"""Answers a server should not give, read as one-line request errors, never as exceptions.

The response readers of every adapter use these. ``json_answer`` reads a non-streamed body and,
when it is not JSON, says what it is instead ("the server answered HTML, not JSON");
``event_json`` does the same for one stream event. The shape helpers (``obj``, ``opt_list``,
``opt_str``, ``opt_count``) check that a field has the type the adapter expects and raise
``Malformed`` naming the field (``choices[0] is null, not an object``). The decorators
``guard_parse`` and ``guard_feed`` turn whatever a reader raises into a failed request with
that reason, so a malformed answer is counted in its window, never lost with the whole cell.
Each reason starts with a short kind before its first colon ("the server answered HTML, not
JSON", "malformed answer"): the window's ``errors`` count requests by that kind.
Runtime module: standard library only.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Mapping

from servingbench.runtime.frameworks.base import Completion, StreamUpdate


class Malformed(ValueError):
    """A field of an answer is not what the adapter expects; the message names it."""


class NotJSON(ValueError):
    """A non-streamed answer that is not JSON; the message is the whole reason."""


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def snippet(body: bytes | str, n: int = 120) -> str:
    """The start of a body, on one line, quoted."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return repr(text[:n] + ("…" if len(text) > n else ""))


def content_type(headers: Mapping[str, str]) -> str:
    """The media type of an answer, lower case, without parameters ("" when none)."""
    for key, value in headers.items():
        if str(key).lower() == "content-type":
            return str(value).split(";", 1)[0].strip().lower()
    return ""


def _looks_html(ctype: str, text: str) -> bool:
    head = text.lstrip()[:64].lower()
    return "html" in ctype or head.startswith(("<!doctype", "<html", "<head", "<body", "<title"))


def json_answer(headers: Mapping[str, str], body: bytes) -> Any:
    """The JSON of a non-streamed answer; NotJSON saying what came instead."""
    ctype = content_type(headers) or "no content type"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NotJSON(f"the server answered non-UTF-8 bytes: {ctype}, {snippet(body)}") from None
    if not text.strip():
        raise NotJSON(f"the server answered an empty body: {ctype}")
    try:
        return json.loads(text)
    except ValueError as exc:
        pos = getattr(exc, "pos", 0)
        if _looks_html(ctype, text):
            what = "HTML, not JSON"
        elif ctype == "text/event-stream" or text.lstrip().startswith("data:"):
            what = "SSE, not JSON"
        elif text.lstrip()[:1] in ("{", "[") and (pos >= len(text.rstrip()) or
                                                   str(getattr(exc, "msg", "")).startswith("Unterminated")):
            what = "truncated JSON"
        elif text.lstrip()[:1] in ("{", "[", '"'):
            what = "invalid JSON"
        else:
            what = "plain text, not JSON"
        raise NotJSON(f"the server answered {what}: {ctype}, {snippet(text)}") from None


def not_a_stream(headers: Mapping[str, str], body: bytes) -> str:
    """The reason for a stream request answered with something that is not an event stream."""
    ctype = content_type(headers)
    text = body.decode("utf-8", "replace")
    what = ("HTML" if _looks_html(ctype, text) else "JSON" if "json" in ctype else
            "text" if ctype.startswith("text/") else "data")
    return f"the server answered {what}, not SSE: {ctype or 'no content type'}, {snippet(body)}"


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """False only when the answer says it is something else (no content type: assume a stream)."""
    ctype = content_type(headers)
    return not ctype or ctype == "text/event-stream"


def event_json(data: str) -> dict[str, Any]:
    """One stream event's payload as a JSON object."""
    try:
        event = json.loads(data)
    except ValueError:
        raise Malformed("not JSON") from None
    return obj(event, "the event")


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{where} is {kind_of(value)}, not an object")
    return value


def opt_obj(value: Any, where: str) -> dict[str, Any]:
    return {} if value is None else obj(value, where)


def opt_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"{where} is {kind_of(value)}, not a list")
    return value


def opt_str(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Malformed(f"{where} is {kind_of(value)}, not a string")
    return value


def opt_count(value: Any, where: str) -> int | None:
    """A token count: a whole number >= 0, or None when absent."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"{where} is {kind_of(value)} ({value!r:.40}), not a whole number")
    return value


def guard_parse(parse: Callable[[int, Mapping[str, str], bytes], Completion]
                ) -> Callable[[int, Mapping[str, str], bytes], Completion]:
    """For a reader of non-streamed answers ``(status, headers, body) -> Completion``: any
    exception it raises becomes the request's error ("HTTP 502: " first on an HTTP error)."""

    @functools.wraps(parse)
    def guarded(status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        try:
            return parse(status, headers, body)
        except NotJSON as exc:
            reason = str(exc)
        except Malformed as exc:
            reason = f"malformed answer: {exc}"
        except Exception as exc:  # noqa: BLE001 - a shape no check foresaw is still the server's
            reason = f"malformed answer: {type(exc).__name__}: {exc}"
        return Completion(error=f"HTTP {status}: {reason}" if status >= 400 else reason)

    return guarded


def guard_feed(feed: Callable[[Any, str], StreamUpdate]) -> Callable[[Any, str], StreamUpdate]:
    """For ``StreamReader.feed``: any exception it raises ends the stream with an error that
    the reader's ``result()`` reports (it must keep it in ``self._error``)."""

    @functools.wraps(feed)
    def guarded(self: Any, data: str) -> StreamUpdate:
        try:
            return feed(self, data)
        except Exception as exc:  # noqa: BLE001 - see guard_parse
            detail = str(exc) if isinstance(exc, Malformed) else f"{type(exc).__name__}: {exc}"
            reason = f"malformed stream event: {detail}: {snippet(data)}"
            if getattr(self, "_error", None) is None:
                self._error = reason
            if hasattr(self, "_done"):
                self._done = True
            return StreamUpdate(error=reason, done=True)

    return guarded
