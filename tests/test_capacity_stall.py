"""A server stall does not decide a capacity: the longest output silence of a window
(servingbench.runtime.capacity.longest_stall) on constructed records, and the search against the
stand-in server (tests/standin_server.py) made to stall once, or every time, at a known load.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from servingbench.runtime import capacity as capmod
from servingbench.runtime.capacity import Stall, longest_stall
from servingbench.runtime.cell import run_cell
from servingbench.runtime.providers import external_server
from servingbench.runtime.records import RequestRecord, WindowSummary
from servingbench.host.config import capacity_sweep_spec
from tests.test_capacity import PREFILL_MS, ROOT, SEARCH, SLOS, TOKEN_MS, _cap, _config, _window, _workload, \
    true_capacity

T0 = 5_000_000_000_000  # a perf_counter_ns reading: only differences matter


def rec(at_s: float, events_s: list[float], end_s: float | None = None, error: str | None = None) -> RequestRecord:
    """A request dispatched at ``at_s`` (window seconds) with output events at ``events_s`` (also
    window seconds); it ends at its last event unless ``end_s`` says otherwise."""
    offsets = [(t - at_s) * 1000 for t in events_s]
    end = end_s if end_s is not None else (events_s[-1] if events_s else None)
    return RequestRecord(prompt_id="p", dispatch_ns=T0 + round(at_s * 1e9), event_offsets_ms=offsets,
                         e2e_ms=None if end is None else (end - at_s) * 1000, error=error)


def stream(at_s: float, first_s: float, n: int, gap_s: float) -> RequestRecord:
    return rec(at_s, [first_s + i * gap_s for i in range(n)])


def test_idle_time_between_busy_periods_is_never_a_stall():
    """Two requests alone, 10 s apart: the longest silence is a first-token wait, not the idle gap."""
    s = longest_stall([stream(0.0, 0.2, 5, 0.05), stream(10.0, 10.1, 5, 0.05)])
    assert s.seconds == pytest.approx(0.2) and s.in_flight == 1 and s.start_s == pytest.approx(0.0)


def test_a_request_waiting_for_its_first_token_is_no_stall_while_others_stream():
    """B waits 2.7 s for its first token while A streams every 0.1 s: the server was not silent."""
    a, b = stream(0.0, 0.1, 30, 0.1), stream(0.2, 2.9, 3, 0.1)
    assert longest_stall([a, b]).seconds == pytest.approx(0.1)
    # Alone, the same wait is a silence of the server: its whole first-token wait.
    alone = longest_stall([stream(0.2, 2.9, 3, 0.1)])
    assert alone.seconds == pytest.approx(2.7) and alone.in_flight == 1


def test_a_silence_with_overlapping_requests_counts_those_in_flight_as_it_began():
    """Three overlapping streams go silent from 1.0 s to 4.0 s; a fourth request arrives during
    the silence (not counted in flight: the server held three when it went quiet)."""
    before = [0.1 * i for i in range(1, 11)]  # ... up to 1.0 s
    after = [4.0 + 0.1 * i for i in range(5)]
    recs = [rec(0.0, before + after), rec(0.3, [t for t in before if t > 0.4] + after),
            rec(0.5, [t for t in before if t > 0.6] + after), rec(2.0, [4.05, 4.15])]
    s = longest_stall(recs)
    assert s.seconds == pytest.approx(3.0) and s.in_flight == 3 and s.start_s == pytest.approx(1.0)


def test_a_request_that_ends_without_a_last_event_keeps_the_period_busy():
    """A sync-like request (an end, no events) makes its whole span one silence; a failed request
    with no recorded end, and one never dispatched, are left out."""
    s = longest_stall([rec(0.0, [], end_s=1.5), rec(0.5, [0.7, 0.8])])
    assert s.seconds == pytest.approx(0.7) and s.in_flight == 1  # 0.8 s -> 1.5 s, only the first
    lost = rec(0.0, [], error="timeout after 30 s")
    never = RequestRecord(prompt_id="p", error="client: not dispatched")
    assert longest_stall([lost, never]) == Stall()
    assert longest_stall([]) == Stall()
    assert longest_stall([lost, stream(1.0, 1.25, 3, 0.01)]).seconds == pytest.approx(0.25)


# -- the rule in the search (simulated windows) ------------------------------------------------------

def _search(cap, verdict_and_stall):
    """Search with ``verdict_and_stall(rate, repeat) -> (met, stall seconds)``: each window judged by
    capmod.judge's stall rule as the real search does (validity and SLO verdicts stood in)."""
    state = capmod.SearchState(cap=cap, start_rate=1.0)
    calls: list[tuple[float, bool]] = []

    async def run_window(rate: float, repeat: bool = False) -> WindowSummary:
        calls.append((rate, repeat))
        met, stall_s = verdict_and_stall(rate, repeat)
        w = _window(len(state.windows) + 1, rate, None, rate, {"a": (met, [] if met else ["ttft_ms"])})
        records = [stream(0.0, 0.01, 3, 0.01), rec(0.05, [0.05 + stall_s, 0.06 + stall_s])]
        capmod.apply_stall_rule(w, longest_stall(records), cap, repeat)
        state.windows.append(w)
        return w

    return state, asyncio.run(capmod.search(state, run_window, lambda r: 1.0)), calls


def test_a_one_off_stall_is_measured_again_and_the_capacity_is_the_stall_free_one():
    cap = _cap(stall_s=2.0)
    truth = 5.3
    clean_state, clean, _ = _search(cap, lambda r, again: (r <= truth, 0.0))
    once = {"left": True}

    def stall_at_4(rate: float, repeat: bool) -> tuple[bool, float]:
        if rate >= 4 and once.pop("left", False):
            return False, 6.7  # the server went silent: the window fails
        return rate <= truth, 0.0

    state, res, calls = _search(cap, stall_at_4)
    assert res["a"].capacity_req_s == clean["a"].capacity_req_s and res["a"].status == "found"
    stalled = [w for w in state.windows if not w.valid]
    assert len(stalled) == 1 and stalled[0].invalid_reason == \
        "server stalled 6.7 s with 1 request in flight, 0.1 s into the window (stall_s 2)"
    assert stalled[0].stall_start_s == pytest.approx(0.05)  # the second request's dispatch
    i = state.windows.index(stalled[0])
    assert state.windows[i + 1].offered_rate_req_s == stalled[0].offered_rate_req_s and state.windows[i + 1].valid
    assert calls[i + 1] == (stalled[0].offered_rate_req_s, True)
    assert len(state.windows) == len(clean_state.windows) + 1  # one window more, nothing dropped


def test_a_stall_that_recurs_counts_as_failing_and_a_pass_despite_a_stall_counts_as_passing():
    cap = _cap(stall_s=2.0)
    # The server stalls at every rate >= 4 and then fails; below 4 it stalls too but passes.
    state, res, _ = _search(cap, lambda r, again: (r < 4, 3.0))
    r = res["a"]
    assert r.status == "found" and r.capacity_req_s < 4 <= r.lowest_failing_req_s
    failing = next(w for w in state.windows if w.offered_rate_req_s == r.lowest_failing_req_s and w.valid)
    assert failing.stall_s == pytest.approx(3.0) and failing.slo["a"].window_met is False
    assert all(w.valid for w in state.windows if w.offered_rate_req_s < 4)  # passed despite a stall
    assert all(w.stall_s == pytest.approx(3.0) for w in state.windows)


def test_a_stalled_window_at_the_window_bound_is_kept_and_not_repeated():
    cap = _cap(stall_s=2.0, max_windows=2)
    state, res, calls = _search(cap, lambda r, again: (r < 1.5, 0.0 if r < 1.5 else 5.0))
    assert [c[1] for c in calls] == [False, False]  # 1.0 passes, 2.0 stalls: no window left to repeat it
    assert not state.windows[-1].valid and state.windows[-1].invalid_reason.startswith("server stalled")
    assert res["a"].status == "not_broken" and res["a"].lowest_failing_req_s is None


# -- the search against the stand-in ----------------------------------------------------------------

STALL_MS, STALL_AT, SLOTS = 2000.0, 4, 2


def _standin(*extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.standin_server", "--slots", str(SLOTS),
                             "--prefill-ms", str(PREFILL_MS), "--token-ms", str(TOKEN_MS), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}"


def _search_standin(tmp_path, every: bool, **search) -> tuple[dict, object]:
    proc, url = _standin("--stall-at", str(STALL_AT), "--stall-ms", str(STALL_MS), *(["--stall-every"] if every else []))
    try:
        spec = capacity_sweep_spec(_config({**SEARCH, "stall_s": 0.5, **search}), "vllm", "standin", "chat")
        out = tmp_path / "results" / "sweeps" / "vllm" / "standin" / "capacity-chat.json"
        result = run_cell(spec, _workload(tmp_path / "chat.jsonl"), out, tmp_path / "results",
                          provider=external_server(url))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    limited = [r["reason"] for r in result["capacity"]["results"].values() if r["status"] == "client_limited"]
    if limited:
        pytest.skip(f"the test client could not keep up on this machine: {limited[0]}")
    return result, spec


def _stalled_then_repeated(windows: list[dict]) -> list[tuple[dict, dict]]:
    return [(w, windows[i + 1]) for i, w in enumerate(windows[:-1])
            if (w.get("invalid_reason") or "").startswith("server stalled")]


def test_a_server_that_stalls_once_has_the_capacity_it_has_without_the_stall(tmp_path, capsys):
    """The stand-in stalls 2 s the first time 4 requests are in it (the warm-up waves never reach
    4): the stalled window fails, is kept with its reason, and is measured again; each SLO set's
    capacity is the stall-free one (the simulation of tests/test_capacity.py)."""
    result, spec = _search_standin(tmp_path, every=False)
    windows, cap = result["windows"], result["capacity"]
    pairs = _stalled_then_repeated(windows)
    assert len(pairs) == 1, [(w["offered_rate_req_s"], w.get("invalid_reason"), w["stall_s"]) for w in windows[1:]]
    stalled, again = pairs[0]
    # The silence begins at the last token before the 4th arrival: 3 or more in flight then.
    assert stalled["stall_s"] >= STALL_MS / 1000 * 0.95 and stalled["stall_in_flight"] >= STALL_AT - 1
    assert f"with {stalled['stall_in_flight']} requests in flight, " \
        f"{stalled['stall_start_s']:.1f} s into the window (stall_s 0.5)" in stalled["invalid_reason"]
    assert 0 <= stalled["stall_start_s"] <= stalled["window_s"] - stalled["stall_s"] + 0.5
    assert again["offered_rate_req_s"] == stalled["offered_rate_req_s"] and again["valid"]
    assert again["stall_s"] < 0.5  # once only
    assert all(w["stall_s"] is not None for w in windows)
    assert "not counted (server stalled" in capsys.readouterr().err
    for name, slo in SLOS.items():
        res = cap["results"][name]
        truth = true_capacity(SLOTS, slo, spec.capacity)
        assert res["status"] == "found", res
        assert abs(res["capacity_req_s"] - truth) / truth <= 0.10, (name, res["capacity_req_s"], truth)
        assert stalled["window"] not in (res["capacity_window"], res["failing_window"])


def test_a_server_that_stalls_every_time_fails_at_that_load(tmp_path):
    """The stand-in stalls 2 s every time 4 requests are in it: the repeat of a stalled window
    stalls again and counts, as a failure: the capacity is below that rate. Four windows: a
    stalled one, its repeat, and a rate below (tests/test_capacity.py checks the bisection)."""
    result, _ = _search_standin(tmp_path, every=True, max_windows=4)
    windows, cap = result["windows"], result["capacity"]
    pairs = _stalled_then_repeated(windows)
    assert pairs, [(w["offered_rate_req_s"], w.get("invalid_reason"), w["stall_s"]) for w in windows[1:]]
    for stalled, again in pairs:
        assert again["offered_rate_req_s"] == stalled["offered_rate_req_s"]
        assert again["valid"] and again["stall_s"] > 0.5
        rate = again["offered_rate_req_s"]
        for name, res in cap["results"].items():
            if again["slo"][name]["window_met"] is False:
                assert res["lowest_failing_req_s"] <= rate and (res["capacity_req_s"] or 0) < rate
