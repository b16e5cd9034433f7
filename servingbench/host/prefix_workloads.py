"""Workloads whose requests share prefixes: multi-turn conversations and shared-prefix groups
(host side). Texts are the kit's own (servingbench/data), counted with the model's tokenizer.

Multi-turn (``workload: multiturn``): one record per turn. A conversation has an optional system
message (a documentation excerpt of ``system_tokens`` tokens, its own for each conversation) and
``turns`` user messages: a chat question (openings and closings as in the chat task) first, then
a follow-up line and another question. Each message's own tokens (without template) fall in the
task's ``input_tokens`` range. A turn's ``prompt`` is the conversation rendered with the model's
chat template up to that question, where each earlier answer is a placeholder (``answer_slots``)
that the runtime fills with the server's real answer (servingbench.runtime.conversations); its
``prompt_tokens`` counts the prompt without the answers. Models without a chat template get a
plain transcript (``User: ...`` / ``Assistant:...``). Conversations never share a first message.

Shared prefix (``workload: shared_prefix``): every prompt is a documentation excerpt of about
``prefix_tokens`` tokens (counted as the prompt of the excerpt alone), then a question
(``input_tokens`` is the range of that suffix). A window's requests fall in ``groups`` groups
that share an excerpt; with ``prefix_hit_rate`` h, round(h N) + groups of the N requests are in a
group and the rest have an excerpt of their own, so that exactly round(h N) requests carry a
prefix an earlier request of the window sent (``prefix_seen``). Warm-up requests have excerpts of
their own, and each window has new excerpts, so nothing is cached before a window starts.

Both files are laid out in the order the runtime takes them (per concurrency level: warm-up,
then measured), as servingbench.runtime.cell.plan_windows and servingbench.runtime.conversations do.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Iterator

from servingbench.host.config import Config
from servingbench.host.task_kinds import MultiTurnTask, SharedPrefixTask
from servingbench.host.workloads import (
    WorkloadError,
    _corpus_words,
    _data,
    _join_words,
    _largest_fit,
    _output_targets,
    _Renderer,
    _seed,
    _write_jsonl,
)

SLOT = "<<servingbench-answer-{}>>"
SYSTEM_INSTRUCTION = ("You are a helpful assistant. Answer the user's questions; the excerpt from the Python "
                      "documentation below is there for reference.")
SUFFIX_LEADS = (
    "Now a question that has nothing to do with the text above.",
    "Leaving the excerpt aside, please answer this:",
    "Here is my actual question.",
    "Thanks for reading. My question:",
)


def content_tokens(r: _Renderer, text: str) -> int:
    """Tokens of a message's text alone (no template, no special tokens)."""
    return len(r.tok(text, add_special_tokens=False, verbose=False)["input_ids"])


def prompt_tokens(r: _Renderer, text: str) -> int:
    """Tokens of a final prompt as an OpenAI-style completions endpoint counts it."""
    return len(r.tok(text, verbose=False)["input_ids"])


def _windows(cfg: Config) -> list[tuple[int, int]]:
    """(warm-up count, measured count) of each measured window, as the runtime plans them: per
    concurrency level one warm-up, then ``run.trials`` windows."""
    run = cfg.run
    return [((max(run.warmup_requests, c) if run.warmup_requests and t == 0 else 0), run.requests_per_cell)
            for c in run.cell_concurrency for t in range(run.trials)]


def _excerpts(r: _Renderer, rng: random.Random, n: int, tokens: int, what: str,
              count=None) -> Iterator[str]:
    """``n`` documentation excerpts of about ``tokens`` tokens, from distinct seeded positions."""
    words = _corpus_words()
    count = count or (lambda text: content_tokens(r, text))
    paragraphs = [0] + [i + 1 for i, w in enumerate(words[:-1]) if w == "\n\n"]
    if n > len(paragraphs):
        raise WorkloadError(f"{what}: {n} excerpts needed, the documentation has {len(paragraphs)} paragraphs")
    starts = rng.sample(paragraphs, n)
    for start in starts:
        stream = list(words[start:]) + list(words[:start])
        k = _largest_fit(lambda k: count(_join_words(stream[:k])), 1, min(len(stream), 4 * tokens), tokens)
        text = _join_words(stream[:k])
        got = count(text)
        if got < 0.9 * tokens - 4:
            raise WorkloadError(f"{what}: cannot build a {tokens}-token excerpt (got {got})")
        yield text


def _questions(r: _Renderer, rng: random.Random, lo: int, hi: int,
               lead: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(question, message): a chat question with a seeded lead line (an opening or follow-up) and
    closing, whose own tokens fall in [lo, hi]; endless, not necessarily distinct."""
    d = _data("chat")
    misses = 0
    while True:
        parts = (rng.choice(lead), rng.choice(d["questions"]), rng.choice(d["closings"]))
        text = " ".join(p for p in parts if p)
        if lo <= content_tokens(r, text) <= hi:
            misses = 0
            yield parts[1], text
        else:
            misses += 1
            if misses > 5000:
                raise WorkloadError(f"no chat question has {lo}-{hi} tokens of its own; widen input_tokens")


# --------------------------------------------------------------------------- multi-turn


class _Transcript:
    """A conversation rendered as the model's chat template would, or as a plain transcript."""

    def __init__(self, r: _Renderer) -> None:
        self.r = r
        self.strip = self._template_strips() if r.chat else False

    def render(self, messages: list[dict[str, str]]) -> str:
        if self.r.chat:
            return self.r.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out = []
        for m in messages:
            if m["role"] == "system":
                out.append(m["content"] + "\n\n")
            elif m["role"] == "user":
                out.append(f"User: {m['content']}\nAssistant:")
            else:  # the answer follows "Assistant:" as the model wrote it
                out.append(f"{m['content']}\n")
        return "".join(out)

    def _template_strips(self) -> bool:
        probe = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  zq  "},
                 {"role": "user", "content": "b"}]
        text = self.r.tok.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        if "  zq  " in text:
            return False
        if "zq" in text:
            return True
        raise WorkloadError("the chat template drops earlier answers; cannot build a multi-turn conversation")


def build_multiturn(cfg: Config, model: str, task: str, model_dir: str | Path,
                    out_path: str | Path) -> list[dict[str, Any]]:
    """Write a multi-turn workload (see the module notes); return its records."""
    t = cfg.tasks[task]
    assert isinstance(t, MultiTurnTask)
    r = _Renderer(model_dir, cfg.models[model].chat_template)
    talk = _Transcript(r)
    n_conv = sum(w + m for w, m in _windows(cfg))
    rng = random.Random(_seed(cfg.run.seed, task))
    d = _data("chat")
    lo, hi = t.input_tokens
    firsts, laters = _questions(r, rng, lo, hi, tuple(d["openings"])), _questions(r, rng, lo, hi, tuple(d["follow_ups"]))
    systems = _excerpts(r, rng, n_conv, t.system_tokens, f"{model}/{task}.system_tokens",
                        count=lambda text: content_tokens(r, f"{SYSTEM_INSTRUCTION}\n\n{text}")) \
        if t.system_tokens else None
    targets = iter(_output_targets(cfg, model, task, n_conv * t.turns))
    ctx = min(cfg.models[model].context_length, cfg.run.max_model_len)
    seen_first: set[str] = set()
    records = []
    for c in range(n_conv):
        session = f"c{c:04d}"
        messages = [{"role": "system", "content": f"{SYSTEM_INSTRUCTION}\n\n{next(systems)}"}] if systems else []
        asked: set[str] = set()
        answered_tokens = 0
        for k in range(1, t.turns + 1):
            text = _next_question(firsts if k == 1 else laters, asked, seen_first if k == 1 else None)
            messages.append({"role": "user", "content": text})
            prompt = talk.render(messages)
            slots = [SLOT.format(j) for j in range(1, k)]
            for slot in slots:
                if prompt.count(slot) != 1:
                    raise WorkloadError(f"{model}: the chat template does not keep answers verbatim; "
                                        "cannot build a multi-turn conversation")
            bare = prompt
            for slot in slots:
                bare = bare.replace(slot, "")
            target = next(targets)
            est = prompt_tokens(r, bare) + answered_tokens
            if est + target > ctx:
                raise WorkloadError(f"tasks.{task}.turns: turn {k} of a conversation needs about {est + target} "
                                    f"tokens, more than {model}'s context of {ctx}")
            records.append({
                "id": f"{task}-{session}-t{k}", "task": task, "prompt": prompt,
                "messages": [dict(m) for m in messages] if r.chat else None,
                "prompt_tokens": prompt_tokens(r, bare), "target_output_tokens": target,
                "sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
                "session": session, "turn": k, "turns": t.turns, "user_tokens": content_tokens(r, text),
                "think_time_s": round(rng.uniform(*t.think_time_s), 3) if k > 1 else 0.0,
                "answer_slots": slots, "answer_strip": talk.strip,
            })
            messages.append({"role": "assistant", "content": SLOT.format(k)})
            answered_tokens += min(target, cfg.generation[model][task].max_tokens)
    _write_jsonl(out_path, records)
    return records


def _next_question(source: Iterator[tuple[str, str]], asked: set[str], distinct: set[str] | None) -> str:
    """The next message whose question ``asked`` does not hold yet (and, with ``distinct``, a
    message no earlier call returned)."""
    for _ in range(10000):
        question, text = next(source)
        if question not in asked and (distinct is None or text not in distinct):
            asked.add(question)
            if distinct is not None:
                distinct.add(text)
            return text
    raise WorkloadError("ran out of distinct chat questions for the conversations; use fewer turns or requests")


# --------------------------------------------------------------------------- shared prefix


def prefix_plan(n: int, groups: int, hit_rate: float | None, rng: random.Random) -> list[int | None]:
    """Which group (0..groups-1) each of a window's n requests uses, None for a prefix of its
    own; exactly round(hit_rate * n) (all but ``groups`` when None) repeat a sent prefix."""
    shared = n if hit_rate is None else round(hit_rate * n) + groups
    if groups > n or shared > n:
        raise WorkloadError(f"{groups} groups with hit rate {hit_rate} do not fit {n} requests")
    plan: list[int | None] = [i % groups for i in range(shared)] + [None] * (n - shared)
    rng.shuffle(plan)
    return plan


def build_shared_prefix(cfg: Config, model: str, task: str, model_dir: str | Path,
                        out_path: str | Path) -> list[dict[str, Any]]:
    """Write a shared-prefix workload (see the module notes); return its records."""
    t = cfg.tasks[task]
    assert isinstance(t, SharedPrefixTask)
    r = _Renderer(model_dir, cfg.models[model].chat_template)
    rng = random.Random(_seed(cfg.run.seed, task))
    windows = _windows(cfg)
    plans = [prefix_plan(m, t.groups, t.prefix_hit_rate, rng) for _, m in windows]
    n_prefixes = sum(w + t.groups + plan.count(None) for (w, _), plan in zip(windows, plans))
    excerpts = _excerpts(r, rng, n_prefixes, t.prefix_tokens, f"{model}/{task}.prefix_tokens", count=r.count)
    lo, hi = t.input_tokens
    questions = _questions(r, rng, lo, hi, SUFFIX_LEADS)
    used: set[str] = set()  # texts, not questions: 80 questions would not last
    targets = iter(_output_targets(cfg, model, task, sum(w + m for w, m in windows)))
    records: list[dict[str, Any]] = []

    def record(excerpt: str, extra: dict[str, Any]) -> dict[str, Any]:
        question = _next_question(questions, set(), used)
        rec = r.record(f"{task}-{len(records):04d}", task, f"{excerpt}\n\n{question}", next(targets))
        rec.update(suffix_tokens=content_tokens(r, question), prefix_tokens_target=t.prefix_tokens, **extra)
        records.append(rec)
        return rec

    for w, ((n_warm, _), plan) in enumerate(zip(windows, plans)):
        for j in range(n_warm):
            record(next(excerpts), {"warmup": True})
        group_text = {g: next(excerpts) for g in range(t.groups)}
        members: dict[str, list[dict[str, Any]]] = {}
        own = 0
        for g in plan:
            if g is None:
                name, text, own = f"w{w}-own{own}", next(excerpts), own + 1
            else:
                name, text = f"w{w}-g{g}", group_text[g]
            rec = record(text, {"prefix_group": name, "prefix_seen": name in members})
            members.setdefault(name, []).append(rec)
        for group in members.values():
            shared = _common_prefix_tokens(r, [m["prompt"] for m in group]) if len(group) > 1 else None
            for m in group:
                m["prefix_tokens_shared"] = shared
    _write_jsonl(out_path, records)
    return records


def _common_prefix_tokens(r: _Renderer, prompts: list[str]) -> int:
    """How many leading tokens the prompts have in common (what a prefix cache can reuse)."""
    ids = [r.tok(p, verbose=False)["input_ids"] for p in prompts[:2]]
    n = 0
    for a, b in zip(*ids):
        if a != b:
            break
        n += 1
    return n
