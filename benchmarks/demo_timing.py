"""Where the CPU demo's wall time goes: `bash scripts/demo-cpu.sh` from a fresh clone, timed.

    python benchmarks/demo_timing.py [--repo PATH] [--workdir DIR] [--cold] [--keep]

Clones the repository (default: this checkout's committed HEAD) into a fresh folder, runs the
README's demo command there exactly as a user would (install included) and prints the breakdown:
set-up steps (from the `setup-env [N s]` lines), model preparation, each arm's server start-ups,
cells and sweeps (Snakemake's job lines, the result files' start-up times), aggregate and report,
and what Snakemake itself took between jobs. Caches: by default the user's uv cache and the
llama-server build cache are used as they are (say which, "warm" or "cold", from whether they
existed); --cold gives the run empty ones, so everything is downloaded and compiled.

The machine is shared: the load is recorded beside the times (load average every 5 s, and the
share of time in which some task waited for a CPU from /proc/pressure/cpu, and how long the demo's
own processes waited in the run queue, /proc/PID/schedstat), so that a slow run can be told from a
loaded machine. CPU time (user + system) per step and per arm's client and server comes from
benchmarks/cpu_account.py's sampler: unlike wall time, it hardly depends on the neighbours.
Writes DIR/demo-timing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from cpu_account import CpuSampler, categorize  # noqa: E402
JOB_HEAD = re.compile(r"^(?:local)?rule (\S+):$")
JOB_ID = re.compile(r"^\s+jobid: (\d+)$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
FINISHED = re.compile(r"Finished jobid: (\d+) \(Rule: (\S+)\)")
SETUP = re.compile(r"^setup-env \[(\d+) s\]: (.*)$")


def cpu_pressure_us() -> int | None:
    """Total time (µs) in which some runnable task waited for a CPU (/proc/pressure/cpu, PSI)."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return int(some.rsplit("total=", 1)[1])


def task_wait_s(pid: int) -> float:
    """Run-queue wait of one process so far (/proc/PID/schedstat, second field, ns)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LoadSampler(threading.Thread):
    """Every few seconds: the load average, and the run-queue wait of the demo's processes (the
    last value seen per process; processes shorter than the interval are missed)."""

    def __init__(self, every_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.every_s, self.samples, self.stop = every_s, [], threading.Event()
        self.root: int | None = None
        self.waits: dict[int, float] = {}

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            if self.root is not None:
                try:
                    procs = [psutil.Process(self.root), *psutil.Process(self.root).children(recursive=True)]
                except psutil.NoSuchProcess:
                    procs = []
                for proc in procs:
                    self.waits[proc.pid] = max(self.waits.get(proc.pid, 0.0), task_wait_s(proc.pid))
            self.stop.wait(self.every_s)


def timed_lines(cmd: list[str], cwd: Path, env: dict[str, str], log: Path,
                sampler: LoadSampler, cpu: CpuSampler) -> tuple[list[tuple[float, str]], int, float]:
    """Run cmd, stamp each output line on arrival (seconds from start); tee to log."""
    t0 = time.monotonic()
    lines: list[tuple[float, str]] = []
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        sampler.root = cpu.root = proc.pid
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.monotonic() - t0
            lines.append((t, line.rstrip("\n")))
            fh.write(f"{t:8.1f} {line}")
            fh.flush()
        rc = proc.wait()
    return lines, rc, time.monotonic() - t0


def parse_jobs(lines: list[tuple[float, str]]) -> list[dict]:
    """Snakemake jobs: rule, wildcards, start and end (seconds from the start of the run)."""
    jobs: dict[str, dict] = {}
    current: dict | None = None
    for t, line in lines:
        if m := JOB_HEAD.match(line):
            current = {"rule": m[1], "start": t, "wildcards": {}}
        elif current is not None and (m := JOB_ID.match(line)):
            jobs[m[1]] = current
        elif current is not None and (m := WILDCARDS.match(line)):
            current["wildcards"] = dict(kv.split("=", 1) for kv in m[1].split(", ") if "=" in kv)
        elif m := FINISHED.search(line):
            if m[1] in jobs:
                jobs[m[1]]["end"] = t
    return [j for j in jobs.values() if "end" in j]


def breakdown(lines: list[tuple[float, str]], total_s: float, work: Path) -> dict:
    setup = [(int(m[1]), m[2]) for _, line in lines if (m := SETUP.match(line))]
    setup_end = next((t for t, line in lines if "environment ready" in line), None)
    jobs = parse_jobs(lines)
    by_rule: dict[str, float] = defaultdict(float)
    arms: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "job_s": 0.0, "startups": 0, "startup_s": 0.0})
    for j in jobs:
        d = j["end"] - j["start"]
        rule = j["rule"]
        if rule.startswith(("measure_", "sweep_", "capacity_")):
            arm = j["wildcards"].get("arm", rule)
            arms[arm]["jobs"] += 1
            arms[arm]["job_s"] += d
        else:
            by_rule[rule] += d
    for kind in ("cells", "sweeps"):
        for path in (work / "results" / kind).rglob("*.json"):
            if path.name.endswith(".failed.json"):
                continue
            doc = json.loads(path.read_text())
            srv = doc.get("server") or {}
            if not srv.get("reused") and srv.get("startup_s"):
                arm = doc["cell"]["arm"]
                arms[arm]["startups"] += 1
                arms[arm]["startup_s"] += srv["startup_s"]
    snakemake_start = setup_end if setup_end is not None else 0.0
    jobs_s = sum(j["end"] - j["start"] for j in jobs)
    return {"total_s": total_s, "setup_s": setup_end, "setup_steps": setup,
            "rules_s": dict(by_rule), "arms": {a: dict(v) for a, v in arms.items()},
            "snakemake_s": total_s - snakemake_start, "between_jobs_s": total_s - snakemake_start - jobs_s,
            "jobs": len(jobs)}


def fmt(s: float | None) -> str:
    return "—" if s is None else f"{int(s // 60)} min {s % 60:4.1f} s" if s >= 60 else f"{s:.1f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(ROOT), help="what to clone (default: this checkout)")
    ap.add_argument("--workdir", help="where to clone (default: a new temporary folder)")
    ap.add_argument("--cold", action="store_true", help="empty uv and llama-server caches: download and compile all")
    ap.add_argument("--keep", action="store_true", help="keep the clone")
    a = ap.parse_args()
    base = Path(a.workdir or tempfile.mkdtemp(prefix="sb-demo-"))
    work = base / "clone"
    subprocess.run(["git", "clone", "-q", a.repo, str(work)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "SERVINGBENCH_VENV")}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if "/.venv/" not in p)
    cache = Path(env.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    if a.cold:
        env["UV_CACHE_DIR"] = str(base / "uv-cache")
        env["SERVINGBENCH_CACHE"] = str(base / "sb-cache")
    caches = {"uv": "cold" if a.cold or not (Path(env.get("UV_CACHE_DIR", cache / "uv"))).exists() else "warm",
              "llama-server": "cold" if a.cold or not (cache / "servingbench" / "llama-server").exists() else "warm"}
    sampler = LoadSampler()
    cpu = CpuSampler(work)
    psi0 = cpu_pressure_us()
    sampler.start()
    cpu.start()
    lines, rc, total = timed_lines(["bash", "scripts/demo-cpu.sh"], work, env, base / "demo.log", sampler, cpu)
    sampler.stop.set()
    cpu.stop.set()
    psi1 = cpu_pressure_us()
    out = breakdown(lines, total, work)
    out["cpu_s"] = categorize(list(cpu.procs.values()))
    out.update(rc=rc, caches=caches, cpus=os.cpu_count(), log=str(base / "demo.log"),
               load={"mean": sum(sampler.samples) / max(1, len(sampler.samples)), "max": max(sampler.samples, default=0),
                     "cpu_pressure_some_pct": None if psi0 is None or psi1 is None else 100 * (psi1 - psi0) / 1e6 / total,
                     "demo_run_queue_wait_s": sum(sampler.waits.values())})
    (base / "demo-timing.json").write_text(json.dumps(out, indent=2))
    load = out["load"]
    print(f"demo: exit {rc}, {fmt(total)} wall (caches: uv {caches['uv']}, llama-server {caches['llama-server']}); "
          f"load average mean {load['mean']:.1f}, max {load['max']:.1f} on {out['cpus']} CPUs; some task waited for "
          f"a CPU {load['cpu_pressure_some_pct'] or float('nan'):.0f}% of the time (PSI); the demo's own processes "
          f"waited {fmt(load['demo_run_queue_wait_s'])} in the run queue")
    print(f"  install (scripts/setup-env.sh)      {fmt(out['setup_s'])}")
    prev = 0
    for secs, what in out["setup_steps"][1:] + [(int(out["setup_s"] or 0), "end")]:
        print(f"    {what[:60]:<60} {secs - prev:5d} s") if what != "end" else None
        prev = secs
    for rule in ("prepare_model", "prepare_gguf", "build_workload", "aggregate", "report"):
        print(f"  {rule:<36} {fmt(out['rules_s'].get(rule))}")
    for arm, v in out["arms"].items():
        print(f"  {arm:<20} {v['jobs']:2d} jobs {fmt(v['job_s']):>14}, of which {v['startups']} start-up(s) {fmt(v['startup_s'])}")
    print(f"  Snakemake between jobs               {fmt(out['between_jobs_s'])}  ({out['jobs']} jobs)")
    print(f"  CPU time (user + system), sampled every second: {fmt(sum(out['cpu_s'].values()))} in all")
    for what, secs in out["cpu_s"].items():
        print(f"    {what:<40} {fmt(secs)}")
    print(f"  timing: {base / 'demo-timing.json'}; log: {base / 'demo.log'}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
