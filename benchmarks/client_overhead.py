"""How much does the load client cost, and how right is its clock? (issue "The measuring instrument")

Drives ``calibration_server.py`` (a zero-work server pinned to one core) with each client on
the other core, in the same run, level by level, one client after the other:

- ``servingbench``: our ``LoadClient`` with the vLLM adapter, closed loop, as a cell uses it;
- ``vllm``: vLLM's own serving-benchmark request function
  (``vllm.benchmarks.lib.endpoint_request_func.async_request_openai_completions``) with an
  aiohttp session and semaphore set up as ``vllm.benchmarks.serve.benchmark`` does;
- ``guidellm``, ``aiperf`` (optional peers): the tools' own CLIs, each from its own
  environment under ``.bench-envs/`` (``peers.py``).

The two in-process clients run in worker processes of this script; each level starts with an
uncounted warm-up (``level`` requests, which opens the connections), then the measured window.
The peers run their own warm-up. The server records each request's arrival and each event's
send time (see calibration_server.py for the clocks). Every rate is the server's
(``calibration_stats.server_stamp_rate``), beside the tool's self-reported one; the TTFT error
(client TTFT - server TTFT, clock-free) is matched request by request; the in-process clients
also get CPU seconds (``getrusage`` around the window), event lag (client receive - server
send, shared CLOCK_MONOTONIC) and inter-token gap error. Around each level ``quiet.py``
checks that no other work held the two cores; an in-process level that was not quiet is run
once more and the quieter attempt kept, a peer's is marked.

Usage: ``.venv/bin/python benchmarks/client_overhead.py`` (8 minutes on a busy 2-core machine;
``--clients servingbench,vllm`` for the in-process clients alone); ``--render FILE`` prints
RESULTS.md's tables from a results/calibration.json. Keys: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import peers
import quiet
from calibration_stats import match_requests, pct, window_figures
from peers import PEERS

REPO = Path(__file__).resolve().parent.parent
RESULT_TAG = "@@RESULT "

# name: (ttft_ms, interval_ms, tokens per request)
PROFILES = {
    # A decode-like pace: one event per stream every 20 ms. Offered events/s = level * 50.
    "paced": (20.0, 20.0, 16),
    # No pacing at all: the server writes every event at once; whatever the client reaches is
    # its ceiling (the server is far cheaper per event, and its CPU is reported to prove it).
    "burst": (0.0, 0.0, 16),
}


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def clock_offset_ns() -> int:
    """CLOCK_MONOTONIC minus perf_counter_ns (0 on Linux, where they are one clock): the
    midpoint of the tightest of a few perf/mono/perf triples."""
    best = None
    for _ in range(20):
        a = time.perf_counter_ns()
        b = now_ns()
        c = time.perf_counter_ns()
        if best is None or c - a < best[0]:
            best = (c - a, b - (a + c) // 2)
    return best[1]


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def runq_wait_s() -> float:
    """Seconds this process's threads spent runnable but waiting for a CPU (/proc schedstat):
    the time other work on the machine took from the client."""
    total = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[1])
    except OSError:
        return 0.0
    return total / 1e9


class Meter:
    """Client CPU, run-queue wait and the busy time of the client's core around one window."""

    def __init__(self) -> None:
        cpus = os.sched_getaffinity(0)
        self.core = next(iter(cpus)) if len(cpus) == 1 else None

    def __enter__(self) -> "Meter":
        self.c0, self.w0, self.b0, self.t0 = cpu_s(), runq_wait_s(), core_busy(self.core), now_ns()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.c1, self.w1, self.b1, self.t1 = cpu_s(), runq_wait_s(), core_busy(self.core), now_ns()

    def figures(self) -> dict[str, Any]:
        wall = (self.t1 - self.t0) / 1e9
        cpu = self.c1 - self.c0
        other = None
        if self.b0 is not None:
            other = max(0.0, (self.b1 - self.b0) - cpu) / wall
        return {"wall_s": wall, "cpu_s": cpu, "runq_wait_s": self.w1 - self.w0, "client_core_other_util": other}


def core_busy(cpu: int | None) -> float | None:
    """Busy CPU seconds of one core since boot (all processes), from psutil."""
    if cpu is None:
        return None
    import psutil

    t = psutil.cpu_times(percpu=True)[cpu]
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def mark(url: str) -> float:
    """Between warm-up and window: drop the server's warm-up records; its CPU seconds now."""
    return http(url + "/calibration/records")["cpu_s"]


def requests_for(level: int, profile: str) -> int:
    """Enough for stable figures, bounded in time: paced windows last about 2.6 s where the
    client keeps up (c=1: 32 requests, about 10 s), burst windows 0.4-4 s."""
    if profile == "burst":
        return max(2000, 8 * level)
    return max(32, 8 * level)


# ---- workers: one process per client, pinned -------------------------------------------------
async def run_servingbench(url: str, level: int, n: int, tokens: int, tag: str, warm: bool,
                           variant: str = "") -> dict[str, Any]:
    """variant "": the default transport; "httpx": the httpx path; "read": http1 with
    receive stamps taken after the read call instead of the kernel's."""
    from servingbench.runtime import http1
    from servingbench.runtime.client import LoadClient, WindowPlan
    from servingbench.runtime.frameworks import get_adapter
    from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec

    server = ServerSpec(arm="vllm", framework="vllm", model="calibration", model_dir="calibration", hf_id="",
                        weights="dummy", device="cpu", dtype="auto", context_length=4096, profile="current")
    gen = GenerationParams(temperature=0.0, top_p=1.0, max_tokens=tokens)
    items = [PromptItem(id=f"{tag}-{i}", prompt=f"{tag}-{i}", prompt_tokens=1, target_output_tokens=tokens)
             for i in range(n)]
    warm_items = [PromptItem(id=f"{tag}-w{i}", prompt=f"{tag}-w{i}", prompt_tokens=1, target_output_tokens=2)
                  for i in range(level)]
    async with LoadClient(url, get_adapter("vllm"), server, gen, "forced", timeout_s=120.0,
                          max_connections=level, transport="httpx" if variant == "httpx" else "auto") as client:
        if variant == "read":
            client._pool = http1.Pool(url, level, kernel_stamps=False)
        w0 = now_ns()
        if warm:
            await client.run_window(WindowPlan(items=warm_items, concurrency=level, stream=True, warmup=True))
        warm_s = (now_ns() - w0) / 1e9
        server_cpu0 = mark(url)
        with Meter() as meter:
            recs, window_s = await client.run_window(WindowPlan(items=items, concurrency=level, stream=True))
    off = clock_offset_ns()  # perf_counter_ns is CLOCK_MONOTONIC on Linux; checked anyway
    out = []
    for r in recs:
        d = r.dispatch_ns + off
        ev = [d + int(round(o * 1e6)) for o in r.event_offsets_ms]
        out.append({"p": r.prompt_id, "ok": r.ok, "err": r.error, "d": d, "ev": ev,
                    "ttft_ms": r.event_offsets_ms[0] if r.event_offsets_ms else None,
                    "start_ns": d, "end_ns": d + int(round(r.e2e_ms * 1e6)) if r.e2e_ms is not None else None})
    # Self-reported: what a cell reports (throughput_req_s = completed / run_window's wall time).
    done = sum(1 for r in recs if r.ok)
    return {"window_s": window_s, "self_window_s": window_s, "self_req_per_s": done / window_s,
            "warm_s": warm_s, "server_cpu0_s": server_cpu0, **meter.figures(),
            "clock_offset_ns": off, "stamps": client.stamps,
            "requests": out}


async def run_vllm(url: str, level: int, n: int, tokens: int, tag: str, warm: bool) -> dict[str, Any]:
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncInput, async_request_openai_completions

    api = url + "/v1/completions"

    def inp(prompt: str, out_len: int) -> RequestFuncInput:
        return RequestFuncInput(prompt=prompt, api_url=api, prompt_len=1, output_len=out_len,
                                model="calibration", ignore_eos=True)

    # As vllm.benchmarks.serve.benchmark builds it (trust_env off: loopback only, never a proxy).
    connector = aiohttp.TCPConnector(limit=level, limit_per_host=level, ttl_dns_cache=300, use_dns_cache=True,
                                     keepalive_timeout=60, enable_cleanup_closed=True, force_close=False,
                                     ssl=False)
    session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                    timeout=aiohttp.ClientTimeout(total=6 * 60 * 60))
    sem = asyncio.Semaphore(level)

    async def limited(x: RequestFuncInput):
        async with sem:
            return await async_request_openai_completions(request_func_input=x, session=session, pbar=None)

    try:
        w0 = now_ns()
        if warm:
            await asyncio.gather(*(asyncio.create_task(limited(inp(f"{tag}-w{i}", 2))) for i in range(level)))
        warm_s = (now_ns() - w0) / 1e9
        inputs = [inp(f"{tag}-{i}", tokens) for i in range(n)]
        server_cpu0 = mark(url)
        with Meter() as meter:
            # vllm.benchmarks.serve.benchmark starts its clock here, then creates one task per
            # request before the first one runs (get_request does not yield at an infinite
            # rate): its "Request throughput" includes creating every task.
            p0 = time.perf_counter()
            outs = await asyncio.gather(*(asyncio.create_task(limited(x)) for x in inputs))
            p1 = time.perf_counter()
    finally:
        await session.close()
    off = clock_offset_ns()
    out = []
    for x, o in zip(inputs, outs):
        d = int(round(o.start_time * 1e9)) + off
        ev: list[int] = []
        if o.success:
            t = o.start_time + o.ttft
            ev.append(int(round(t * 1e9)) + off)
            for g in o.itl:
                t += g
                ev.append(int(round(t * 1e9)) + off)
        out.append({"p": x.prompt, "ok": o.success, "err": (o.error or "")[-200:] or None, "d": d, "ev": ev,
                    "ttft_ms": o.ttft * 1e3 if o.success else None, "start_ns": d,
                    "end_ns": d + int(round(o.latency * 1e9)) if o.success else None})
    done = sum(1 for o in outs if o.success)
    first_send = min(o.start_time for o in outs)
    return {"window_s": p1 - first_send, "self_window_s": p1 - p0, "self_req_per_s": done / (p1 - p0),
            "warm_s": warm_s, "server_cpu0_s": server_cpu0, **meter.figures(),
            "clock_offset_ns": off, "stamps": "read", "requests": out}


WORKERS = {
    "servingbench": run_servingbench,
    "servingbench-httpx": lambda *a: run_servingbench(*a, variant="httpx"),
    "servingbench-read": lambda *a: run_servingbench(*a, variant="read"),
    "vllm": run_vllm,
}


def raise_priority(sched: str) -> str:
    """Ask for the scheduling class the measurement runs in; returns what it got.

    "fifo": SCHED_FIFO priority 1 (a woken client or server preempts ordinary work on its
    core at once; the kernel still leaves ordinary work 5% of each core); "nice": nice -10;
    "none": as started. Both need privilege; without it the process stays as started."""
    if sched == "fifo":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return "fifo"
        except (OSError, AttributeError):
            sched = "nice"
    if sched == "nice":
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
            return "nice"
        except OSError:
            pass
    return "none"


def worker_main(kind: str, url: str, cpu: int | None, sched: str) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    got = raise_priority(sched)
    fn = WORKERS[kind]
    if kind == "vllm":  # import once, before READY (vllm's import takes seconds)
        import vllm.benchmarks.lib.endpoint_request_func  # noqa: F401
    else:
        import servingbench.runtime.client  # noqa: F401
    print("READY", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") == "quit":
            break
        c0 = cpu_s()
        res = asyncio.run(fn(url, cmd["level"], cmd["n"], cmd["tokens"], cmd["tag"], cmd.get("warm", True)))
        res["cmd_cpu_s"] = cpu_s() - c0  # warm-up and window: this process's share of the quiet check
        res["sched"] = got
        print(RESULT_TAG + json.dumps(res), flush=True)


class Worker:
    def __init__(self, kind: str, url: str, cpu: int | None, env: dict[str, str], sched: str) -> None:
        argv = [sys.executable, __file__, "--worker", kind, "--url", url, "--sched", sched]
        if cpu is not None:
            argv += ["--worker-cpu", str(cpu)]
        self.kind = kind
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=REPO, env=env)
        self._read_until("READY")

    def _read_until(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix):]
        raise RuntimeError(f"worker {self.kind} exited (rc={self.proc.wait()})")

    def run(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._read_until(RESULT_TAG))

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
            self.proc.wait()


# ---- orchestrator ------------------------------------------------------------------------------
SELF_RATE = {
    "servingbench": "a cell's throughput_req_s: completed / LoadClient.run_window's wall time (starts "
                    "before the first request, c workers, no task per request)",
    "vllm": "vllm bench serve's 'Request throughput': completed / benchmark_duration, whose clock starts "
            "before one task per request is created (all before the first request at an infinite rate)",
    **{name: peer.self_rate for name, peer in PEERS.items()},
}
SELF_RATE["servingbench-httpx"] = SELF_RATE["servingbench-read"] = SELF_RATE["servingbench"]


def http(url: str, data: dict | None = None) -> Any:
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def shared_clock_figures(client: list[dict[str, Any]], server: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures that need the client's stamps on CLOCK_MONOTONIC (the in-process clients): event
    lag (client receive - server send), request path (server arrival - client dispatch), gap
    error (client inter-event gap - server gap)."""
    lag, first_lag, req_path, gap_err = [], [], [], []
    mismatched = 0
    for c, s in match_requests(client, server)[0]:
        ev, snd = c.get("ev") or [], s["send_ns"]
        if not c.get("ok") or not ev or not snd:
            continue
        if len(ev) != len(snd):
            mismatched += 1
            continue
        req_path.append((s["arrival_ns"] - c["d"]) / 1e6)
        first_lag.append((ev[0] - snd[0]) / 1e6)
        lag.extend((e - t) / 1e6 for e, t in zip(ev, snd))
        gap_err.extend(((ev[k] - ev[k - 1]) - (snd[k] - snd[k - 1])) / 1e6 for k in range(1, len(ev)))
    return {
        **{f"{name}_p{q}": pct(vals, q) for name, vals in (
            ("event_lag_ms", lag), ("first_event_lag_ms", first_lag), ("request_path_ms", req_path),
            ("gap_error_ms", gap_err)) for q in (50, 99)},
        "event_lag_ms_min": min(lag) if lag else None,
        "gap_error_abs_ms_p99": pct([abs(g) for g in gap_err], 99),
        "event_count_mismatched": mismatched,
    }


def offered(profile: str, level: int) -> float | None:
    ttft, interval, tokens = PROFILES[profile]
    per_req_s = (ttft + (tokens - 1) * interval) / 1000.0
    return level / per_req_s if per_req_s > 0 else None


def summarise(res: dict[str, Any], server: list[dict[str, Any]], level: int, profile: str,
              server_cpu_s: float) -> dict[str, Any]:
    """One in-process client's window: server-stamp figures, its own figures and its CPU."""
    fig = window_figures(res["requests"], server)
    n = fig["requests"]
    events = sum(len(c.get("ev") or []) for c in res["requests"] if c.get("ok"))
    return {
        "profile": profile, "concurrency": level, **fig,
        "errors": sorted({(r["err"] or "")[:120] for r in res["requests"] if not r["ok"]})[:3],
        "self_req_per_s": res["self_req_per_s"], "self_window_s": res["self_window_s"],
        "harness_window_s": res["window_s"],
        "offered_req_per_s": offered(profile, level),
        "client_cpu_s": res["cpu_s"], "client_cpu_util": res["cpu_s"] / res["wall_s"], "client_cpu_scope": "window",
        "client_cpu_us_per_request": 1e6 * res["cpu_s"] / max(n, 1),
        "client_cpu_us_per_event": 1e6 * res["cpu_s"] / max(events, 1),
        "req_per_cpu_s": fig["completed"] / res["cpu_s"] if res["cpu_s"] > 0 else None,
        "server_cpu_util": server_cpu_s / res["wall_s"],
        "client_runq_wait_util": res["runq_wait_s"] / res["wall_s"],
        "client_core_other_util": res["client_core_other_util"],
        "clock_offset_ns": res["clock_offset_ns"],
        "stamps": res.get("stamps", "read"),
        **shared_clock_figures(res["requests"], server),
    }


class Bench:
    """The run's server, client processes and peers; measures one unit (client x profile x level)."""

    def __init__(self, args: argparse.Namespace, url: str, server_cpu: int, client_cpu: int | None,
                 workers: dict[str, Worker], peer_clis: dict[str, Path], tokenizer: Path | None) -> None:
        self.args, self.url = args, url
        self.server_cpu, self.client_cpu = server_cpu, client_cpu
        self.workers, self.peer_clis, self.tokenizer = workers, peer_clis, tokenizer
        self.cores = [c for c in (server_cpu, client_cpu) if c is not None]

    def unit(self, kind: str, profile: str, level: int, n: int, attempt: int) -> dict[str, Any]:
        """One measurement with its quiet-machine readings (probe, window, probe)."""
        pre = quiet.probe(self.args.probe_s)
        srv0 = http(self.url + "/calibration/records")["cpu_s"]  # clears the records too
        me0 = cpu_s()
        a = quiet.sample()
        tag = f"{kind}-{profile}-{level}-a{attempt}"
        if kind in self.peer_clis:
            row, tool_cpu, runq = self._peer(kind, profile, level, n, tag)
        else:
            row, tool_cpu, runq = self._inproc(kind, profile, level, n, tag)
        b = quiet.sample()
        srv_cpu = row.pop("_server_cpu_total_s")
        own = {self.server_cpu: srv_cpu - srv0 + cpu_s() - me0}
        if self.client_cpu is not None:
            own[self.client_cpu] = own.get(self.client_cpu, 0.0) + tool_cpu
        window = quiet.interval_shares(a, b, own)
        post = quiet.probe(self.args.probe_s)
        row["quiet"] = quiet.assess([pre, post], window, self.cores, runq)
        return row

    def _inproc(self, kind: str, profile: str, level: int, n: int, tag: str):
        tokens = PROFILES[profile][2]
        res = self.workers[kind].run(level=level, n=n, tokens=tokens, tag=tag)
        got = http(self.url + "/calibration/records")
        row = {"client": kind, **summarise(res, got["records"], level, profile, got["cpu_s"] - res["server_cpu0_s"])}
        row["sched"] = res["sched"]
        row["launch"] = f"in-process, core {self.client_cpu}, {res['sched']}"
        row["server_kernel_stamps"] = got["kernel_stamps"]
        row["_server_cpu_total_s"] = got["cpu_s"]
        runq = res["runq_wait_s"] / res["wall_s"] if res["wall_s"] > 0 else None
        return row, res["cmd_cpu_s"], runq

    def _peer(self, kind: str, profile: str, level: int, n: int, tag: str):
        tokens = PROFILES[profile][2]
        work = peers.temp_workdir(self.args.peer_root / "runs", tag)
        argv = peers.command(kind, self.peer_clis[kind], self.url, level, n, tokens, work, self.tokenizer)
        cpus = {self.client_cpu} if self.client_cpu is not None else None
        sched = self.args.peer_sched[kind]
        ran = peers.run(kind, argv, work, cpus, sched, self.args.peer_timeout_s)
        got = http(self.url + "/calibration/records")
        row: dict[str, Any] = {"client": kind, "profile": profile, "concurrency": level,
                               "offered_req_per_s": offered(profile, level),
                               "launch": peers.launch_prefix(cpus, sched) or "as started",
                               "sched": sched, "server_kernel_stamps": got["kernel_stamps"],
                               "client_cpu_s": ran["cpu_s"], "client_cpu_scope": "whole run (start-up included)",
                               "tool_wall_s": ran["wall_s"], "command": shlex.join(argv),
                               "_server_cpu_total_s": got["cpu_s"]}
        try:
            if ran["rc"] != 0:
                raise RuntimeError(f"exit status {ran['rc']}")
            parsed = peers.parse(kind, work)
        except Exception as e:  # a failed tool run is a row that says so, not a lost run
            row.update({"requests": n, "completed": 0, "failed": n, "unmatched": 0,
                        "errors": [f"{kind}: {e}"] + ran["tail"][-3:]})
            return row, ran["cpu_s"], None
        fig = window_figures(parsed["requests"], got["records"])
        row.update(fig)
        row.update({"self_req_per_s": parsed["self_req_per_s"], "self_window_s": parsed["self_window_s"],
                    "errors": sorted({(r["err"] or "")[:120] for r in parsed["requests"] if not r["ok"]})[:3]})
        if not self.args.keep_peer_runs:
            shutil.rmtree(work, ignore_errors=True)
        return row, ran["cpu_s"], None


def measure(bench: Bench, kind: str, profile: str, level: int, n: int, retries: int) -> dict[str, Any]:
    """A unit, repeated (at most ``retries`` times more) while the machine was not quiet; the
    published attempt is the first quiet one, else the quietest, marked."""
    attempts = []
    for attempt in range(1 + retries):
        row = bench.unit(kind, profile, level, n, attempt)
        attempts.append(row)
        if row["quiet"]["quiet"] or row.get("completed", 0) == 0:
            break
    best = quiet.quietest(attempts)
    best["attempts"] = len(attempts)
    best["attempts_quiet"] = [a["quiet"]["quiet"] for a in attempts]
    return best


COLS = [("server_req_per_s", "srv req/s", "{:9.0f}"), ("self_req_per_s", "self req/s", "{:10.0f}"),
        ("self_over_server", "self/srv", "{:8.2f}"), ("ttft_error_ms_p50", "ttftE50", "{:7.2f}"),
        ("ttft_error_ms_p99", "ttftE99", "{:7.2f}"), ("server_events_per_s", "srv ev/s", "{:8.0f}"),
        ("client_cpu_us_per_request", "us/req", "{:7.0f}"), ("event_lag_ms_p99", "lag99", "{:7.2f}"),
        ("server_cpu_util", "srv", "{:5.0%}"), ("client_runq_wait_util", "wait", "{:5.0%}")]
# Ratios: client / reference, all from server stamps (rates) or clock-free differences (TTFT
# error). Rates: > 1 is better; costs and errors: < 1 is better.
RATIO_KEYS = [("server_req_per_s", "srv req/s"), ("server_events_per_s", "srv ev/s"),
              ("client_cpu_us_per_request", "cpu/req"), ("ttft_error_ms_p99", "ttftE99")]


def fmt(fmtstr: str, v: Any) -> str:
    if v is None:
        m = re.match(r"\{:[^0-9.]*(\d*)", fmtstr)
        return "-".rjust(int(m.group(1) or 1) if m else 1)
    return fmtstr.format(v)


def with_derived(r: dict[str, Any]) -> dict[str, Any]:
    s, q = r.get("server_req_per_s"), r.get("self_req_per_s")
    return {**r, "self_over_server": q / s if s and q is not None else None}


def quiet_mark(r: dict[str, Any]) -> str:
    q = r.get("quiet") or {}
    if q.get("quiet"):
        return "quiet"
    return "NOT QUIET: " + "; ".join(q.get("reasons") or ["no reading"])


def print_table(rows: list[dict[str, Any]], clients: list[str], reference: str | None) -> None:
    for profile in dict.fromkeys(r["profile"] for r in rows):
        ttft, interval, tokens = PROFILES[profile]
        print(f"\nprofile {profile}: ttft {ttft:g} ms, interval {interval:g} ms, {tokens} tokens/request")
        print(f"{'client':<19}{'conc':>5}  " + " ".join(f"{lbl:>{len(fmt(f, 0.0))}}" for _, lbl, f in COLS))
        for r in map(with_derived, rows):
            if r["profile"] != profile:
                continue
            cells = " ".join(fmt(f, r.get(k)) for k, _, f in COLS)
            flag = "" if not r.get("failed") and not r.get("unmatched") else \
                f"  failed={r.get('failed')} unmatched={r.get('unmatched')}"
            print(f"{r['client']:<19}{r['concurrency']:>5}  {cells}{flag}  [{quiet_mark(r)}]")
    for a in clients:
        if reference is None or a == reference:
            continue
        print(f"\nratios {a} / {reference} (server stamps; rates: >1 better; cpu and errors: <1 better)")
        print(f"{'profile':<8}{'conc':>5}  " + " ".join(f"{lbl:>9}" for _, lbl in RATIO_KEYS))
        for q in ratios(rows, a, reference):
            vals = " ".join(f"{q[k]:9.2f}" if q[k] is not None else "        -" for k, _ in RATIO_KEYS)
            print(f"{q['profile']:<8}{q['concurrency']:>5}  {vals}")


def ratios(rows: list[dict[str, Any]], a: str, b: str) -> list[dict[str, Any]]:
    out = []
    for ra in rows:
        if ra["client"] != a:
            continue
        rb = next((r for r in rows if r["client"] == b and r["profile"] == ra["profile"]
                   and r["concurrency"] == ra["concurrency"]), None)
        if rb is None:
            continue
        # CPU per request compares only windows measured the same way (in-process, window CPU).
        same_cpu = ra.get("client_cpu_scope") == rb.get("client_cpu_scope") == "window"
        out.append({"client": a, "reference": b, "profile": ra["profile"], "concurrency": ra["concurrency"],
                    "both_quiet": bool((ra.get("quiet") or {}).get("quiet") and (rb.get("quiet") or {}).get("quiet")),
                    **{k: (ra[k] / rb[k] if ra.get(k) is not None and rb.get(k)
                           and (k != "client_cpu_us_per_request" or same_cpu) else None)
                       for k, _ in RATIO_KEYS}})
    return out


def render_markdown(out: dict[str, Any]) -> str:
    """The tables of RESULTS.md from a calibration.json."""
    lines = [f"Made by `{out.get('command', '?')}` on {out['generated_at']} ({out['total_s']:.0f} s).", ""]
    for profile, p in out["profiles"].items():
        lines += [f"**{profile}** (first event {p['ttft_ms']:g} ms after arrival, then one every "
                  f"{p['interval_ms']:g} ms, {p['tokens']} per request)", "",
                  "| client | c | server req/s | self-reported req/s | self / server | TTFT error p50 ms "
                  "| p99 ms | requests | quiet |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in map(with_derived, out["rows"]):
            if r["profile"] != profile:
                continue
            cell = [fmt("{:,.0f}", r.get("server_req_per_s")), fmt("{:,.0f}", r.get("self_req_per_s")),
                    fmt("{:.2f}", r.get("self_over_server")), fmt("{:.2f}", r.get("ttft_error_ms_p50")),
                    fmt("{:.2f}", r.get("ttft_error_ms_p99"))]
            req = f"{r.get('completed', 0)}/{r.get('requests', 0)}"
            if r.get("unmatched"):
                req += f" ({r['unmatched']} unmatched)"
            mark = "yes" if (r.get("quiet") or {}).get("quiet") else \
                "**no**: " + "; ".join((r.get("quiet") or {}).get("reasons") or ["failed"])
            lines.append(f"| {r['client']} | {r['concurrency']} | " + " | ".join(c.strip() for c in cell)
                         + f" | {req} | {mark} |")
        lines.append("")
    lines += ["In-process clients: server events/s, client CPU (share of its core, µs per request), "
              "event lag p99 (client receive − server send, shared clock), server CPU, client run-queue "
              "wait", "", "| client | profile | c | server ev/s | cpu | µs/req | lag p99 ms | server cpu | wait |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in out["rows"]:
        if r.get("client_cpu_scope") != "window":
            continue
        cell = [fmt("{:,.0f}", r.get("server_events_per_s")), fmt("{:.0%}", r.get("client_cpu_util")),
                fmt("{:,.0f}", r.get("client_cpu_us_per_request")), fmt("{:.2f}", r.get("event_lag_ms_p99")),
                fmt("{:.0%}", r.get("server_cpu_util")), fmt("{:.0%}", r.get("client_runq_wait_util"))]
        lines.append(f"| {r['client']} | {r['profile']} | {r['concurrency']} | " + " | ".join(c.strip() for c in cell)
                     + " |")
    lines.append("")
    ref = out.get("reference")
    if ref:
        lines += [f"Ratios to `{ref}` (server-stamp rates; TTFT error p99: smaller is better)", "",
                  "| client | profile | c | server req/s | TTFT error p99 | both quiet |",
                  "| --- | --- | ---: | ---: | ---: | --- |"]
        for q in out["ratios"]:
            lines.append(f"| {q['client']} | {q['profile']} | {q['concurrency']} | "
                         f"{fmt('{:.2f}', q['server_req_per_s']).strip()} | "
                         f"{fmt('{:.2f}', q['ttft_error_ms_p99']).strip()} | {'yes' if q['both_quiet'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def peer_requests(n: int, level: int, cap: int) -> int:
    """A peer's window: as many requests as the others', capped (their start-up and per-request
    cost make the full windows minutes long), but at least four rounds of the level: GuideLLM
    opens its measured window only when its warm-up requests complete, by which time a
    level's worth more are in flight, so a shorter window would hold only their drain."""
    return min(n, max(cap, 4 * level))


def orchestrate(args: argparse.Namespace) -> int:
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0]
    client_cpu = cpus[1] if len(cpus) > 1 else None
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    peer_clis: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name in (c for c in args.clients if c in PEERS):
        try:
            peer_clis[name] = peers.ensure_env(name, args.peer_root, args.peer_python)
        except peers.PeerUnavailable as e:
            skipped[name] = str(e)
            print(f"  skipping {name}: {e}", flush=True)
    tokenizer = peers.write_tokenizer(args.peer_root / "tokenizer") if peer_clis else None
    clients = [c for c in args.clients if c not in skipped]
    os.sched_setaffinity(0, {server_cpu})  # this process mostly waits; it sits with the server
    srv = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "calibration_server.py"), "--port", "0",
                            "--cpu", str(server_cpu), "--sched", args.sched], stdout=subprocess.PIPE, text=True,
                           env=env)
    workers: dict[str, Worker] = {}
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        assert srv.stdout is not None
        line = srv.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"calibration server did not start: {line!r}")
        url = line.split()[1]
        for kind in clients:
            if kind in WORKERS:
                workers[kind] = Worker(kind, url, client_cpu, env, args.sched)
        bench = Bench(args, url, server_cpu, client_cpu, workers, peer_clis, tokenizer)
        for profile in args.profiles:
            ttft, interval, tokens = PROFILES[profile]
            http(url + "/calibration/config", {"ttft_ms": ttft, "interval_ms": interval})
            for level in args.levels:
                n = args.requests or requests_for(level, profile)
                if args.max_requests:
                    n = min(n, args.max_requests)
                for kind in clients:  # same level, one after the other, same server
                    if kind in PEERS and level not in args.peer_levels:
                        continue
                    nk = peer_requests(n, level, args.peer_max_requests) if kind in PEERS else n
                    # A peer's repeat costs its start-up (10-20 s): peers are marked, not repeated.
                    row = measure(bench, kind, profile, level, nk, 0 if kind in PEERS else args.quiet_retries)
                    rows.append(row)
                    print(f"  {profile:<6} {kind:<13} c={level:<5} n={nk:<5} "
                          f"srv {fmt('{:7.0f}', row.get('server_req_per_s'))} req/s "
                          f"self {fmt('{:7.0f}', row.get('self_req_per_s'))} req/s "
                          f"ttftE p99 {fmt('{:.2f}', row.get('ttft_error_ms_p99'))} ms "
                          f"failed {row.get('failed')} [{quiet_mark(row)}]"
                          + (f" x{row['attempts']}" if row["attempts"] > 1 else ""), flush=True)
    finally:
        for w in workers.values():
            w.close()
        srv.terminate()
        srv.wait(timeout=10)
    total_s = time.monotonic() - t_start
    reference = "vllm" if "vllm" in clients else None
    print_table(rows, clients, reference)
    import httpx
    out = {
        "schema": "servingbench.calibration/2",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": args.command,
        "host": {"cpus": len(cpus), "server_cpu": server_cpu, "client_cpu": client_cpu,
                 "python": platform.python_version(), "platform": platform.platform(), "httpx": httpx.__version__},
        "clients": clients,
        "self_rate_definitions": {c: SELF_RATE.get(c) for c in clients},
        "peers": {name: {"version": PEERS[name].version, "cli": str(cli), "sched": args.peer_sched[name],
                         "launch": peers.launch_prefix({client_cpu} if client_cpu is not None else None,
                                                       args.peer_sched[name])}
                  for name, cli in peer_clis.items()},
        "peers_skipped": skipped,
        "quiet_thresholds": dataclasses.asdict(quiet.Thresholds()),
        "label": args.label,
        "profiles": {p: {"ttft_ms": PROFILES[p][0], "interval_ms": PROFILES[p][1], "tokens": PROFILES[p][2]}
                     for p in args.profiles},
        "levels": args.levels,
        "peer_levels": [lv for lv in args.peer_levels if lv in args.levels],
        "total_s": total_s,
        "rows": rows,
        "reference": reference,
        "ratios": [q for c in clients if reference and c != reference for q in ratios(rows, c, reference)],
    }
    if args.out:
        from servingbench.runtime.results import atomic_write_text

        path = Path(args.out)
        atomic_write_text(path, json.dumps(out, indent=1))
        print(f"\nwrote {path} ({total_s:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description="client overhead and clock error against a zero-work server")
    ap.add_argument("--levels", default="1,16,64,256,1024")
    ap.add_argument("--profiles", default="paced,burst")
    ap.add_argument("--clients", default="servingbench,vllm,guidellm,aiperf",
                    help=f"in-process: {', '.join(sorted(WORKERS))}; peers (own environments): {', '.join(PEERS)}")
    ap.add_argument("--requests", type=int, default=0, help="requests per window (default: by level)")
    ap.add_argument("--max-requests", type=int, default=0, help="cap on requests per window")
    ap.add_argument("--peer-levels", default="1,16,256",
                    help="levels the peers run at (each call costs 10-20 s of start-up; both tools "
                         "saturate one core below 16 streams)")
    ap.add_argument("--peer-max-requests", type=int, default=256,
                    help="cap on a peer's window (at least 4 x the level)")
    ap.add_argument("--peer-sched", default=",".join(f"{k}={v}" for k, v in peers.DEFAULT_SCHED.items()),
                    help="each peer's priority, NAME=rr|nice|none (rr: SCHED_RR 1; nice: -10), or one value "
                         "for all; the defaults and why: benchmarks/RESULTS.md")
    ap.add_argument("--peer-root", type=Path, default=REPO / ".bench-envs",
                    help="where the peers' environments are created")
    ap.add_argument("--peer-python", default=sys.executable, help="interpreter the peers' environments use")
    ap.add_argument("--peer-timeout-s", type=float, default=240.0)
    ap.add_argument("--keep-peer-runs", action="store_true", help="keep each peer call's files")
    ap.add_argument("--quiet-retries", type=int, default=1,
                    help="repeat an in-process client's level at most this many times while the machine "
                         "was not quiet (peers are marked only)")
    ap.add_argument("--probe-s", type=float, default=0.4, help="quiet probe before and after each unit")
    ap.add_argument("--out", default=str(REPO / "results" / "calibration.json"))
    ap.add_argument("--render", metavar="JSON", help="print RESULTS.md's tables from a calibration.json")
    ap.add_argument("--label", default="")
    ap.add_argument("--sched", choices=("fifo", "nice", "none"), default="fifo",
                    help="scheduling of server and in-process clients: fifo (SCHED_FIFO 1), nice (-10) or none")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--worker-cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.url, args.worker_cpu, args.sched)
        return 0
    if args.render:
        print(render_markdown(json.loads(Path(args.render).read_text())))
        return 0
    try:
        args.peer_sched = peers.parse_sched(args.peer_sched)
    except ValueError as e:
        print(f"error: --peer-sched: {e}", file=sys.stderr)
        return 2
    args.command = shlex.join(["python", "benchmarks/client_overhead.py", *argv])
    args.levels = [int(x) for x in args.levels.split(",") if x]
    args.peer_levels = [int(x) for x in args.peer_levels.split(",") if x]
    args.profiles = [p for p in args.profiles.split(",") if p]
    args.clients = [c for c in args.clients.split(",") if c]
    unknown = [c for c in args.clients if c not in WORKERS and c not in PEERS]
    if unknown:
        print(f"error: --clients: unknown client {unknown[0]!r}", file=sys.stderr)
        return 2
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
