"""Requests sent at scheduled times, and how late the client actually sent them. Runtime module.

A schedule is a list of offsets from the window's start (a replayed trace's arrival times, or
any arrival process that draws them). ``replay`` sends each request at its offset, whatever is
still in flight (open loop), and records per request the scheduled offset and the lateness:
dispatch (the moment the request's bytes go to the socket, as everywhere in servingbench) minus
the scheduled time. The wait for one of ``max_in_flight`` slots counts as lateness.

A client that falls behind its schedule measures a different load than the one asked for, so a
window whose p99 lateness passes the cell's limit fails the cell (``client_behind``).

Timing: asyncio's sleep wakes up to a millisecond late (epoll's timeout is in ms), so the
scheduler sleeps to ``SPIN_NS`` before each arrival and then yields to the loop until it is due
(other requests' responses are read meanwhile).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time

from servingbench.runtime.client import NS_PER_MS, Fail, Send, WindowPlan
from servingbench.runtime.records import ArrivalSummary, RequestRecord
from servingbench.runtime.metrics import stats
from servingbench.runtime.spec import CellSpec, PromptItem

SPIN_NS = 2_000_000
LEAD_NS = 5_000_000  # the first arrival's distance from the window's start (set-up of the loop)


async def sleep_until(t_ns: int) -> None:
    """Return at ``perf_counter_ns() >= t_ns``, letting the loop run meanwhile."""
    while True:
        left = t_ns - time.perf_counter_ns()
        if left <= 0:
            return
        await asyncio.sleep((left - SPIN_NS) / 1e9 if left > SPIN_NS else 0)


def scheduled(items: list[PromptItem], offsets: list[float]) -> list[PromptItem]:
    """``items`` with arrival offsets (ms from the window's start) for ``replay``: how any arrival
    process (Poisson, gamma) that draws its offsets gets achieved-against-scheduled records."""
    if len(offsets) != len(items):
        raise ValueError(f"{len(offsets)} offsets for {len(items)} requests")
    return [dataclasses.replace(it, extra={**it.extra, "offset_ms": float(o)}) for it, o in zip(items, offsets)]


def offsets_ms(items: list[PromptItem]) -> list[float]:
    """Each item's scheduled arrival (``offset_ms`` of its record), checked."""
    out = []
    for item in items:
        offset = item.extra.get("offset_ms")
        if not isinstance(offset, (int, float)) or offset < 0:
            raise ValueError(f"prompt {item.id}: a scheduled request needs offset_ms >= 0 (got {offset!r})")
        out.append(float(offset))
    return out


async def replay(plan: WindowPlan, one: Send, fail: Fail) -> None:
    """The window's scheduler (see ``WindowPlan.scheduler``): each item at its ``offset_ms``.

    The objects that exist before the window are moved out of the garbage collector's reach
    (``gc.freeze``) for its duration: a full collection of a large process took 15 ms here and
    made one request that late; the window's own objects are still collected."""
    slots = asyncio.Semaphore(plan.concurrency)
    schedule = sorted(zip(offsets_ms(plan.items), range(len(plan.items))))
    gc.collect()
    gc.freeze()
    start = time.perf_counter_ns() + LEAD_NS

    async def send(item: PromptItem, due: int) -> None:
        async with slots:
            rec = await one(item, due)
        rec.mark_schedule(due, start)

    tasks = []
    try:
        for offset, i in schedule:
            due = start + int(offset * NS_PER_MS)
            await sleep_until(due)
            tasks.append(asyncio.ensure_future(send(plan.items[i], due)))
        await asyncio.gather(*tasks)
    finally:
        gc.unfreeze()


def plan_windows(spec: CellSpec, items: list[PromptItem]) -> list[tuple[WindowPlan, WindowPlan | None]]:
    """A replayed trace: one window of every scheduled record, after its warm-up records (sent
    closed loop, one wave of ``warmup`` records or more)."""
    stream = spec.mode == "stream"
    warm = [it for it in items if it.extra.get("warmup")]
    meas = [it for it in items if not it.extra.get("warmup")]
    if not meas:
        raise ValueError("the trace workload has no scheduled records")
    cap = spec.concurrency_levels[0]
    warm_plan = WindowPlan(items=warm, concurrency=min(cap, max(1, len(warm))), stream=stream, warmup=True) \
        if warm and spec.warmup_requests else None
    return [(WindowPlan(items=meas[:spec.requests], concurrency=cap, stream=stream, seed=spec.seed,
                        scheduler=replay), warm_plan)]


def arrival_summary(records: list[RequestRecord]) -> ArrivalSummary | None:
    """Scheduled against achieved arrivals of a window; None for a window without a schedule."""
    timed = [r for r in records if r.scheduled_ms is not None]
    if not timed:
        return None
    sent = [r for r in timed if r.lateness_ms is not None]
    span_scheduled = max(r.scheduled_ms for r in timed) - min(r.scheduled_ms for r in timed)
    dispatch = sorted(r.dispatch_ns for r in sent)
    return ArrivalSummary(
        scheduled=len(timed), dispatched=len(sent),
        lateness_ms=stats(r.lateness_ms for r in sent),
        scheduled_span_s=span_scheduled / 1000.0,
        achieved_span_s=(dispatch[-1] - dispatch[0]) / 1e9 if len(dispatch) > 1 else 0.0,
    )


def behind(arrivals: ArrivalSummary | None, limit_ms: float) -> str | None:
    """Why a window's client fell behind its schedule (p99 lateness over ``limit_ms``), or None."""
    if not arrivals or limit_ms <= 0 or not arrivals.lateness_ms:
        return None
    late = arrivals.lateness_ms
    if late.p99 <= limit_ms:
        return None
    return (f"the client fell behind its schedule: p99 dispatch lateness {late.p99:.2f} ms "
            f"(max {late.max:.2f} ms) over the limit of {limit_ms:g} ms, so the load sent was not the "
            f"trace's; use fewer records or a larger time_scale")
