"""Incremental Server-Sent Events parsing over raw byte chunks.

Written by hand (not an SSE library) because the client must stamp each event at the moment
its bytes arrive, and because servers differ in framing: TGI writes ``data:{json}`` with no
space, vLLM ``data: {json}``; both end events with a blank line. Runtime module.
"""

from __future__ import annotations


class SSEParser:
    """Feed byte chunks; get back the ``data`` payloads of the events they complete."""

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """Return the payloads of every event completed by this chunk, in order."""
        self._buf += chunk
        if b"\n" not in chunk:
            return []
        *lines, self._buf = self._buf.split(b"\n")
        out: list[str] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(b":"):
                continue  # comment / keep-alive
            field, _, value = line.partition(b":")
            if field == b"data":
                if value.startswith(b" "):
                    value = value[1:]
                self._data.append(value.decode("utf-8", errors="replace"))
            # "event", "id", "retry" carry nothing the benchmark uses
        return out

    def flush(self) -> list[str]:
        """Payloads of an event left unterminated when the body ended."""
        out = []
        if self._buf.strip():
            out.extend(self.feed(b"\n"))
        if self._data:
            out.append("\n".join(self._data))
            self._data = []
        return out


def parse_events(body: bytes) -> list[str]:
    """All event payloads of a complete SSE body (tests, fixtures)."""
    p = SSEParser()
    return p.feed(body) + p.flush()
