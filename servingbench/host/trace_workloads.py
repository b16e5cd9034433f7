"""A trace task's workload: one prompt per trace record, built to the record's input length.

Prefix segments that recur across records (the trace's ``prefix_key``s, Mooncake's hash ids) get
the same text wherever they recur, so a server with prefix caching can reuse them as it would the
original requests'. Reading and converting traces is :mod:`servingbench.host.trace`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from servingbench.host.trace import TraceRecord, read_trace
from servingbench.host.workloads import WorkloadError, _corpus_words, _largest_fit, _Renderer, _write_jsonl


class _Texts:
    """Text of a given token length per prefix key (the same wherever the key recurs; a shorter
    length of the same key, e.g. a trace's partial last block, is a prefix of the longer text)."""

    def __init__(self, tok: Any, seed: int) -> None:
        self.tok, self.seed = tok, seed
        self.words = [w for w in _corpus_words() if w != "\n\n"]
        self.cache: dict[tuple[str, int], str] = {}

    def count(self, text: str, special: bool = False) -> int:
        return len(self.tok(text, add_special_tokens=special, verbose=False)["input_ids"])

    def stream(self, key: str) -> list[str]:
        """The corpus's words from a position of its own for ``key`` (seeded, stable)."""
        h = int.from_bytes(hashlib.sha256(f"{self.seed}/{key}".encode()).digest()[:8], "big")
        start = h % len(self.words)
        return self.words[start:] + self.words[:start]

    def fit(self, words: list[str], count: Any, tokens: int) -> str:
        """As many of ``words`` as keep count(text) nearest ``tokens``."""
        k = _largest_fit(lambda k: count(" ".join(words[:k])), 1, min(len(words), 4 * tokens), tokens)
        return min((" ".join(words[:j]) for j in (k, k + 1)), key=lambda t: abs(count(t) - tokens))

    def text(self, key: str, tokens: int) -> str:
        # Keyed by length too: a block id that recurs as a partial block (Mooncake's last block)
        # wants fewer tokens of the same word stream, so its text is a prefix of the full one's.
        if (key, tokens) not in self.cache:
            self.cache[key, tokens] = self.fit(self.stream(key), self.count, tokens)
        return self.cache[key, tokens]


def trace_prompt(texts: _Texts, rec: TraceRecord, own_key: str) -> str:
    """The prompt of one record: its prefix segments' texts, then text of its own sized so that the
    whole prompt (as the server counts it, BOS included) has the record's input length."""
    head = " ".join(texts.text(key, n) for key, n in rec.segments)
    if sum(n for _, n in rec.segments) >= rec.input_tokens:
        return head
    head = head + " " if head else ""
    own = texts.fit(texts.stream(own_key), lambda t: texts.count(head + t, special=True), rec.input_tokens)
    return head + own


def build_trace_workload(cfg: Any, model: str, task: str, model_dir: str | Path,
                         out_path: str | Path) -> list[dict[str, Any]]:
    """Write a trace task's workload: warm-up records (text of their own), then one record per
    trace line with ``offset_ms`` scaled by the task's ``time_scale``."""
    t = cfg.tasks[task]
    r = _Renderer(model_dir, False)
    recs = read_trace(t.trace_path, t.max_requests, t.format)
    texts = _Texts(r.tok, cfg.run.seed)
    (ilo, ihi), (olo, ohi) = t.input_tokens, t.output_tokens
    ctx = min(cfg.models[model].context_length, cfg.run.max_model_len)
    max_out = cfg.generation[model][task].max_tokens
    records: list[dict[str, Any]] = []

    def add(rec: TraceRecord, own_key: str, extra: dict[str, Any]) -> None:
        prompt = trace_prompt(texts, rec, own_key)
        got = len(r.tok(prompt, verbose=False)["input_ids"])
        tol = max(4, math.floor(0.02 * rec.input_tokens)) + len(rec.segments)
        if abs(got - rec.input_tokens) > tol:
            raise WorkloadError(f"{t.trace}:{rec.line}: cannot build a {rec.input_tokens}-token prompt "
                                f"(got {got}, tolerance {tol})")
        records.append({"id": f"{task}-{len(records):04d}", "task": task, "prompt": prompt, "messages": None,
                        "prompt_tokens": got, "target_output_tokens": rec.output_tokens,
                        "sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
                        "input_tokens_trace": rec.input_tokens, **extra})

    for rec in recs:
        where = f"{t.trace}:{rec.line}"
        if not ilo <= rec.input_tokens <= ihi:
            raise WorkloadError(f"{where}: input_tokens {rec.input_tokens} is outside tasks.{task}.input_tokens {[ilo, ihi]}")
        if not olo <= rec.output_tokens <= ohi or rec.output_tokens > max_out:
            raise WorkloadError(f"{where}: output_tokens {rec.output_tokens} is outside tasks.{task}.output_tokens "
                                f"{[olo, ohi]} or above generation.{model}.{task}.max_tokens {max_out}")
        if rec.input_tokens + rec.output_tokens > ctx:
            raise WorkloadError(f"{where}: {rec.input_tokens} + {rec.output_tokens} tokens do not fit {model}'s "
                                f"context of {ctx}")
    first = sorted(recs, key=lambda x: x.offset_ms)[:max(1, cfg.run.warmup_requests)]
    for j in range(cfg.run.warmup_requests):
        like = first[j % len(first)]
        add(TraceRecord(like.line, 0.0, like.input_tokens, like.output_tokens), f"warmup/{j}", {"warmup": True})
    seen: set[str] = set()
    for i, rec in enumerate(recs):
        extra: dict[str, Any] = {"offset_ms": round(rec.offset_ms * t.time_scale, 3)}
        if rec.session_id is not None:
            extra["session"] = rec.session_id
        if rec.prefix_key is not None:
            extra.update(prefix_group=rec.prefix_key, prefix_seen=rec.prefix_key in seen)
            seen.add(rec.prefix_key)
        add(rec, f"own/{i}", extra)
    _write_jsonl(out_path, records)
    return records
