"""Which kit component, if any, slows the naive server it measures? (issue 17, part 1)

    python3 scripts/device/diag_kit_interference.py OUT_DIR [--model gpt2] [--requests 16]

On the GPU machine: the bare loop of benchmarks/transformers_fidelity.py, then one pooled
transformers-naive server (started by the pool's keeper, which copies its log, as in a
Snakemake run) measured by ``run_cell`` in phases that switch the kit's monitor parts on and
off: ``old-kit`` (as leases 1-6 ran: psutil, and NVML memory, utilisation and power, every
0.1 s), ``kit`` (today's monitor: NVML at most once a second), ``no-monitor``,
``old-nvml-only``, ``old-kit`` again. For each phase: the client's per-token gaps, the server's own
step times and the generate thread's CPU time per step (stamped inside the server by
``diag_sitecustomize.py``, through PYTHONPATH in the server's environment only), the host's
CPU shares (steal included) and cgroup throttling, the server threads' context switches, and the
GPU's SM clock and clock-event reasons at the phase's end. Each ``old-kit`` phase also runs
``py-spy record --idle --threads`` on the server when py-spy is on PATH. Then the cost of one
monitor poll's calls, each timed alone. Writes OUT_DIR/diag.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import transformers_fidelity as tf  # noqa: E402

from servingbench.runtime import cell, monitor  # noqa: E402
from servingbench.runtime.pool import ServerPool, pooled_server  # noqa: E402
from servingbench.runtime.spec import GenerationParams  # noqa: E402

HERE = Path(__file__).resolve().parent


def cpu_line() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def threads(pid: int) -> dict[str, dict[str, int | str]]:
    out = {}
    for t in Path(f"/proc/{pid}/task").glob("*"):
        stat = read(f"{t}/stat")
        if not stat:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        status = dict(ln.split(":\t", 1) for ln in read(f"{t}/status").splitlines() if ":\t" in ln)
        out[t.name] = {"comm": read(f"{t}/comm").strip(), "utime": int(fields[11]), "stime": int(fields[12]),
                       "cpu": int(fields[36]), "vcs": int(status.get("voluntary_ctxt_switches", 0)),
                       "nvcs": int(status.get("nonvoluntary_ctxt_switches", 0))}
    return out


def gpu_state() -> dict[str, Any]:
    try:
        import pynvml as n

        n.nvmlInit()
        h = n.nvmlDeviceGetHandleByIndex(0)
        reasons = None
        for fn in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            if hasattr(n, fn):
                reasons = hex(getattr(n, fn)(h))
                break
        return {"sm_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
                "mem_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM),
                "pstate": n.nvmlDeviceGetPerformanceState(h), "clock_event_reasons": reasons}
    except Exception as exc:
        return {"error": str(exc)}


def snapshot(server_pid: int | None) -> dict[str, Any]:
    return {"t": time.monotonic(), "cpu": cpu_line(), "cgroup_cpu": read("/sys/fs/cgroup/cpu.stat"),
            "psi_cpu": read("/proc/pressure/cpu"), "threads": threads(server_pid) if server_pid else {},
            "loadavg": read("/proc/loadavg").strip()}


def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    d = [y - x for x, y in zip(a["cpu"], b["cpu"])]
    total = sum(d) or 1
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    ths = []
    for tid, tb in b["threads"].items():
        ta = a["threads"].get(tid)
        if ta is None:
            continue
        busy = (tb["utime"] + tb["stime"] - ta["utime"] - ta["stime"]) / os.sysconf("SC_CLK_TCK")
        if busy > 0.05 or tb["nvcs"] - ta["nvcs"] > 50:
            ths.append({"tid": tid, "comm": tb["comm"], "cpu_s": round(busy, 2), "vcs": tb["vcs"] - ta["vcs"],
                        "nvcs": tb["nvcs"] - ta["nvcs"], "last_cpu": tb["cpu"]})
    return {"seconds": round(b["t"] - a["t"], 1),
            "host_pct": {n: round(100 * v / total, 1) for n, v in zip(names, d)},
            "cgroup_cpu_after": b["cgroup_cpu"], "psi_cpu_after": b["psi_cpu"], "loadavg": b["loadavg"],
            "server_threads": sorted(ths, key=lambda t: -t["cpu_s"])}


def step_lines(path: Path, skip: int) -> tuple[list[dict[str, Any]], int]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(ln) for ln in lines[skip:]], len(lines)


def server_steps(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Decode step wall and generate-thread CPU time, from the server's own stamps."""
    walls, cpus = [], []
    for r in recs:
        st = r["stamps"][1:]  # the first put is the prompt; then one per generated token
        for (w0, c0), (w1, c1) in zip(st, st[1:]):
            walls.append((w1 - w0) / 1e6)
            cpus.append((c1 - c0) / 1e6)
    return {"steps": len(walls), "wall_ms_p50": tf.pct(walls, 50), "wall_ms_p90": tf.pct(walls, 90),
            "wall_ms_max": max(walls, default=None), "cpu_ms_p50": tf.pct(cpus, 50),
            "cpu_ms_p90": tf.pct(cpus, 90), "slow_steps_cpu_ms_p50": tf.pct(
                [c for w, c in zip(walls, cpus) if walls and w > 2 * (tf.pct(walls, 50) or 0)], 50)}


class NoGPU:
    available = False
    unavailable_reason = "diagnosis phase without NVML"
    info: dict[str, Any] = {}


class OldMonitor(monitor.Monitor):
    """The monitor as lease 1-6 ran it: memory, utilisation and power from NVML every poll."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.gpu_interval_s = self.interval_s

    def sample_once(self, gpu: bool = True) -> None:
        super().sample_once(gpu)
        if gpu and self._gpu_on:
            p = self.gpu.power_w()
            if p is not None:
                self.samples.gpu_power.append(p)


# phase: (monitor class, NVML on, psutil on)
PHASES = {"old-kit": (OldMonitor, True, True), "kit": (monitor.Monitor, True, True),
          "no-monitor": (monitor.Monitor, False, False), "old-nvml-only": (OldMonitor, True, False),
          "psutil-only": (monitor.Monitor, False, True)}


def poll_costs(server_pid: int, n: int = 30) -> dict[str, Any]:
    """Median microseconds of each call one monitor poll makes, each timed alone."""
    gpu = monitor.GPU()
    calls = {"tree_rss_bytes": lambda: monitor.tree_rss_bytes(server_pid)}
    if gpu.available:
        calls.update(used_bytes=gpu.used_bytes, utilization_pct=gpu.utilization_pct, power_w=gpu.power_w,
                     energy_mj=gpu.energy_mj)
    out = {}
    for name, fn in calls.items():
        ts = []
        for _ in range(n):
            t = time.perf_counter_ns()
            fn()
            ts.append((time.perf_counter_ns() - t) / 1e3)
            time.sleep(0.01)
        out[name] = {"p50_us": round(tf.pct(ts, 50), 1), "max_us": round(max(ts), 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--phases", nargs="+", choices=sorted(PHASES),
                    default=["old-kit", "kit", "no-monitor", "old-nvml-only", "old-kit"])
    ap.add_argument("--work", default="/tmp/diag-kit")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    from servingbench.host.config import load_config

    cfg = load_config(a.config).model_copy(update={"weights": "dummy"})
    args = argparse.Namespace(tokens=a.tokens, requests=a.requests, warmup=2, arm_timeout_s=300, device=a.device,
                              serve_args="", monitor_interval_s=0.1)
    g = cfg.generation[a.model]["chat"]
    gen = GenerationParams(temperature=g.temperature, top_p=g.top_p, max_tokens=a.tokens)
    mdir = tf.model_dir_for(cfg, a.model, work / "models", with_weights=False)
    prompt, n_prompt = tf.make_prompt(mdir, 100)
    workload = tf.write_workload(work / "w.jsonl", prompt, n_prompt, a.tokens, a.requests + 2)
    report: dict[str, Any] = {"model": a.model, "tokens": a.tokens, "requests": a.requests,
                              "gen": vars(g) if hasattr(g, "__dict__") else str(g), "phases": []}

    t = time.monotonic()
    loop = tf.BareLoop(mdir, prompt, args, gen)
    try:
        bare = loop.run(a.requests, args.warmup)
    finally:
        loop.close()
    report["bare"] = tf.arm_summary(bare)
    report["bare"]["seconds"] = round(time.monotonic() - t, 1)
    print("bare", json.dumps(report["bare"]), flush=True)

    steplog = work / "steps.jsonl"
    steplog.unlink(missing_ok=True)
    env = (("PYTHONPATH", f"{HERE / 'diag_site'}:{REPO}:{os.environ.get('PYTHONPATH', '')}"),
           ("H17_STEPLOG", str(steplog)))
    spec = tf.cell_spec("transformers-naive", a.model, mdir, "", 2048, gen, args, a.requests, env=env)
    pool = ServerPool(work / "pool", idle_timeout_s=300)
    provider = pooled_server(pool)
    real_gpu, real_tree = cell.GPU, monitor.tree_rss_bytes
    seen = 0
    pyspy = shutil.which("py-spy")
    try:
        for i, phase in enumerate(a.phases):
            mon, use_gpu, use_psutil = PHASES[phase]
            cell.Monitor = mon
            cell.GPU = real_gpu if use_gpu else NoGPU
            monitor.tree_rss_bytes = real_tree if use_psutil else (lambda pid: (0, 0))
            states = pool.states()
            pid = int(states[0][1]["server_pid"]) if states and states[0][1].get("server_pid") else None
            spy = None
            if pyspy and pid and phase == "old-kit":
                spy = subprocess.Popen([pyspy, "record", "--pid", str(pid), "--idle", "--threads", "--nonblocking",
                                        "--rate", "100", "--duration", "10", "--format", "raw",
                                        "--output", str(out / f"pyspy-{i}.txt")],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            before = snapshot(pid)
            t = time.monotonic()
            reqs = tf.run_kit(spec, workload, work, provider=provider)
            states = pool.states()
            pid = pid or int(states[0][1]["server_pid"])
            after = snapshot(pid)
            if before["threads"] == {}:  # the server started inside this phase
                before["threads"] = {}
            recs, seen_now = step_lines(steplog, seen)
            seen = seen_now
            entry = {"phase": phase, "client": tf.arm_summary(reqs), "server": server_steps(recs[-a.requests:]),
                     "system": delta(before, after), "gpu_after": gpu_state(),
                     "seconds": round(time.monotonic() - t, 1),
                     "client_tpot_ms": [round(r["tpot_ms"], 2) for r in reqs]}
            if spy is not None:
                try:
                    entry["pyspy"] = spy.communicate(timeout=30)[0].decode(errors="replace")[-1500:]
                except subprocess.TimeoutExpired:
                    spy.kill()
            report["phases"].append(entry)
            print(phase, json.dumps({k: entry[k] for k in ("client", "server", "seconds", "gpu_after")}), flush=True)
            print("   system", json.dumps(entry["system"])[:1500], flush=True)
        cell.GPU, cell.Monitor, monitor.tree_rss_bytes = real_gpu, monitor.Monitor, real_tree
        states = pool.states()
        if states:
            report["poll_costs"] = poll_costs(int(states[0][1]["server_pid"]))
            print("poll costs", json.dumps(report["poll_costs"]), flush=True)
    finally:
        pool.stop_all()
        (out / "diag.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
