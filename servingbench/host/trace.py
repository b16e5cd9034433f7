"""Timestamped request traces: servingbench's trace format and the Mooncake format (host side).
The prompts built from them: :mod:`servingbench.host.trace_workloads`.

servingbench's format is JSONL, one request a line::

    {"offset_ms": 1250.0, "input_tokens": 420, "output_tokens": 64,
     "session_id": "s3", "prefix_hash": "sys-a", "prefix_tokens": 200}

* ``offset_ms`` (number >= 0): arrival time after the trace's start; lines may come in any order.
* ``input_tokens``, ``output_tokens`` (integers >= 1): prompt and output length in the model's tokens.
* ``session_id`` (optional): a label kept in each request's record (``session``).
* a shared prefix, optional, either ``prefix_hash`` (any string or integer) with ``prefix_tokens``
  (how many of the input tokens it covers): requests with the same hash start with the same text;
  or Mooncake's ``hash_ids`` (a list) with ``block_tokens``: the prompt is one block of text per
  id, and requests that share leading ids share those blocks.

Mooncake's format (FAST'25 traces, github.com/kvcache-ai/Mooncake): ``{"timestamp": ms since the
first request, "input_length", "output_length", "hash_ids": [...]}`` with 512-token blocks.
``convert_mooncake`` maps it to the format above; a trace task reads either (``format``).

Prompts: each prefix (hash or block id) becomes a documentation excerpt of its length, the same
text wherever the id recurs; the rest of the prompt is text of its own. Prompts are plain text
sent as they are (no chat template), so the server sees the trace's input length; the actual
count (``prompt_tokens``, BOS included) stays within max(4, 2 %) plus one token per block of it.
``prefix_seen`` says whether an earlier request of the trace began with the same first block.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servingbench.runtime.results import atomic_write_text

MOONCAKE_BLOCK_TOKENS = 512
SYNTHETIC_PREFIX_TOKENS = 256
MAX_SAMPLE_BLOCKS = 2  # the generated sample's requests fit a 1024-token context (gpt2)
FORMATS = ("servingbench", "mooncake")


class TraceError(ValueError):
    """A trace line that cannot be replayed; the message names the file, line and key."""


@dataclass(frozen=True)
class TraceRecord:
    line: int
    offset_ms: float
    input_tokens: int
    output_tokens: int
    session_id: str | None = None
    segments: tuple[tuple[str, int], ...] = ()  # (prefix key, tokens) shared with records of the same key

    @property
    def prefix_key(self) -> str | None:
        return self.segments[0][0] if self.segments else None


def _int(data: dict[str, Any], key: str, where: str, minimum: int = 1) -> int:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise TraceError(f"{where}: {key}: must be an integer >= {minimum} (got {v!r})")
    return v


def _segments(data: dict[str, Any], n: int, where: str) -> tuple[tuple[str, int], ...]:
    if "prefix_hash" in data and "hash_ids" in data:
        raise TraceError(f"{where}: give prefix_hash or hash_ids, not both")
    if "prefix_hash" in data:
        h = data["prefix_hash"]
        if not isinstance(h, (str, int)) or isinstance(h, bool):
            raise TraceError(f"{where}: prefix_hash: must be a string or integer (got {h!r})")
        p = _int(data, "prefix_tokens", where)
        if p > n:
            raise TraceError(f"{where}: prefix_tokens: {p} is more than input_tokens {n}")
        return ((f"h:{h}", p),)
    if "hash_ids" in data:
        ids, size = data["hash_ids"], _int(data, "block_tokens", where)
        if not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, (str, int)) for i in ids):
            raise TraceError(f"{where}: hash_ids: must be a list of integers or strings")
        if len(ids) > math.ceil(n / size):
            raise TraceError(f"{where}: hash_ids: {len(ids)} blocks of {size} tokens are more than input_tokens {n}")
        # Each block is identified by its id and those before it: equal ids after different
        # prefixes are different text in the KV cache, as in the trace's own hashing.
        out, chain = [], ""
        for k, i in enumerate(ids):
            chain = hashlib.sha256(f"{chain}/{i}".encode()).hexdigest()[:16]
            out.append((f"b:{chain}", min(size, n - k * size)))
        return tuple(out)
    return ()


def parse_record(data: Any, where: str) -> TraceRecord:
    """One line of servingbench's trace format, checked."""
    if not isinstance(data, dict):
        raise TraceError(f"{where}: not a JSON object")
    offset = data.get("offset_ms")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not offset >= 0 or math.isinf(offset):
        raise TraceError(f"{where}: offset_ms: must be a number >= 0 (got {offset!r})")
    n = _int(data, "input_tokens", where)
    out = _int(data, "output_tokens", where)
    session = data.get("session_id")
    if session is not None and (isinstance(session, bool) or not isinstance(session, (str, int))):
        raise TraceError(f"{where}: session_id: must be a string or integer (got {session!r})")
    known = {"offset_ms", "input_tokens", "output_tokens", "session_id", "prefix_hash", "prefix_tokens",
             "hash_ids", "block_tokens"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TraceError(f"{where}: {unknown[0]}: unknown key (allowed: {', '.join(sorted(known))})")
    return TraceRecord(int(where.rsplit(":", 1)[1]), float(offset), n, out,
                       None if session is None else str(session), _segments(data, n, where))


def mooncake_to_servingbench(data: Any, where: str, t0: float) -> dict[str, Any]:
    """One Mooncake line in servingbench's format (offsets from ``t0``, the first timestamp)."""
    if not isinstance(data, dict):
        raise TraceError(f"{where}: not a JSON object")
    ts = data.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts < t0:
        raise TraceError(f"{where}: timestamp: must be a number of ms >= the first line's (got {ts!r})")
    out = {"offset_ms": float(ts - t0), "input_tokens": _int(data, "input_length", where),
           "output_tokens": _int(data, "output_length", where)}
    if data.get("hash_ids"):
        out.update(hash_ids=data["hash_ids"], block_tokens=MOONCAKE_BLOCK_TOKENS)
    for key in ("session_id", "chat_id"):  # some derived traces label conversations
        if data.get(key) is not None:
            out["session_id"] = data[key]
            break
    return out


def _lines(path: Path) -> list[tuple[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rows.append((where, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise TraceError(f"{where}: not valid JSON ({exc.msg})") from None
    if not rows:
        raise TraceError(f"{path}: the trace is empty")
    return rows


def read_trace(path: str | Path, max_requests: int | None = None, fmt: str = "servingbench") -> list[TraceRecord]:
    """The records of a trace file (the first ``max_requests`` lines), checked line by line."""
    if fmt not in FORMATS:
        raise TraceError(f"format: {fmt!r} is not one of {FORMATS}")
    rows = _lines(Path(path))[:max_requests]
    if fmt == "mooncake":
        t0 = min(float(d["timestamp"]) for _, d in rows if isinstance(d, dict)
                 and isinstance(d.get("timestamp"), (int, float))) if rows else 0.0
        rows = [(where, mooncake_to_servingbench(d, where, t0)) for where, d in rows]
    return [parse_record(d, where) for where, d in rows]


def convert_mooncake(src: str | Path, dst: str | Path, max_requests: int | None = None) -> int:
    """Write a Mooncake trace in servingbench's format; return the number of records."""
    rows = _lines(Path(src))[:max_requests]
    t0 = min((float(d["timestamp"]) for _, d in rows
              if isinstance(d, dict) and isinstance(d.get("timestamp"), (int, float))), default=0.0)
    out = [mooncake_to_servingbench(d, where, t0) for where, d in rows]
    for (where, _), rec in zip(rows, out):
        parse_record(rec, where)  # what the replay will demand
    _write(dst, out)
    return len(out)


def _write(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, separators=(", ", ": ")) + "\n" for r in rows))


# --------------------------------------------------------------------------- shipped traces


def synthetic_trace(n: int = 24, seed: int = 7) -> list[dict[str, Any]]:
    """The shipped small trace (data/traces/synthetic.jsonl): bursts of arrivals (on/off periods),
    three shared 256-token system prefixes (two of vLLM's 128-token CPU cache blocks),
    conversations of 2-3 requests; lengths that a CPU can serve."""
    rng = random.Random(seed)
    rows, t, session = [], 0.0, 0
    while len(rows) < n:
        burst = rng.randint(2, 5)
        for _ in range(burst):
            session += 1
            prefix = rng.choice(["sys-a", "sys-b", "sys-c", None])
            for turn in range(rng.choice([1, 1, 2, 3])):
                if len(rows) >= n:
                    break
                n_in = rng.randint(300, 560)
                row: dict[str, Any] = {"offset_ms": round(t + turn * rng.uniform(800, 1500), 1),
                                       "input_tokens": n_in, "output_tokens": rng.randint(8, 32),
                                       "session_id": f"s{session}"}
                if prefix:
                    row.update(prefix_hash=prefix, prefix_tokens=SYNTHETIC_PREFIX_TOKENS)
                rows.append(row)
            t += rng.expovariate(1 / 80.0)  # within a burst: ~80 ms apart
        t += rng.uniform(1500, 3000)  # between bursts
    return sorted(rows, key=lambda r: r["offset_ms"])


def mooncake_sample(n: int = 40, seed: int = 11) -> list[dict[str, Any]]:
    """A generated trace in Mooncake's format (data/traces/mooncake-sample.jsonl), NOT Kimi's data:
    its shape follows the published conversation trace (a shared first block, conversations that
    resend their history and grow, arrivals in bursts), its lengths fit a 1024-token context."""
    rng = random.Random(seed)
    rows, t, next_id = [], 0, 1
    live: list[list[int]] = []  # open conversations: their block ids so far
    while len(rows) < n:
        if live and rng.random() < 0.5:  # a conversation goes on: its history, and 1-2 new blocks
            ids = live.pop(rng.randrange(len(live)))
            ids = ids + [next_id + k for k in range(min(rng.randint(1, 2), MAX_SAMPLE_BLOCKS - len(ids)))]
        else:  # a new one: the shared first block (a system prompt), maybe one more
            ids = [0] + [next_id + k for k in range(rng.randint(0, 1))]
        next_id = max(next_id, max(ids) + 1)
        if len(ids) < MAX_SAMPLE_BLOCKS:
            live.append(ids)
        n_in = (len(ids) - 1) * MOONCAKE_BLOCK_TOKENS + rng.randint(40, 380)
        rows.append({"timestamp": t, "input_length": n_in, "output_length": rng.randint(16, 128), "hash_ids": ids})
        t += int(rng.expovariate(1 / 400.0)) if rng.random() < 0.7 else rng.randint(1500, 4000)
    return rows
