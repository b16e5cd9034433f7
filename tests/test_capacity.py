"""The capacity search finds a capacity known in advance, keeps every window, and never turns a
client that cannot keep up into a low capacity.

The known capacity comes from tests/standin_server.py (k slots, FIFO, fixed prefill and
per-token time: see its docstring for why it is a stand-in) and a discrete-event simulation of
that server on the very arrival times the search offers (same seed, same window sizes).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from servingbench.runtime import capacity as capmod
from servingbench.runtime.cell import run_cell
from servingbench.runtime.client import arrival_offsets
from servingbench.host.config import capacity_sweep_spec, parse_config
from servingbench.runtime.metrics import percentile, window_summary
from servingbench.runtime.providers import external_server
from servingbench.runtime.records import CapacityResult, SloVerdict, WindowSummary
from servingbench.runtime.spec import CapacitySpec, SLOSpec

ROOT = Path(__file__).resolve().parent.parent
PREFILL_MS, TOKEN_MS, TOKENS = 30.0, 6.0, 6
SERVICE_MS = PREFILL_MS + (TOKENS - 1) * TOKEN_MS  # a slot is busy 60 ms per request
# Two SLO sets with different capacities. Their limits sit where the window's percentile grows
# smoothly with the rate (the simulation moves the capacity < 2 % per 2 ms of limit), so that the
# client's own share of each TTFT (well under a millisecond on an idle machine) cannot move the answer.
SLOS = {"tail": {"ttft_ms": 180.0, "percentile": 90},                  # p90 wait of at most 150 ms
        "median": {"ttft_ms": 120.0, "tpot_ms": 20.0, "percentile": 50}}  # median wait of at most 90 ms
SEARCH = {"tasks": ["chat"], "min_requests": 20, "min_duration_s": 0.4, "precision": 0.04, "growth": 2.0,
          "start_rate_factor": 0.5, "probe_requests": 3, "max_windows": 16, "max_search_s": 120,
          "max_in_flight": 256, "rate_tolerance": 0.1}
SEED = 1234


def _config(search: dict[str, Any] | None = None) -> Any:
    arch = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2,
            "vocab_size": 1000, "max_position_embeddings": 2048}
    return parse_config({
        "device": "cpu", "profile": "current", "modes": ["stream"],
        "frameworks": {"vllm": {"framework": "vllm"}},
        "models": {"standin": {"hf_id": "example/standin", "params": "1M", "architecture": arch}},
        "tasks": {"chat": {"input_tokens": [1, 10], "output_tokens": [TOKENS, TOKENS]}},
        "generation": {"standin": {"chat": {"temperature": 1.0, "top_p": 1.0, "max_tokens": TOKENS}}},
        "run": {"seed": SEED, "warmup_requests": 1, "request_timeout_s": 30},
        "slo": SLOS, "sweeps": {"concurrency": None, "context": None, "capacity": search or SEARCH},
    }, "test-config")


# -- the exact answer ------------------------------------------------------------------------------

def simulated_ttft_ms(offsets_s: list[float], k: int) -> list[float]:
    """TTFT of each arrival at the stand-in: FIFO over k slots, each busy SERVICE_MS."""
    free = [0.0] * k
    out = []
    for a in offsets_s:
        start = max(a, heapq.heappop(free))
        heapq.heappush(free, start + SERVICE_MS / 1000)
        out.append((start - a) * 1000 + PREFILL_MS)
    return out


def window_passes(rate: float, k: int, slo: dict[str, float], cap: CapacitySpec) -> bool:
    ttft = sorted(simulated_ttft_ms(capmod.window_arrivals(rate, cap, SEED), k))
    return percentile(ttft, slo["percentile"]) <= slo["ttft_ms"]  # TPOT is TOKEN_MS, within every limit


def true_capacity(k: int, slo: dict[str, float], cap: CapacitySpec) -> float:
    """The rate at which the search's own windows (same arrivals) stop meeting ``slo``."""
    lo, hi = 0.5, 1000.0 / SERVICE_MS * k * 1.5  # passes at lo; fails beyond saturation
    assert window_passes(lo, k, slo, cap) and not window_passes(hi, k, slo, cap)
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if window_passes(mid, k, slo, cap) else (lo, mid)
    return lo


# -- the search against the stand-in -----------------------------------------------------------------

@pytest.fixture()
def standin(request):
    proc = subprocess.Popen([sys.executable, "-m", "tests.standin_server", "--slots", str(request.param),
                             "--prefill-ms", str(PREFILL_MS), "--token-ms", str(TOKEN_MS)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield request.param, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _workload(path: Path, n: int = 50) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"prompt {i}", "prompt_tokens": 2,
                                        "target_output_tokens": TOKENS}) + "\n" for i in range(n)))
    return path


@pytest.mark.parametrize("standin", [1, 2], indirect=True, ids=["k1", "k2"])
def test_search_finds_the_known_capacity_of_each_slo(standin, tmp_path, capsys):
    k, url = standin
    cfg = _config()
    spec = capacity_sweep_spec(cfg, "vllm", "standin", "chat")
    out = tmp_path / "results" / "sweeps" / "vllm" / "standin" / "capacity-chat.json"
    result = run_cell(spec, _workload(tmp_path / "chat.jsonl"), out, tmp_path / "results",
                      provider=external_server(url))
    cap = result["capacity"]
    windows = result["windows"]
    # Every window that ran is in the file: the probe plus each search window, in order.
    assert [w["window"] for w in windows] == list(range(len(windows)))
    assert windows[0]["phase"] == "probe" and len(windows) == cap["search_windows"] + 1
    assert cap["search_windows"] <= SEARCH["max_windows"]
    for i, w in enumerate(windows[1:], 1):
        assert w["offered_rate_req_s"] > 0 and w["achieved_rate_req_s"] > 0 and w["scheduled_rate_req_s"] > 0
        tolerance = SEARCH["rate_tolerance"]
        assert w["valid"] == (w["achieved_rate_req_s"] >= (1 - tolerance) * w["scheduled_rate_req_s"])
        retry = not windows[i - 1]["valid"] and windows[i - 1]["offered_rate_req_s"] == w["offered_rate_req_s"]
        if not w["valid"] and not retry and i + 1 < len(windows):  # the client fell behind: run it once more
            assert windows[i + 1]["offered_rate_req_s"] == w["offered_rate_req_s"]
        assert set(w["slo"]) == set(SLOS)
    progress = capsys.readouterr().err
    assert progress.count("req/s offered") == cap["search_windows"]  # one progress line per window
    limited = [r["reason"] for r in cap["results"].values() if r["status"] == "client_limited"]
    if limited:  # honest, and no capacity claimed: but this machine cannot test the answer now
        pytest.skip(f"the test client could not keep up on this machine: {limited[0]}")
    for name, slo in SLOS.items():
        res = cap["results"][name]
        truth = true_capacity(k, slo, spec.capacity)
        seen = [(round(w["offered_rate_req_s"], 2), w["slo"][name]["window_met"],
                 w["slo"][name]["at_percentile_ms"], round(w["queue_ms"]["max"], 1)) for w in windows[1:]]
        assert res["status"] == "found", (res, seen)
        assert abs(res["capacity_req_s"] - truth) / truth <= 0.10, (name, res["capacity_req_s"], truth, seen)
        assert res["highest_passing_req_s"] < res["lowest_failing_req_s"]
        assert res["bound_by"] == ["ttft_ms"]  # TPOT is always within its limit here
        assert res["capacity_req_s_per_gpu"] is None  # a CPU run: per server only


# -- the search's rules, on simulated windows (no server) ----------------------------------------------

def _cap(**kw: Any) -> CapacitySpec:
    base = dict(slos=(SLOSpec("a", 50, ttft_ms=100.0),), min_requests=10, min_duration_s=1.0,
                precision=0.05, max_windows=20, max_search_s=1e9)
    base.update(kw)
    return CapacitySpec(**base)


def _window(index: int, rate: float, invalid_reason: str | None, out_tok_s: float,
            verdicts: dict[str, tuple[bool | None, list[str]]]) -> WindowSummary:
    """A search window as the search sees it (rate, validity, each set's window_met and bound_by),
    standing in for a measured one."""
    w = window_summary([], 1.0, 1, True)
    slo = {name: SloVerdict(slo=name, percentile=50, limits={}, requests=0, failed=0, met=0, met_share=None,
                            goodput_req_s=None, goodput_output_tok_s=None, at_percentile_ms={}, supported=True,
                            window_met=met, bound_by=bound_by) for name, (met, bound_by) in verdicts.items()}
    w.update(dict(window=index, offered_rate_req_s=rate, valid=invalid_reason is None, invalid_reason=invalid_reason,
                  throughput_output_tok_s=out_tok_s, slo=slo))
    return w


def _run(cap: CapacitySpec, judge) -> tuple[capmod.SearchState, dict[str, CapacityResult]]:
    """Search with ``judge(rate) -> (valid reason or None, met)`` standing in for a server."""
    state = capmod.SearchState(cap=cap, start_rate=1.0)

    async def run_window(rate: float) -> WindowSummary:
        reason, met = judge(rate)
        w = _window(len(state.windows) + 1, rate, reason, rate * 10,
                    {s.name: (met if reason is None else None, [] if met else ["ttft_ms"])
                     for s in cap.slos})
        state.windows.append(w)
        return w

    results = asyncio.run(capmod.search(state, run_window, lambda r: 1.0))
    return state, results


def test_a_client_that_cannot_keep_up_gives_a_lower_bound_never_a_low_capacity():
    # The server meets the SLO up to 6 req/s, but the client cannot offer more than 3.
    state, res = _run(_cap(), lambda r: ("client delivered too little", None) if r >= 3 else (None, r <= 6))
    r = res["a"]
    assert r.status == "client_limited" and r.capacity_req_s == 2.0  # the highest passing rate: >= 2
    assert "at least" in r.reason and r.lowest_failing_req_s is None
    invalid = [w for w in state.windows if not w.valid]
    assert len(invalid) == 2 and invalid[0].offered_rate_req_s == invalid[1].offered_rate_req_s  # one retry


def test_an_slo_that_no_rate_meets_has_capacity_zero_after_a_bounded_shrink():
    state, res = _run(_cap(), lambda r: (None, False))
    assert res["a"].status == "not_met" and res["a"].capacity_req_s == 0.0
    assert [w.offered_rate_req_s for w in state.windows] == [1.0, 0.5, 0.25, 0.125]


def test_a_bound_that_stops_a_search_before_anything_passed_gives_an_upper_bound_only():
    state, res = _run(_cap(max_windows=2), lambda r: (None, False))
    r = res["a"]
    assert [w.offered_rate_req_s for w in state.windows] == [1.0, 0.5]
    assert r.status == "below_lowest" and r.capacity_req_s == 0.0 and r.lowest_failing_req_s == 0.5
    assert "capacity is below that" in r.reason


def test_bounds_stop_a_search_that_never_breaks_and_say_so():
    state, res = _run(_cap(max_windows=5), lambda r: (None, True))
    assert len(state.windows) == 5 and res["a"].status == "not_broken"
    assert res["a"].capacity_req_s == 16.0 and "window bound" in res["a"].reason


def _verdict(name: str, met: bool, bound_by: list[str]) -> SloVerdict:
    return _window(0, 0.0, None, 0.0, {name: (met, bound_by)}).slo[name]


def _search(state: capmod.SearchState, verdicts, expected_s=lambda r: 1.0, clock: list[float] | None = None):
    """Search with ``verdicts(rate) -> {set: (met, bound_by)}``; ``clock``: each window takes
    10 / rate seconds of a fake monotonic clock (the search's time bound reads it)."""
    async def run_window(rate: float) -> WindowSummary:
        if clock is not None:
            clock[0] += 10 / rate
        w = _window(len(state.windows) + 1, rate, None, rate, verdicts(rate))
        state.windows.append(w)
        return w

    real = capmod.time.monotonic
    if clock is not None:
        state.started = real()
        capmod.time.monotonic = lambda: state.started + clock[0]  # type: ignore[assignment]
    try:
        return asyncio.run(capmod.search(state, run_window, expected_s))
    finally:
        capmod.time.monotonic = real  # type: ignore[assignment]


def test_a_set_the_probe_breaks_at_zero_load_is_not_met_without_a_window():
    """A probe of >= min_requests requests, one at a time, is a window at zero load: a set it
    breaks is not met at any rate, and the search spends its windows on the other sets only."""
    cap = _cap(slos=(SLOSpec("tight", 90, tpot_ms=30.0), SLOSpec("loose", 90, tpot_ms=100.0)))
    state = capmod.SearchState(cap=cap, start_rate=1.0, zero_load_requests=10,
                               zero_load={"tight": _verdict("tight", False, ["tpot_ms"]),
                                          "loose": _verdict("loose", True, [])})
    res = _search(state, lambda r: {"tight": (False, ["tpot_ms"]), "loose": (r <= 3, [] if r <= 3 else ["ttft_ms"])})
    tight, loose = res["tight"], res["loose"]
    assert tight.status == "not_met" and tight.capacity_req_s == 0.0 and tight.bound_by == ["tpot_ms"]
    assert tight.settled_at_zero_load and not loose.settled_at_zero_load
    assert "one request at a time" in tight.reason and "10 requests" in tight.reason
    assert loose.status == "found" and loose.capacity_req_s <= 3 < loose.lowest_failing_req_s
    assert min(w.offered_rate_req_s for w in state.windows) == 1.0  # no shrink was spent on "tight"


def test_a_set_out_of_time_stops_alone_and_the_next_set_goes_on():
    """Windows at low rates are long (min_requests arrivals): when one set's next window would not
    end within max_search_s, that set stops there, and another set's shorter windows still run."""
    cap = _cap(slos=(SLOSpec("tight", 50, ttft_ms=10.0), SLOSpec("loose", 50, ttft_ms=500.0)), max_search_s=100.0)
    state = capmod.SearchState(cap=cap, start_rate=1.0)
    res = _search(state, lambda r: {"tight": (False, ["ttft_ms"]), "loose": (r <= 5, [] if r <= 5 else ["ttft_ms"])},
                  expected_s=lambda r: 10 / r, clock=[0.0])
    # tight: 1.0 (10 s) fails, 0.5 (20 s) fails, 0.25 (40 s) fails; 0.125 (80 s) would end past 100 s.
    assert res["tight"].status == "below_lowest" and "time bound" in res["tight"].reason
    assert "70 s spent, the next window, at 0.125 req/s, needs ~80 s" in res["tight"].reason
    assert res["loose"].status in ("found", "imprecise") and res["loose"].capacity_req_s >= 2.0
    assert any(w.offered_rate_req_s > 1.0 for w in state.windows)  # loose grew after tight stopped


def test_bisection_reaches_the_precision_and_windows_are_shared_between_slo_sets():
    cap = _cap(slos=(SLOSpec("a", 50, ttft_ms=100.0), SLOSpec("b", 50, ttft_ms=300.0)))
    truth = {"a": 5.3, "b": 11.1}

    state = capmod.SearchState(cap=cap, start_rate=1.0)

    async def run_window(rate: float) -> WindowSummary:
        w = _window(len(state.windows) + 1, rate, None, rate,
                    {n: (rate <= t, [] if rate <= t else ["ttft_ms"]) for n, t in truth.items()})
        state.windows.append(w)
        return w

    res = asyncio.run(capmod.search(state, run_window, lambda r: 1.0))
    for name, t in truth.items():
        r = res[name]
        assert r.status == "found" and r.capacity_req_s <= t < r.lowest_failing_req_s
        assert r.lowest_failing_req_s / r.capacity_req_s - 1 <= cap.precision
    # "b" reused the windows run for "a" (1, 2, 4, 8 pass b): fewer windows than two separate searches.
    assert len(state.windows) < 2 * 9


def test_window_arrivals_meet_both_minimums_and_scale_with_the_rate():
    cap = _cap(min_requests=25, min_duration_s=2.0)
    slow, fast = capmod.window_arrivals(5.0, cap, 7), capmod.window_arrivals(50.0, cap, 7)
    assert len(slow) >= 25 and slow[-1] - slow[0] >= 2.0
    assert len(fast) >= 25 and fast[-1] - fast[0] >= 2.0 and len(fast) > len(slow)
    # Common random numbers: the same pattern, compressed tenfold.
    assert fast[:25] == pytest.approx([t / 10 for t in slow[:25]])


def test_gamma_arrivals_have_the_rate_and_the_burstiness_asked_for():
    import statistics

    for burstiness in (0.5, 1.0, 4.0):
        t = arrival_offsets(20000, 10.0, burstiness, seed=3)
        gaps = [b - a for a, b in zip([0.0] + t, t)]
        mean = statistics.fmean(gaps)
        cv2 = statistics.pvariance(gaps) / mean**2  # gamma: squared coefficient of variation = 1 / shape
        assert mean == pytest.approx(0.1, rel=0.03)
        assert cv2 == pytest.approx(1 / burstiness, rel=0.08)
