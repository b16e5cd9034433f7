"""Multi-turn conversations: each turn carries the whole history, with the server's own answers.

A multiturn workload file (servingbench.host.prefix_workloads) holds one record per turn. The prompt of
turn k is the rendered conversation up to its question, with a placeholder (``answer_slots``) for
each earlier answer; here each placeholder is replaced by the text the server answered in this
run, so the history the server sees is exactly what it produced (and what its prefix cache, if
any, holds). ``answer_strip`` says that the model's chat template strips message text, so the
answers are stripped the same way.

A window runs ``concurrency`` conversations at a time (users), each turn after the answer to
the previous one plus that turn's think time. A failed turn ends its conversation: its later
turns are recorded as failed requests that were not sent. Runtime module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Iterator

from servingbench.runtime.client import Fail, Send, WindowPlan
from servingbench.runtime.records import RequestRecord
from servingbench.runtime.spec import CellSpec, PromptItem

NOT_SENT = "not sent: an earlier turn of its conversation failed"


def conversations(items: list[PromptItem]) -> list[list[PromptItem]]:
    """Turn records grouped by conversation (file order), each in turn order."""
    groups: dict[str, list[PromptItem]] = {}
    for item in items:
        conv = item.extra.get("session")
        if conv is None or not isinstance(item.extra.get("turn"), int):
            raise ValueError(f"prompt {item.id}: a multiturn record needs session and turn")
        groups.setdefault(conv, []).append(item)
    return [sorted(g, key=lambda it: it.extra["turn"]) for g in groups.values()]


def plan_windows(spec: CellSpec, items: list[PromptItem]) -> list[tuple[WindowPlan, WindowPlan | None]]:
    """(measured window, warm-up) pairs: per concurrency level at least one wave of whole warm-up
    conversations, then ``spec.trials`` windows of ``spec.requests`` conversations, taken in file
    order (the order the workload builder laid out, so that no conversation repeats)."""
    stream = spec.mode == "stream"
    source: Iterator[list[PromptItem]] = itertools.cycle(conversations(items))
    plans: list[tuple[WindowPlan, WindowPlan | None]] = []
    w = 0
    for level in spec.concurrency_levels:
        n_warm = max(spec.warmup_requests, level) if spec.warmup_requests else 0
        warm = [t for _ in range(n_warm) for t in next(source)]
        warm_plan = WindowPlan(items=warm, concurrency=level, stream=stream, warmup=True,
                               scheduler=run_conversations) if warm else None
        for trial in range(spec.trials):
            meas = [t for _ in range(spec.requests) for t in next(source)]
            plans.append((WindowPlan(items=meas, concurrency=level, stream=stream, window=w, seed=spec.seed + w,
                                     trial=trial, scheduler=run_conversations), warm_plan if trial == 0 else None))
            w += 1
    return plans


def with_history(item: PromptItem, answers: list[str], answer_tokens: int) -> PromptItem:
    """Turn ``item`` with its placeholders replaced by the earlier answers of its conversation.

    Its ``prompt_tokens`` becomes the builder's count without answers plus the answers' token
    counts (the server's count replaces it when the server reports one)."""
    slots = item.extra.get("answer_slots") or []
    if len(slots) != len(answers):
        raise ValueError(f"prompt {item.id}: {len(slots)} answer slots for {len(answers)} answers")
    if item.extra.get("answer_strip"):
        answers = [a.strip() for a in answers]
    prompt = item.prompt
    messages = [dict(m) for m in item.messages] if item.messages else None
    for slot, answer in zip(slots, answers):
        prompt = prompt.replace(slot, answer)
        for m in messages or ():
            m["content"] = m["content"].replace(slot, answer)
    return dataclasses.replace(item, prompt=prompt, prompt_tokens=item.prompt_tokens + answer_tokens,
                               messages=tuple(messages) if messages is not None else None)


async def run_conversations(plan: WindowPlan, one: Send, fail: Fail) -> None:
    """The window's scheduler (see ``WindowPlan.scheduler``)."""
    convs = conversations(plan.items)
    queue = iter(convs)

    async def user() -> None:
        for turns in queue:  # shared iterator: a user starts the next conversation when free
            await converse(turns)

    async def converse(turns: list[PromptItem]) -> None:
        answers: list[str] = []
        answer_tokens = 0
        failed = False
        for item in turns:
            if failed:
                fail(item, NOT_SENT)
                continue
            think_s = float(item.extra.get("think_time_s") or 0.0)
            if answers and think_s > 0:
                await asyncio.sleep(think_s)
            rec = await one(with_history(item, answers, answer_tokens), time.perf_counter_ns())
            _server_prompt_count(rec)
            if not rec.ok or rec.output_text is None:
                failed = True
                continue
            answers.append(rec.output_text)
            answer_tokens += rec.output_tokens or 0

    await asyncio.gather(*(user() for _ in range(min(plan.concurrency, len(convs)))))


def _server_prompt_count(rec: RequestRecord) -> None:
    # The history's tokens are the server's own answers re-read: the server's count is exact.
    if rec.server_prompt_tokens:
        rec.prompt_tokens = rec.server_prompt_tokens
