"""Conversations, scheduled arrivals and the server's prefix-cache figures, against stand-in
servers whose true answers are known exactly: a scripted server that answers each turn with a
text naming the request it answered (so the next turn's history can be checked byte for byte),
and benchmarks/calibration_server.py, a zero-work server in its own process that stamps each
request's arrival with the kernel's receive time (so replay timing is checked from both ends)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from servingbench.runtime import arrivals, conversations
from servingbench.runtime.client import LoadClient
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.metrics import percentile
from servingbench.runtime.prefix_cache import window_hit_rate
from servingbench.runtime.records import PrefixCacheCounters
from servingbench.runtime.spec import CellSpec, GenerationParams, PromptItem, ServerSpec
from servingbench.runtime.workload_metrics import workload_summary
from tests.scripted_server import ScriptedServer, sse

ROOT = Path(__file__).resolve().parent.parent
SERVER = ServerSpec(arm="vllm", framework="vllm", model="m", model_dir="models/m", hf_id="x/m",
                    weights="real", device="cpu", dtype="bfloat16", context_length=2048)
GEN = GenerationParams(temperature=0.7, top_p=0.9, max_tokens=50)


def _spec(workload: str, requests: int, levels=(1,), warmup: int = 0, lateness: float = 0.0) -> CellSpec:
    return CellSpec(server=SERVER, task="t", mode="stream", generation=GEN, requests=requests, warmup_requests=warmup,
                    concurrency_levels=tuple(levels), workload=workload, max_lateness_ms=lateness)


def _turn(conv: str, k: int, think: float = 0.0) -> PromptItem:
    slots = [f"<<a{j}>>" for j in range(1, k)]
    prompt = "".join(f"[{conv} q{j}] {s} " for j, s in zip(range(1, k), slots)) + f"[{conv} q{k}]"
    return PromptItem(id=f"{conv}-t{k}", prompt=prompt, prompt_tokens=10 * k, target_output_tokens=3,
                      extra={"session": conv, "turn": k, "think_time_s": think, "answer_slots": slots,
                             "answer_strip": True})


def _echo_server(fail_prompt_with: str | None = None) -> ScriptedServer:
    """Answers each request with ' reply(<last question>) ' (spaces the template strips), usage from
    the prompt's word count; HTTP 500 for a prompt ending in ``fail_prompt_with``."""

    def route(r):
        prompt = json.loads(r["body"])["prompt"]
        last = prompt.rsplit("[", 1)[1].rstrip("]")
        if fail_prompt_with and prompt.endswith(fail_prompt_with):
            return 500, {"Content-Type": "application/json", "Content-Length": "2"}, [(0, b"{}")]
        text = f" reply({last}) "
        body = {"choices": [{"index": 0, "text": text, "finish_reason": "length"}]}
        usage = {"choices": [], "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 3}}
        return 200, {"Content-Type": "text/event-stream"}, sse(json.dumps(body), json.dumps(usage), "[DONE]")

    return ScriptedServer({"/v1/completions": route})


def _run(url: str, plan, keep_text: bool = True, warm=None):
    """One window on a fresh client, after its warm-up window if any (as servingbench.runtime.cell runs them)."""
    async def go():
        async with LoadClient(url, get_adapter("vllm"), SERVER, GEN, "forced", 10.0, keep_text=keep_text) as c:
            if warm is not None:
                await c.run_window(warm)
            return await c.run_window(plan)
    return asyncio.run(go())


# -- conversations ------------------------------------------------------------------------------------
def test_each_turn_carries_the_servers_own_earlier_answers():
    items = [_turn(c, k, think=0.05) for c in ("A", "B", "C") for k in (1, 2, 3)]
    plan = conversations.plan_windows(_spec("multiturn", requests=3, levels=(2,)), items)[0][0]
    with _echo_server() as s:
        t0 = time.monotonic()
        recs, _ = _run(s.url, plan)
        elapsed = time.monotonic() - t0
        sent = [json.loads(body)["prompt"] for _, body in s.requests]
    assert len(recs) == 9 and all(r.ok for r in recs)
    # Turn 3 of A holds A's two answers, stripped as the template would, in place of the slots.
    assert "[A q1] reply(A q1) [A q2] reply(A q2) [A q3]" in sent
    assert not any("<<a" in p for p in sent)
    by_id = {r.prompt_id: r for r in recs}
    assert by_id["B-t2"].output_text == " reply(B q2) " and by_id["B-t2"].session == "B" and by_id["B-t2"].turn == 2
    assert by_id["C-t3"].prompt_tokens == len(sent[[i for i, p in enumerate(sent) if p.endswith("[C q3]")][0]].split())
    # Turns of one conversation in order, each after the previous answer and its think time.
    for conv in "ABC":
        mine = sorted((r for r in recs if r.session == conv), key=lambda r: r.turn)
        assert [r.turn for r in mine] == [1, 2, 3]
        assert all(b.dispatch_ns - a.dispatch_ns >= 50e6 for a, b in zip(mine, mine[1:]))
    assert elapsed >= 0.1  # two think times of 50 ms at least, in sequence


def test_a_failed_turn_ends_its_conversation_and_is_counted():
    items = [_turn(c, k) for c in ("A", "B") for k in (1, 2, 3)]
    plan = conversations.plan_windows(_spec("multiturn", requests=2), items)[0][0]
    with _echo_server(fail_prompt_with="[A q2]") as s:
        recs, _ = _run(s.url, plan)
        n_sent = len(s.requests)
    by_id = {r.prompt_id: r for r in recs}
    assert by_id["A-t2"].error.startswith("HTTP 500")
    assert by_id["A-t3"].error == conversations.NOT_SENT and by_id["A-t3"].dispatch_ns == 0
    assert all(by_id[f"B-t{k}"].ok for k in (1, 2, 3))
    assert len(recs) == 6 and n_sent == 5  # nothing dropped; the unsent turn is a failed record
    summary = workload_summary(recs, None, None)
    assert [(t.turn, t.requests, t.completed) for t in summary["per_turn"]] == [(1, 2, 2), (2, 2, 1), (3, 2, 1)]


def test_conversation_windows_take_whole_conversations_in_file_order():
    items = [_turn(f"c{i}", k) for i in range(7) for k in (1, 2)]
    plans = conversations.plan_windows(_spec("multiturn", requests=2, levels=(1, 2), warmup=1), items)
    (m1, w1), (m2, w2) = plans
    assert [i.id for i in w1.items] == ["c0-t1", "c0-t2"]
    assert [i.extra["session"] for i in m1.items] == ["c1", "c1", "c2", "c2"]
    assert [i.extra["session"] for i in w2.items] == ["c3", "c3", "c4", "c4"]  # one wave at concurrency 2
    assert {i.extra["session"] for i in m2.items} == {"c5", "c6"}
    # run.trials: one warm-up per level, then each trial's conversations (as the builder lays them out).
    spec = dataclasses.replace(_spec("multiturn", requests=2, levels=(1,), warmup=1), trials=2)
    (t0, warm), (t1, none) = conversations.plan_windows(spec, items)
    assert none is None and (t0.trial, t1.trial, t0.window, t1.window) == (0, 1, 0, 1)
    assert [i.extra["session"] for i in warm.items] == ["c0", "c0"]
    assert [i.extra["session"] for i in t1.items] == ["c3", "c3", "c4", "c4"]


# -- scheduled arrivals -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibration_server():
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "calibration_server.py"), "--port", "0",
                             "--ttft-ms", "2", "--interval-ms", "1"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def _realtime():
    """This thread at real-time priority (SCHED_FIFO) where allowed: on a machine shared with
    other work, the OS's scheduling delays (tens of ms at a load of 20 on 2 cores, measured)
    would otherwise hide the replay's own timing error, which is what the test checks. Where it
    is not allowed the test runs at normal priority, and says so if it fails."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        yield "SCHED_FIFO"
    except (OSError, AttributeError):
        yield "normal priority"
        return
    finally:
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (OSError, AttributeError):
            pass


def _trace_items(offsets_ms: list[float], warmup: int = 0) -> list[PromptItem]:
    warm = [PromptItem(id=f"w{i}", prompt=f"warm-up {i}", prompt_tokens=2, target_output_tokens=4,
                       extra={"warmup": True}) for i in range(warmup)]
    return warm + [PromptItem(id=f"r{i}", prompt=f"request {i}", prompt_tokens=2, target_output_tokens=4,
                              extra={"offset_ms": o, "session": f"s{i % 3}"}) for i, o in enumerate(offsets_ms)]


def test_replay_sends_each_request_at_its_offset(calibration_server):
    """Known schedule: 120 requests over 3 s at loopback rates, bursts of 4 at the same instant,
    after a warm-up as in a cell. Lateness is measured by the client (dispatch - due) and checked
    by the server (kernel receive stamp - due, same clock): p99 within 1 ms both ways."""
    offsets = [i * 100.0 + 2.5 * j for i in range(30) for j in range(4)]
    offsets[4::8] = [o + 37.0 for o in offsets[4::8]]  # some off-grid arrivals
    items = _trace_items(offsets, warmup=4)
    plan, warm = arrivals.plan_windows(_spec("trace", requests=len(offsets), levels=(64,), warmup=4), items)[0]
    assert [i.id for i in warm.items] == ["w0", "w1", "w2", "w3"] and len(plan.items) == 120
    httpx.get(calibration_server + "/calibration/records", trust_env=False)  # clear
    with _realtime() as priority:
        recs, _ = _run(calibration_server, plan, keep_text=False, warm=warm)
    server = httpx.get(calibration_server + "/calibration/records", trust_env=False).json()
    assert len(recs) == 120 and all(r.ok for r in recs)
    late = sorted(r.lateness_ms for r in recs)
    assert percentile(late, 99) <= 1.0, f"{priority}: {late[-5:]}"
    assert min(late) >= 0
    # The scheduled offsets are the trace's, from one start: the differences match exactly.
    by_id = {r.prompt_id: r for r in recs}
    start_ns = by_id["r0"].dispatch_ns - by_id["r0"].lateness_ms * 1e6 - offsets[0] * 1e6
    for i, o in enumerate(offsets):
        assert by_id[f"r{i}"].scheduled_ms == pytest.approx(o, abs=1e-6)
    if server["kernel_stamps"]:
        records = server["records"]  # a list of {"key": prompt, "arrival_ns", ...} (older: keyed by prompt)
        by_prompt = {r["key"]: r for r in records} if isinstance(records, list) else records
        arrived = sorted((by_prompt[f"request {i}"]["arrival_ns"] - start_ns) / 1e6 - o
                         for i, o in enumerate(offsets))
        assert percentile(arrived, 99) <= 1.0, f"{priority}: {arrived[-5:]}"
    summary = workload_summary(recs, None, None)["arrivals"]
    assert summary.scheduled == summary.dispatched == 120
    assert summary.scheduled_span_s == pytest.approx((max(offsets) - min(offsets)) / 1000)
    assert arrivals.behind(summary, 10.0) is None


def test_any_arrival_process_can_be_replayed_from_its_offsets(calibration_server):
    """Offsets drawn elsewhere (here: exponential gaps, as a Poisson process) go through the same
    replay and get the same records."""
    import random

    rng, t, offsets = random.Random(3), 0.0, []
    for _ in range(40):
        t += rng.expovariate(1 / 15.0)
        offsets.append(t)
    items = _trace_items([], warmup=2) + arrivals.scheduled(_trace_items([0.0] * 40), offsets)
    plan, warm = arrivals.plan_windows(_spec("trace", requests=40, levels=(64,), warmup=2), items)[0]
    with _realtime():
        recs, _ = _run(calibration_server, plan, keep_text=False, warm=warm)
    assert sorted(r.scheduled_ms for r in recs) == pytest.approx(offsets)
    assert percentile(sorted(r.lateness_ms for r in recs), 99) <= 1.0
    with pytest.raises(ValueError, match="3 offsets for 40 requests"):
        arrivals.scheduled(_trace_items([0.0] * 40), [1.0, 2.0, 3.0])


def test_gamma_arrivals_record_achieved_against_scheduled(calibration_server):
    """The open loop's gamma (and Poisson) arrivals (servingbench.runtime.client.arrival_offsets) get the
    same per-request scheduled offsets and lateness, and the window its arrival figures."""
    from servingbench.runtime.client import WindowPlan, arrival_offsets

    items = _trace_items([0.0] * 30)
    plan = WindowPlan(items=items, concurrency=64, stream=True, request_rate=40.0, burstiness=0.5, seed=9)
    recs, _ = _run(calibration_server, plan, keep_text=False)
    want = [o * 1000 for o in arrival_offsets(30, 40.0, 0.5, 9)]
    assert sorted(r.scheduled_ms for r in recs) == pytest.approx(want)
    assert all(r.lateness_ms is not None and r.lateness_ms >= 0 for r in recs)
    summary = workload_summary(recs, None, None)["arrivals"]
    assert summary.scheduled == summary.dispatched == 30
    assert summary.scheduled_span_s == pytest.approx((want[-1] - want[0]) / 1000)


def test_a_client_that_falls_behind_fails_the_cell(calibration_server):
    """One slot in flight and 20 arrivals 1 ms apart to a server that answers in ~10 ms: the
    client cannot keep the schedule, and the window says so."""
    items = _trace_items([float(i) for i in range(20)])
    plan = arrivals.plan_windows(_spec("trace", requests=20, levels=(1,)), items)[0][0]
    recs, _ = _run(calibration_server, plan, keep_text=False)
    summary = workload_summary(recs, None, None)["arrivals"]
    assert summary.lateness_ms.p99 > 50
    why = arrivals.behind(summary, 10.0)
    assert why and "fell behind" in why and "10 ms" in why


# -- the server's prefix cache -------------------------------------------------------------------------
METRICS = """# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1200.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 800.0
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e9
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 300.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 100.0
vllm:external_prefix_cache_hits_total{engine="0",model_name="m"} 999.0
"""


def test_llamacpp_per_request_cache_figures_give_the_servers_hit_rate():
    from servingbench.runtime.records import RequestRecord

    recs = [RequestRecord(prompt_id="a", server_timing={"cache_n": 0.0, "prompt_n": 400.0}),
            RequestRecord(prompt_id="b", server_timing={"cache_n": 384.0, "prompt_n": 16.0}),
            RequestRecord(prompt_id="c", error="HTTP 500", server_timing={"cache_n": 999.0, "prompt_n": 1.0})]
    assert workload_summary(recs, None, None)["server_prefix_cache"] == PrefixCacheCounters(
        queries_tokens=800.0, hits_tokens=384.0, hit_rate=0.48)
    assert "server_prefix_cache" not in workload_summary(recs[:0], None, None)


def test_transformers_serve_reports_the_prefix_sharing_it_runs_with():
    adapter = get_adapter("transformers-serve")
    cb = dataclasses.replace(SERVER, arm="transformers-serve", server_args=("--continuous-batching",), prefix_caching=True)
    assert adapter.requested_settings(cb) == {"prefix_caching": True}
    assert adapter.requested_settings(dataclasses.replace(cb, server_args=())) == {}
    log = "x\nservingbench: continuous batching prefix sharing (allow_block_sharing) off\ny\n"
    assert adapter.effective_settings(cb, log, None)["prefix_caching"]["value"] is False
    assert adapter.effective_settings(cb, "no such line", None) == {}


def test_prefix_cache_counters_are_summed_over_engines_and_differenced_per_window():
    parse_prefix_cache_totals = get_adapter("vllm").prefix_cache_totals
    before = parse_prefix_cache_totals(METRICS)
    assert before == {"queries": 2000.0, "hits": 400.0}
    after = parse_prefix_cache_totals(METRICS.replace("1200.0", "2200.0").replace("300.0", "1050.0"))
    assert window_hit_rate(before, after) == PrefixCacheCounters(queries_tokens=1000.0, hits_tokens=750.0, hit_rate=0.75)
    assert window_hit_rate(after, before) is None  # counters went back: a restarted server
    assert parse_prefix_cache_totals("vllm:num_requests_running 0\n") is None
    assert get_adapter("sglang").prefix_cache_totals(METRICS) is None  # counts none: not vLLM's names
