"""Incremental Server-Sent Events parsing over raw byte chunks.

Written by hand (not an SSE library) because the client must stamp each event at the moment
its bytes arrive, and because servers differ in framing: TGI writes ``data:{json}`` with no
space, vLLM ``data: {json}``; both end events with a blank line. Runtime module.

Speed matters here (every streamed event of every request passes through ``feed``): blocks
of whole ``\\n``-framed events take a fast path (one split, one slice per event); anything
else (``\\r\\n`` line ends, several ``data`` lines, comments, other fields) goes line by line.
"""

from __future__ import annotations


class SSEParser:
    """Feed byte chunks; get back the ``data`` payloads of the events they complete."""

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []  # data lines of an event begun on the slow path

    def feed(self, chunk: bytes) -> list[str]:
        """Return the payloads of every event completed by this chunk, in order."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\n" not in chunk:
            self._buf = buf
            return []
        if (not self._data and buf.startswith(b"data: ") and buf.find(b"\n") == len(buf) - 2
                and buf.endswith(b"\n\n") and b"\r" not in buf):
            self._buf = b""  # fast path: exactly one single-line event
            return [buf[6:-2].decode("utf-8", "replace")]
        if self._data or b"\r" in buf:
            out: list[str] = []
            self._buf = self._lines(buf, out)
            return out
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf  # no event complete yet (lines are re-read when it is)
            return []
        self._buf = buf[end + 2:]
        out = []
        for block in buf[:end].split(b"\n\n"):
            if block.startswith(b"data: ") and b"\n" not in block:
                out.append(block[6:].decode("utf-8", "replace"))
            elif block.startswith(b"data:") and b"\n" not in block:
                out.append(block[5:].decode("utf-8", "replace"))
            else:
                self._lines(block + b"\n\n", out)
        return out

    def _lines(self, buf: bytes, out: list[str]) -> bytes:
        """The general path: line by line, as the SSE specification reads a stream. Appends
        completed payloads to ``out``; returns the unfinished last line."""
        *lines, rest = buf.split(b"\n")
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
                self._data.append(value.decode("utf-8", "replace"))
            # "event", "id", "retry" carry nothing the benchmark uses
        return rest

    def flush(self) -> list[str]:
        """Payloads of an event left unterminated when the body ended."""
        out: list[str] = []
        if self._buf.strip():
            self._buf = self._lines(self._buf + b"\n", out)
        if self._data:
            out.append("\n".join(self._data))
            self._data = []
        return out


def parse_events(body: bytes) -> list[str]:
    """All event payloads of a complete SSE body (tests, fixtures)."""
    p = SSEParser()
    return p.feed(body) + p.flush()
