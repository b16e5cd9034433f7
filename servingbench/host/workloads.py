"""Deterministic prompt sets per model and task, sized with the model's own tokenizer (host side).

``results/workloads/{model}/{task}.jsonl`` holds one JSON object a line (``servingbench.runtime.spec.PromptItem``):

* ``id``, ``task``;
* ``prompt``: the exact text sent to completion endpoints. For ``chat_template: true`` models it
  is the model's chat template applied to ``messages`` with ``add_generation_prompt=True``;
* ``messages``: ``[{"role": "user", "content": ...}]`` for chat-template models, else null;
* ``prompt_tokens``: ``len(tokenizer(prompt)["input_ids"])`` with the tokenizer's default
  ``add_special_tokens=True``, which is how an OpenAI-style completions endpoint counts the
  prompt (so a template that already starts with ``<s>`` gets a second one, as on the server);
  always inside the task's ``input_tokens`` range;
* ``target_output_tokens``: a seeded uniform integer in the task's ``output_tokens`` range
  clipped to the model's ``max_tokens`` (uniform over ``[min, min(max, max_tokens)]``; just
  ``max_tokens`` when that is below the range);
* ``sha256`` of ``prompt``. The context sweep file adds ``prompt_tokens_target``.

Texts are real: chat questions, documentation excerpts to summarise (Python's documentation,
shipped in ``servingbench/data``), closed-book questions after solved examples, and Python
function stubs to complete. Draws are seeded by (``run.seed``, task) only, so every model gets
the same choices as far as its tokenizer lets them fit; the bytes depend on nothing else.

How many prompts (:func:`workload_size`): enough that no prompt repeats in a cell or a sweep,
warm-ups included, i.e. ``(warmup_requests + requests_per_cell) * len(cell_concurrency)`` and,
for the concurrency sweep's task, at least ``(warmup_requests + requests_per_level) *
len(levels)``. A runner that needs more cycles through the file.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from servingbench.host.config import Config, context_lengths, workload_size
from servingbench.host.package_data import package_path
from servingbench.runtime.results import atomic_write_text

DATA_DIR = package_path("data")
TASKS = ("chat", "summarization", "qa", "code")

SUMMARY_INSTRUCTIONS = (
    "Summarize the following text in a few sentences.",
    "Write a short summary of the text below.",
    "Read the passage below and summarize its main points.",
    "Give a concise summary of the following excerpt from the Python documentation.",
    "Summarize the following text for a reader who is new to Python.",
)
CODE_INSTRUCTION = "Complete the following Python function."


class WorkloadError(ValueError):
    """A workload that cannot be built as asked; the message names model, task and range."""


# --------------------------------------------------------------------------- public API


def build_prompt_workload(cfg: Config, model: str, task: str, model_dir: str | Path,
                          out_path: str | Path) -> list[dict[str, Any]]:
    """Write a single-turn task's workload ``out_path`` (JSONL) with :func:`workload_size`
    prompts; return the records. Every task kind, the task name checked first:
    :func:`servingbench.host.build_workloads.build_workload`."""
    if task not in _GENERATORS:
        raise WorkloadError(f"task {task!r}: no prompt generator; servingbench builds {', '.join(TASKS)}")
    lo, hi = cfg.tasks[task].input_tokens
    r = _Renderer(model_dir, cfg.models[model].chat_template)
    n = workload_size(cfg, task)
    rng = random.Random(_seed(cfg.run.seed, task))
    contents = _distinct(_GENERATORS[task](rng, r, lo, hi), r, n, f"{model}/{task}", (lo, hi))
    targets = _output_targets(cfg, model, task, n)
    records = [r.record(f"{task}-{i:04d}", task, c, t) for i, (c, t) in enumerate(zip(contents, targets))]
    _write_jsonl(out_path, records)
    return records


def build_context_workload(cfg: Config, model: str, model_dir: str | Path,
                           out_path: str | Path) -> list[dict[str, Any]]:
    """Write the context-length sweep's prompts: ``requests_per_length`` per fitting length."""
    sweep = cfg.sweeps.context
    if sweep is None:
        raise WorkloadError("sweeps.context is not configured")
    r = _Renderer(model_dir, cfg.models[model].chat_template)
    rng = random.Random(_seed(cfg.run.seed, "context"))
    words = _corpus_words()
    records = []
    for length in context_lengths(cfg, model):
        for k in range(sweep.requests_per_length):
            start = rng.randrange(len(words))
            instruction = rng.choice(SUMMARY_INSTRUCTIONS)
            content = _fit_words(r, instruction, words, start, length, f"{model}/context")
            rec = r.record(f"context-{length}-{k}", "context", content, sweep.output_tokens)
            rec["prompt_tokens_target"] = length
            records.append(rec)
    _write_jsonl(out_path, records)
    return records


def context_tolerance(length: int) -> int:
    """How far a context-sweep prompt may miss its target length: 2 % or 4 tokens."""
    return max(4, math.floor(0.02 * length))


# --------------------------------------------------------------------------- rendering


class _Renderer:
    """Turns message content into the final prompt and counts it as a server would."""

    def __init__(self, model_dir: str | Path, chat: bool):
        self.tok = _tokenizer(str(Path(model_dir).resolve()))
        self.chat = chat
        if chat and not self.tok.chat_template:
            raise WorkloadError(f"{model_dir}: chat_template is true but the tokenizer has no chat template")
        self._counts: dict[str, int] = {}

    def messages(self, content: str) -> list[dict[str, str]] | None:
        return [{"role": "user", "content": content}] if self.chat else None

    def prompt(self, content: str) -> str:
        if not self.chat:
            return content
        return self.tok.apply_chat_template(self.messages(content), tokenize=False, add_generation_prompt=True)

    def count(self, content: str) -> int:
        if content not in self._counts:
            self._counts[content] = len(self.tok(self.prompt(content), verbose=False)["input_ids"])
        return self._counts[content]

    def record(self, id_: str, task: str, content: str, target: int) -> dict[str, Any]:
        prompt = self.prompt(content)
        return {"id": id_, "task": task, "prompt": prompt, "messages": self.messages(content),
                "prompt_tokens": self.count(content), "target_output_tokens": target,
                "sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest()}


@functools.lru_cache(maxsize=8)
def _tokenizer(model_dir: str):
    # AutoTokenizer imports torch: about half of a workload job's CPU time on the CPU demo.
    # A directory whose tokenizer_config.json names PreTrainedTokenizerFast (every prepared
    # GGUF or dummy model) gets exactly that class from AutoTokenizer, so load it directly.
    conf = Path(model_dir) / "tokenizer_config.json"
    try:
        named = json.loads(conf.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        named = None
    if named == "PreTrainedTokenizerFast":
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(model_dir)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _seed(*parts: Any) -> int:
    """A seed from stable parts (not Python's salted hash)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


def _output_targets(cfg: Config, model: str, task: str, n: int) -> list[int]:
    # Its own generator, so the targets do not depend on how many candidates the tokenizer rejected.
    rng = random.Random(_seed(cfg.run.seed, task, "output"))
    lo, hi = cfg.tasks[task].output_tokens
    hi = min(hi, cfg.generation[model][task].max_tokens)
    return [rng.randint(lo, hi) if lo <= hi else hi for _ in range(n)]


def _distinct(candidates: Iterator[str], r: _Renderer, n: int, what: str, rng_: tuple[int, int]) -> list[str]:
    """The first n distinct in-range candidates; give up (clearly) after many misses."""
    from servingbench.runtime.cell import Progress

    lo, hi = rng_
    seen: set[str] = set()
    out: list[str] = []
    tries = 0
    progress = Progress(f"workload {what}", n, unit="prompts", after_s=5.0)  # tens of thousands take minutes
    for content in candidates:
        tries += 1
        if content is not None and content not in seen and lo <= r.count(content) <= hi:
            seen.add(content)
            out.append(content)
            progress.step()
            if len(out) == n:
                progress.close()
                return out
        if tries > 200 * n + 2000:
            break
        if tries % 10_000 == 0:  # candidates may be rejected for a long time: say so
            progress.show(f" ({tries} candidates tried)")
    raise WorkloadError(f"{what}: found only {len(out)} distinct prompts of {lo}-{hi} tokens "
                        f"after {tries} tries; {n} are needed")


# --------------------------------------------------------------------------- data


@functools.cache
def _data(name: str) -> dict[str, Any]:
    return json.loads((DATA_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _sentences(paragraph: str) -> list[str]:
    """Split on '. ' boundaries; good enough for documentation prose and keeps the text intact."""
    parts, start = [], 0
    for i in range(len(paragraph) - 1):
        if paragraph[i] in ".?!" and paragraph[i + 1] == " " and i + 2 < len(paragraph) and paragraph[i + 2].isupper():
            parts.append(paragraph[start:i + 1])
            start = i + 2
    parts.append(paragraph[start:])
    return parts


@functools.cache
def _corpus_words() -> tuple[str, ...]:
    """All documentation prose as one word stream (paragraph breaks kept as '\\n\\n' words)."""
    words: list[str] = []
    for doc in _data("documents")["documents"]:
        for p in doc["paragraphs"]:
            words.extend(p.split())
            words.append("\n\n")
    return tuple(words)


def _join_words(words: list[str]) -> str:
    """Words (or sentences) joined by spaces, with '\\n\\n' items as paragraph breaks."""
    return " ".join(words).replace(" \n\n ", "\n\n").strip()


def _fit(r: _Renderer, build: Callable[[int], str], lo: int, hi: int, target: int) -> str:
    """build(k) for the largest k in [lo, hi] whose prompt has at most ``target`` tokens."""
    return build(_largest_fit(lambda k: r.count(build(k)), lo, hi, target))


def _largest_fit(count: Callable[[int], int], lo: int, hi: int, target: int) -> int:
    """Largest k in [lo, hi] with count(k) <= target (count grows with k), or lo."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


# --------------------------------------------------------------------------- generators


def _chat(rng: random.Random, r: _Renderer, lo: int, hi: int) -> Iterator[str]:
    d = _data("chat")
    while True:
        parts = (rng.choice(d["openings"]), rng.choice(d["questions"]), rng.choice(d["closings"]))
        yield " ".join(p for p in parts if p)


def _summarization(rng: random.Random, r: _Renderer, lo: int, hi: int) -> Iterator[str]:
    docs = _data("documents")["documents"]
    while True:
        target = rng.randint(lo, hi)
        instruction = rng.choice(SUMMARY_INSTRUCTIONS)
        doc = rng.choice(docs)
        start = rng.randrange(len(doc["paragraphs"]))
        # Whole sentences from a paragraph start to the end of the section, paragraph breaks kept.
        units: list[str] = []
        for p in doc["paragraphs"][start:]:
            units.extend(_sentences(p))
            units.append("\n\n")
        content = _fit(r, functools.partial(_with_text, instruction, units), 1, len(units), target)
        yield content if r.count(content) >= lo else None


def _with_text(instruction: str, units: list[str], k: int) -> str:
    return f"{instruction}\n\n{_join_words(units[:k])}"


def _qa(rng: random.Random, r: _Renderer, lo: int, hi: int) -> Iterator[str]:
    pairs = _data("qa")["pairs"]
    while True:
        target = rng.randint(lo, hi)
        q = rng.randrange(len(pairs))
        # Examples never include the question's own answer (some answers recur, e.g. Hydrogen).
        others = [i for i in range(len(pairs)) if pairs[i][1] != pairs[q][1]]
        shots = rng.sample(others, len(others))
        yield _fit(r, functools.partial(_with_examples, q, shots), 0, len(shots), target)


def _with_examples(q: int, shots: list[int], k: int) -> str:
    """Solved examples of *other* questions, then the question: closed book, answer not given."""
    d = _data("qa")
    pairs = d["pairs"]
    return "\n\n".join([d["instruction"]] + [f"Q: {pairs[i][0]}\nA: {pairs[i][1]}" for i in shots[:k]]
                       + [f"Q: {pairs[q][0]}\nA:"])


def _code(rng: random.Random, r: _Renderer, lo: int, hi: int) -> Iterator[str]:
    d = _data("code")
    while True:
        header, stub = rng.choice(d["headers"]), rng.choice(d["functions"])
        # Longest form that fits: a chat model is asked in words; shorter forms exist because a
        # long default system prompt (SmolLM2: 30 tokens) leaves little of a 50-token budget.
        forms = [header + v for v in _stub_forms(stub)]
        if r.chat:
            forms.insert(0, f"{CODE_INSTRUCTION}\n\n{forms[0]}")
        yield next((f for f in forms if r.count(f) <= hi), forms[-1])


def _stub_forms(stub: str) -> list[str]:
    """The stub; without type hints; its signature line alone."""
    tree = ast.parse(stub)
    fn = tree.body[-1]
    assert isinstance(fn, ast.FunctionDef)
    for arg in fn.args.args:
        arg.annotation = None
    fn.returns = None
    return [stub, ast.unparse(fn) + "\n", stub.split("\n", 1)[0] + "\n"]


_GENERATORS: dict[str, Callable[[random.Random, _Renderer, int, int], Iterator[str]]] = {
    "chat": _chat, "summarization": _summarization, "qa": _qa, "code": _code,
}


def _fit_words(r: _Renderer, instruction: str, words: tuple[str, ...], start: int, length: int, what: str) -> str:
    """Instruction + words from ``start`` (wrapping), as many as keep the prompt within tolerance."""
    tol = context_tolerance(length)
    stream = list(words[start:]) + list(words[:start])
    build = functools.partial(_with_text, instruction, stream)
    k = _largest_fit(lambda k: r.count(build(k)), 1, min(len(stream), 4 * length), length)
    best = min((build(j) for j in (k, k + 1)), key=lambda c: abs(r.count(c) - length))
    got = r.count(best)
    if abs(got - length) > tol:
        raise WorkloadError(f"{what}: cannot build a {length}-token prompt (got {got}, tolerance {tol})")
    return best


# --------------------------------------------------------------------------- output


def _write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write atomically: a temp file beside the target, then rename."""
    atomic_write_text(path, "".join(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n"
                                    for rec in records))
