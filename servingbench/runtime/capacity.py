"""The capacity search: the highest open-loop arrival rate at which a server meets each SLO set.

How one search runs (one arm x model x task, stream mode):

1. **Probe.** Warm-up, then ``probe_requests`` requests one at a time: their mean E2E is the
   single-stream service time S; the first rate is ``start_rate_factor`` / S. A probe of at
   least ``min_requests`` requests is also a window at zero load (each request alone on the
   server): an SLO set it does not meet is ``not_met`` at once, since no arrival rate gives a
   request a server more to itself; no search window is spent on it.
2. **Windows.** Each window offers arrivals at a rate r (Poisson, or gamma with a burstiness)
   until both minimums hold: at least ``min_requests`` arrivals and arrivals spanning at least
   ``min_duration_s``. Every window uses the same seed, so its arrival pattern is the same at
   every rate, only compressed or stretched (common random numbers: two rates differ by the
   rate alone, which keeps the verdict monotone in the rate where the server is).
3. **Validity.** A window counts only if the client delivered its schedule: the achieved
   dispatch rate is at least (1 - ``rate_tolerance``) of the scheduled one. A window that the
   client could not deliver is run once more; if it fails again the search stops there and
   the capacity is reported as a lower bound limited by the client, never as a low capacity.
   A counted window that hit ``max_in_flight`` fails every SLO set: requests piled up. (Full
   slots that also held the client below its rate make a client limit: the pile-up can be
   the client's.)
   A window that failed a set while the server went silent (``longest_stall``) for longer than
   ``stall_s`` is not counted either and is run once more; the repeat counts, stall or not.
4. **Search.** Per SLO set, in config order, from every valid window so far: the lowest
   failing rate (hi) and the highest passing rate below it (lo). No window yet: the start
   rate; no failure yet: grow (lo x ``growth``); no pass yet: shrink (hi / ``growth``, at most
   three times below the start rate, else ``not_met``); else bisect (the geometric mean) until hi / lo - 1 <=
   ``precision``. Windows are shared: each is judged against every SLO set.
5. **Bounds.** At most ``max_windows`` windows (the probe is not counted) and
   ``max_search_s`` seconds (a set whose next window would not end in time stops there; the
   next set, whose window may be shorter, goes on); one progress line per window on stderr. Every window that ran is
   kept in the result, with its verdicts, memory, energy and utilisation.

The capacity of an SLO set is lo: the offered rate of the highest passing window below the
lowest failing one, with that window's output-token throughput, and, per GPU, both divided by
the GPUs one server uses. ``bound_by`` names the limits over their percentile at hi. Runtime
module: standard library only (the verdicts come from servingbench.runtime.slo).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator

from servingbench.runtime.client import LoadClient, WindowPlan, arrival_offsets
from servingbench.runtime.records import CapacityResult, CapacitySearch, RequestRecord, SloVerdict, WindowSummary
from servingbench.runtime.metrics import window_summary
from servingbench.runtime.slo import window_verdict
from servingbench.runtime.spec import CapacitySpec, CellSpec, PromptItem, SLOSpec

MAX_SHRINKS = 3  # below start_rate / growth**3 a failing SLO counts as not met at any rate tried
MAX_WARM_WAVE = 64  # requests in one warm-up wave before a window of a new, higher load

# Status of one SLO set's search.
FOUND = "found"  # bracket within precision: capacity = lo
NOT_MET = "not_met"  # fails even three shrinks below the start rate: capacity 0 at the rates tried
BELOW = "below_lowest"  # a bound stopped the search while every rate tried failed: capacity < lowest tried
NOT_BROKEN = "not_broken"  # never failed within the budget: capacity >= lo
IMPRECISE = "imprecise"  # budget ran out while bisecting: capacity = lo, the true one below hi
CLIENT_LIMITED = "client_limited"  # the client could not offer more: capacity >= lo
NO_DATA = "no_data"  # no valid window

STALLED = "server stalled"  # how the invalid_reason of a window not counted for a stall begins


def window_arrivals(rate: float, cap: CapacitySpec, seed: int) -> list[float]:
    """The arrival offsets (s) of one window at ``rate``: the first arrivals of the seeded
    sequence until both minimums hold (``min_requests`` and a span of ``min_duration_s``)."""
    n = max(cap.min_requests, math.ceil(rate * cap.min_duration_s) + 1)
    while True:  # a longer draw starts with the same arrivals (same seed): only its tail is new
        offsets = arrival_offsets(n, rate, cap.burstiness, seed)
        reached = next((i + 1 for i, t in enumerate(offsets) if t - offsets[0] >= cap.min_duration_s), None)
        if reached is not None:
            return offsets[:max(reached, cap.min_requests)]
        n *= 2


@dataclass
class Bracket:
    """What the valid windows so far say about one SLO set."""

    lo: float | None = None  # highest passing rate below hi
    hi: float | None = None  # lowest failing rate
    lo_window: int | None = None
    hi_window: int | None = None


def bracket(windows: list[WindowSummary], name: str) -> Bracket:
    fails = [(w.offered_rate_req_s, w.window) for w in windows
             if w.valid and w.slo[name].window_met is False]
    b = Bracket()
    if fails:
        b.hi, b.hi_window = min(fails)
    passes = [(w.offered_rate_req_s, w.window) for w in windows
              if w.valid and w.slo[name].window_met is True and (b.hi is None or w.offered_rate_req_s < b.hi)]
    if passes:
        b.lo, b.lo_window = max(passes)
    return b


def next_rate(b: Bracket, cap: CapacitySpec, start_rate: float) -> tuple[float | None, str | None]:
    """(rate of the next window, None) or (None, final status) for one SLO set."""
    if b.lo is None and b.hi is None:
        return start_rate, None
    if b.hi is None:
        return b.lo * cap.growth, None
    if b.lo is None:
        nxt = b.hi / cap.growth
        return (None, NOT_MET) if nxt < start_rate / cap.growth ** MAX_SHRINKS * (1 - 1e-9) else (nxt, None)
    if b.hi / b.lo - 1 <= cap.precision:
        return None, FOUND
    return math.sqrt(b.lo * b.hi), None


@dataclass
class SearchState:
    """The search's windows and bounds; ``run_window`` measures one window at a rate."""

    cap: CapacitySpec
    start_rate: float
    started: float = field(default_factory=time.monotonic)
    windows: list[WindowSummary] = field(default_factory=list)  # search windows only
    client_ceiling: float | None = None  # lowest rate the client could not deliver (twice)
    zero_load: dict[str, SloVerdict] = field(default_factory=dict)  # the probe's verdict per set (if judged)
    zero_load_requests: int = 0

    def search_windows(self) -> int:
        return len(self.windows)


async def search(state: SearchState, run_window: Callable[..., Awaitable[WindowSummary]],
                 expected_s: Callable[[float], float]) -> dict[str, CapacityResult]:
    """Run windows until every SLO set has its answer or a bound is hit; returns per-set results.

    ``run_window(rate)`` measures one window; ``run_window(rate, repeat=True)`` measures the same
    rate again after a window not counted for a server stall, and its verdict counts, stall or not."""
    cap = state.cap
    statuses: dict[str, str] = {s.name: NOT_MET for s in cap.slos
                                if s.name in state.zero_load and state.zero_load[s.name].window_met is False}
    stopped: dict[str, str] = {}
    for slo in cap.slos:
        while slo.name not in statuses:
            rate, status = next_rate(bracket(state.windows, slo.name), cap, state.start_rate)
            if status is not None:
                statuses[slo.name] = status
                break
            if state.client_ceiling is not None and rate >= state.client_ceiling:
                statuses[slo.name] = CLIENT_LIMITED
                break
            if state.search_windows() >= cap.max_windows:
                stopped[slo.name] = f"window bound reached ({cap.max_windows} windows)"
                break
            spent, need = time.monotonic() - state.started, expected_s(rate)
            if spent + need > cap.max_search_s:
                # Say how far off the bound is: a slow arm can stop here before its first window.
                stopped[slo.name] = (f"time bound reached (max_search_s {cap.max_search_s:g} s: {spent:.0f} s "
                                     f"spent, the next window, at {rate:.3g} req/s, needs ~{need:.0f} s)")
                break
            w = await run_window(rate)
            if stalled(w) and state.search_windows() < cap.max_windows:
                w = await run_window(rate, repeat=True)  # once: a stall that recurs is the server's
            if not w.valid and w.invalid_reason.startswith("client"):
                w = await run_window(rate) if state.search_windows() < cap.max_windows else w
                if not w.valid:
                    state.client_ceiling = min(rate, state.client_ceiling or rate)
        if stopped.get(slo.name, "").startswith("window bound"):
            break  # no set can run another window
    window_bound = next((why for why in stopped.values() if why.startswith("window bound")), "")
    return {s.name: result_for(state, s, statuses.get(s.name), stopped.get(s.name, window_bound)) for s in cap.slos}


def result_for(state: SearchState, slo: SLOSpec, status: str | None, stopped: str) -> CapacityResult:
    """One SLO set's answer, from the windows the search ran."""
    b = bracket(state.windows, slo.name)
    if status is None:  # a bound stopped the search before this set had its answer
        status = NO_DATA if b.lo is None and b.hi is None else NOT_BROKEN if b.hi is None else \
            BELOW if b.lo is None else IMPRECISE
    cap = state.cap
    per = cap.gpus_per_server or 1
    by_index = {w.window: w for w in state.windows}
    found = b.lo_window is not None
    w = by_index[b.lo_window] if found else None
    fail = by_index[b.hi_window] if b.hi_window is not None else None
    mem = w.memory if w is not None else None
    gpu = mem.gpu if mem is not None else None
    # Nothing passed: 0 is all the search can say from below (below_lowest: and < hi from above).
    alone = status == NOT_MET and slo.name in state.zero_load and state.zero_load[slo.name].window_met is False
    capacity_req_s = b.lo if found else (0.0 if status in (NOT_MET, BELOW) else None)
    out_tok_s = w.throughput_output_tok_s if w else (0.0 if status in (NOT_MET, BELOW) else None)
    return CapacityResult(
        slo=slo.name, status=status, stopped_by=stopped or None,
        capacity_req_s=capacity_req_s,
        capacity_output_tok_s=out_tok_s,
        capacity_req_s_per_gpu=None if capacity_req_s is None or not cap.gpus_per_server else capacity_req_s / per,
        capacity_output_tok_s_per_gpu=None if out_tok_s is None or not cap.gpus_per_server else out_tok_s / per,
        highest_passing_req_s=b.lo, lowest_failing_req_s=b.hi,
        capacity_window=b.lo_window, failing_window=b.hi_window,
        bound_by=list((state.zero_load[slo.name] if alone else fail.slo[slo.name]).bound_by) if alone or fail else [],
        energy_per_output_token_j=gpu.energy_per_output_token_j if gpu else None,
        gpu_used_peak_bytes=gpu.device_used_peak_bytes if gpu else None,
        gpu_utilization_mean_pct=gpu.utilization_mean_pct if gpu else None,
        host_rss_peak_bytes=mem.host_rss_peak_bytes if mem else None,
        settled_at_zero_load=alone,
        reason=_reason(status, b, stopped, state, alone),
    )


def _reason(status: str, b: Bracket, stopped: str, state: SearchState, alone: bool = False) -> str:
    if alone:
        return (f"not met with one request at a time (the probe's {state.zero_load_requests} requests, "
                f"closed loop): no arrival rate can meet it")
    if status == FOUND:
        return f"met at {b.lo:.4g} req/s, broken at {b.hi:.4g} req/s (within {state.cap.precision:.0%})"
    if status == NOT_MET:
        return f"not met even at {b.hi:.4g} req/s, the lowest rate tried"
    if status == BELOW:
        return (f"not met at {b.hi:.4g} req/s, the lowest rate tried before the search stopped ({stopped}): "
                f"capacity is below that")
    if status == NOT_BROKEN:
        return f"still met at {b.lo:.4g} req/s when the search stopped ({stopped}): capacity is at least that"
    if status == IMPRECISE:
        return f"met at {b.lo:.4g} req/s, broken at {b.hi:.4g} req/s; {stopped} before the set precision"
    if status == CLIENT_LIMITED:
        return (f"the client could not deliver {state.client_ceiling:.4g} req/s on this machine: capacity is "
                f"at least {b.lo:.4g} req/s" if b.lo is not None else
                f"the client could not deliver {state.client_ceiling:.4g} req/s on this machine; no rate passed below it")
    return f"no valid window ({stopped or 'the search stopped'})"


# -- running windows against a server ---------------------------------------------------------------

class ProbeFailed(RuntimeError):
    """No single-stream request completed: there is no service time to start the search from."""


def _cycle(items: list[PromptItem]) -> Iterator[PromptItem]:
    i = 0
    while True:
        yield items[i % len(items)]
        i += 1


@dataclass(frozen=True)
class Stall:
    """The longest output silence of a window (``longest_stall``)."""

    seconds: float = 0.0
    in_flight: int = 0  # requests in flight as it began (arrivals during it not counted)
    start_s: float = 0.0  # from the window's first dispatch


def _in_flight(r: RequestRecord) -> tuple[float, float, list[float]] | None:
    """(start, end, event times) of one request in seconds of perf_counter, or None when its end is unknown."""
    if not r.dispatch_ns:
        return None  # never dispatched
    t0 = r.dispatch_ns / 1e9
    events = [t0 + off / 1000.0 for off in r.event_offsets_ms]
    end_ms = r.e2e_ms if r.e2e_ms is not None else (r.event_offsets_ms[-1] if r.event_offsets_ms else None)
    if end_ms is None:
        return None  # failed before any answer, with no recorded end (a transport error or timeout)
    return t0, t0 + end_ms / 1000.0, events


def longest_stall(records: list[RequestRecord]) -> Stall:
    """The longest interval during which at least one request was in flight and no request
    received an output event, and how many requests were in flight as it began.

    A request is in flight from its dispatch (``dispatch_ns``) to its end (dispatch + ``e2e_ms``,
    or its last event when a failed request has no ``e2e_ms``; a request with neither is left out:
    its end is unknown). Its output events are at dispatch + each ``event_offsets_ms``. The union
    of the in-flight intervals splits into busy periods; within each, the silences are the gaps
    between successive points of: the period's start, every event, the period's end. So a wait for
    a first token counts (a request alone on the server: its TTFT), and time with nothing in flight
    never does. The count leaves out requests dispatched during the silence: it is the load the
    server held when it went quiet, not the queue the silence built. A stream window's figure:
    sync requests have no events, so their whole busy periods count. Zero when no request has a
    known interval.
    """
    spans = sorted(s for s in map(_in_flight, records) if s is not None)
    if not spans:
        return Stall()
    origin = spans[0][0]
    best = (0.0, 0.0, 0.0)  # (length, start, end) of the longest silence
    i = 0
    while i < len(spans):  # one busy period per pass: spans that overlap or touch, in dispatch order
        start, end, points = spans[i][0], spans[i][1], list(spans[i][2])
        i += 1
        while i < len(spans) and spans[i][0] <= end:
            end = max(end, spans[i][1])
            points += spans[i][2]
            i += 1
        marks = [start] + sorted(t for t in points if start <= t <= end) + [end]
        for a, b in zip(marks, marks[1:]):
            if b - a > best[0]:
                best = (b - a, a, b)
    length, a, _ = best
    if length <= 0:
        return Stall()
    return Stall(seconds=length, in_flight=sum(1 for s, e, _ in spans if s <= a < e), start_s=a - origin)


def delivery(records: list[RequestRecord], offsets: list[float]) -> dict[str, Any]:
    """Scheduled against achieved dispatch rate of one open-loop window."""
    n = len(offsets)
    span = offsets[-1] - offsets[0] if n > 1 else 0.0
    sent = sorted(r.dispatch_ns for r in records if r.dispatch_ns)
    achieved_span = (sent[-1] - sent[0]) / 1e9 if len(sent) > 1 else 0.0
    scheduled = (n - 1) / span if span > 0 else None
    achieved = (len(sent) - 1) / achieved_span if achieved_span > 0 else None
    return {"scheduled_rate_req_s": scheduled, "achieved_rate_req_s": achieved, "dispatched": len(sent),
            "arrival_span_s": span}


def stall_text(w: WindowSummary, cap: CapacitySpec) -> str:
    n = w.stall_in_flight
    return (f"{STALLED} {w.stall_s:.1f} s with {n} request{'' if n == 1 else 's'} in flight, "
            f"{w.stall_start_s or 0.0:.1f} s into the window (stall_s {cap.stall_s:g})")


def stalled(summary: WindowSummary) -> bool:
    """The window was not counted for a server stall (``apply_stall_rule``)."""
    return not summary.valid and (summary.invalid_reason or "").startswith(STALLED)


def failed_a_set(summary: WindowSummary) -> bool:
    """The window failed at least one SLO set."""
    return any(v.window_met is False for v in (summary.slo or {}).values())


def apply_stall_rule(summary: WindowSummary, stall: Stall, cap: CapacitySpec, repeat: bool = False) -> None:
    """Record a judged window's longest stall; a counted window that failed some SLO set while the
    server stalled longer than ``stall_s`` is not counted, unless it is the ``repeat`` of one."""
    summary.stall_s, summary.stall_in_flight, summary.stall_start_s = stall.seconds, stall.in_flight, stall.start_s
    if summary.valid and failed_a_set(summary) and stall.seconds > cap.stall_s and not repeat:
        # One silence of the server, whatever its cause, is not its capacity: a server at its
        # limit still emits tokens while its queue grows.
        summary.valid, summary.invalid_reason = False, stall_text(summary, cap)


def judge(summary: WindowSummary, records: list[RequestRecord], cap: CapacitySpec, window_s: float,
          peak_in_flight: int, repeat: bool = False) -> None:
    """Add validity, the verdict of every SLO set and the longest stall (``apply_stall_rule``) to a
    window summary (in place)."""
    scheduled, achieved = summary.scheduled_rate_req_s, summary.achieved_rate_req_s
    reason = None
    if summary.dispatched < summary.requests:
        reason = f"client dispatched {summary.dispatched} of {summary.requests} requests"
    elif scheduled and (achieved is None or achieved < (1 - cap.rate_tolerance) * scheduled):
        reason = (f"client delivered {achieved or 0:.4g} of the scheduled {scheduled:.4g} req/s "
                  f"(tolerance {cap.rate_tolerance:.0%})")
    elif summary.requests < cap.min_requests or summary.arrival_span_s < cap.min_duration_s * (1 - 1e-9):
        reason = (f"minimums not met: {summary.requests} requests over {summary.arrival_span_s:.3g} s "
                  f"(min_requests {cap.min_requests}, min_duration_s {cap.min_duration_s:g})")
    summary.valid, summary.invalid_reason = reason is None, reason
    saturated = peak_in_flight >= cap.max_in_flight
    summary.in_flight_cap_reached = saturated
    summary.slo = {}
    for s in cap.slos:
        v = window_verdict(records, window_s, s, stream=True)
        if saturated:  # requests waited in the client, outside the TTFT: the server did not absorb the load
            v.window_met = False
            v.bound_by = v.bound_by + ["max_in_flight"]
        summary.slo[s.name] = v
    apply_stall_rule(summary, longest_stall(records), cap, repeat)


def progress_line(cell_id: str, w: WindowSummary, cap: CapacitySpec, elapsed_s: float) -> str:
    verdicts = ", ".join(
        f"{name} " + ("pass" if v.window_met else "fail" + (f" ({'/'.join(v.bound_by)})" if v.bound_by else ""))
        for name, v in w.slo.items())
    ach = w.achieved_rate_req_s
    head = (f"[{cell_id}] window {w.window}/{cap.max_windows}: {w.offered_rate_req_s:.4g} req/s offered, "
            f"{ach:.4g} delivered" if ach else f"[{cell_id}] window {w.window}/{cap.max_windows}: "
            f"{w.offered_rate_req_s:.4g} req/s offered")
    body = f", {w.completed}/{w.requests} completed in {w.window_s:.1f} s: "
    again = stalled(w) and (w.window or 0) < cap.max_windows
    body += verdicts if w.valid else f"not counted ({w.invalid_reason})" + ("; measuring it again" if again else "")
    if w.valid and w.stall_s is not None and w.stall_s > cap.stall_s:
        body += f"; {stall_text(w, cap)}, counted"
    return head + body + f"; {elapsed_s:.0f} s elapsed"


async def measure_capacity(spec: CellSpec, client: LoadClient, items: list[PromptItem],
                           window_monitor: Callable[[], Any], check_server: Callable[[WindowSummary], Awaitable[None]],
                           progress: Any = None) -> tuple[list[WindowSummary], list[RequestRecord], CapacitySearch]:
    """Probe, then search; returns (windows, request records, the ``capacity`` object).

    ``window_monitor()`` gives a started-on-demand monitor (servingbench.runtime.monitor.Monitor) per
    window; ``check_server(window)`` raises if the server died during a window.
    """
    cap = spec.capacity
    assert cap is not None
    out = progress or sys.stderr
    cell_id = spec.cell_id()
    source = _cycle(items)
    records: list[RequestRecord] = []
    all_windows: list[WindowSummary] = []
    t_start = time.monotonic()

    if spec.warmup_requests:
        await client.run_window(WindowPlan([next(source) for _ in range(spec.warmup_requests)], 1, True, warmup=True))
    probe_items = [next(source) for _ in range(cap.probe_requests)]
    recs, probe_s = await client.run_window(WindowPlan(probe_items, 1, True, window=0))
    probe = window_summary(recs, probe_s, 1, True)
    probe.window, probe.phase, probe.valid = 0, "probe", True
    stall = longest_stall(recs)
    probe.stall_s, probe.stall_in_flight, probe.stall_start_s = stall.seconds, stall.in_flight, stall.start_s
    records += recs
    all_windows.append(probe)
    await check_server(probe)
    done = [r for r in recs if r.ok and r.e2e_ms]
    if not done:
        raise ProbeFailed(f"capacity probe: none of its {len(recs)} requests completed")
    service_s = sum(r.e2e_ms for r in done) / len(done) / 1000.0
    start_rate = cap.start_rate_factor / service_s
    print(f"[{cell_id}] probe: single-stream service time {service_s * 1000:.0f} ms; first rate "
          f"{start_rate:.4g} req/s", file=out, flush=True)
    state = SearchState(cap=cap, start_rate=start_rate, started=t_start)
    if len(recs) >= cap.min_requests:  # enough for the percentile: the probe is a window at zero load
        state.zero_load = {s.name: window_verdict(recs, probe_s, s, stream=True) for s in cap.slos}
        state.zero_load_requests = len(recs)
        probe.slo = state.zero_load
        for name, v in state.zero_load.items():
            if v.window_met is False:
                print(f"[{cell_id}] probe: {name} not met with one request at a time "
                      f"({'/'.join(v.bound_by)}): no search for it", file=out, flush=True)
    warmed = [1]

    def expected_s(rate: float) -> float:
        offsets = window_arrivals(rate, cap, spec.seed)
        return offsets[-1] + service_s

    async def run_window(rate: float, repeat: bool = False) -> WindowSummary:
        index = len(all_windows)
        wave = min(MAX_WARM_WAVE, cap.max_in_flight, math.ceil(rate * service_s))
        if wave > warmed[0]:  # a new batch shape: warm it up outside the measurement
            await client.run_window(WindowPlan([next(source) for _ in range(wave)], wave, True, warmup=True))
            warmed[0] = wave
        offsets = window_arrivals(rate, cap, spec.seed)
        plan = WindowPlan([next(source) for _ in offsets], cap.max_in_flight, True, window=index,
                          request_rate=rate, seed=spec.seed, burstiness=cap.burstiness)
        monitor = window_monitor().start()
        try:
            recs, window_s = await client.run_window(plan)
        finally:
            monitor.stop()
        w = window_summary(recs, window_s, cap.max_in_flight, True)
        w.update(dict(window=index, phase="search", offered_rate_req_s=rate, arrival=cap.arrival,
                      burstiness=cap.burstiness, peak_in_flight=client.peak_in_flight,
                      distinct_prompts=len({it.id for it in plan.items}), **delivery(recs, offsets)))
        judge(w, recs, cap, window_s, client.peak_in_flight, repeat)
        w.memory = monitor.summary(None, None, w.output_tokens_actual_total)
        w.elapsed_s = time.monotonic() - t_start
        records.extend(recs)
        all_windows.append(w)
        state.windows.append(w)
        print(progress_line(cell_id, w, cap, w.elapsed_s), file=out, flush=True)
        await check_server(w)
        return w

    # The search's window list holds search windows only; indices in results are into all windows.
    results = await search(state, run_window, expected_s)
    capacity = CapacitySearch(
        slos=[dataclasses.asdict(s) for s in cap.slos], arrival=cap.arrival, burstiness=cap.burstiness,
        gpus_per_server=cap.gpus_per_server, per="gpu" if cap.gpus_per_server else "server",
        service_time_s=service_s, start_rate_req_s=start_rate,
        search_windows=state.search_windows(), wall_s=time.monotonic() - t_start,
        client_ceiling_req_s=state.client_ceiling, results=results,
    )
    return all_windows, records, capacity
