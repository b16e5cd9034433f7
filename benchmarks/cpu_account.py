"""CPU time (user + system) of a command's processes, by what they are: install, llama-server
build, model preparation, workloads, each arm's client and server, Snakemake, aggregate, report.

    python benchmarks/cpu_account.py --dir DIR [--out FILE] -- COMMAND ...

On a shared machine wall times say as much about the neighbours as about the demo; CPU time does
not (it grows a little with cache contention, not with waiting). Every ``--every`` seconds this
samples, with psutil, every process that descends from COMMAND or whose working folder is under
DIR (pooled servers are detached from the job that started them, but keep its folder), and keeps
each process's last user + system time. Processes shorter than the interval are missed; what
COMMAND's own tree used in all (the kernel's count for waited-for children) is printed beside,
so the missed share is known. Used by benchmarks/demo_timing.py.
"""

from __future__ import annotations

import argparse
import os
import json
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

ARM = re.compile(r'"arm":\s*"([^"]+)"')
# First match wins; the category of a process without a match is its parent's.
RULES = [
    ("llama-server build", re.compile(r"build-llama-server|cmake|cc1plus|/ninja|\bninja\b|\bmake\b|collect2|/ld\b|\bas\b")),
    ("install", re.compile(r"\buv\b.*\bpip\b|-m pip|\bpip install|setup-env")),
    ("prepare_model", re.compile(r"prepare-model")),
    ("prepare_gguf", re.compile(r"prepare-gguf")),
    ("workloads", re.compile(r"build-workload")),
    ("aggregate", re.compile(r"servingbench(?:\.cli)? aggregate")),
    ("report", re.compile(r"servingbench(?:\.cli)? report")),
    ("server stop", re.compile(r"stop-servers")),
]


class CpuSampler(threading.Thread):
    """Samples the CPU time of a process tree (and of processes working under a folder)."""

    def __init__(self, folder: Path, every_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.folder, self.every_s = str(folder.resolve()), every_s
        self.root: int | None = None
        self.procs: dict[tuple[int, float], dict] = {}
        self.loads: list[float] = []
        self.me = os.getpid()  # this sampler's own time is not the command's
        self.stop = threading.Event()

    def _mine(self, p: psutil.Process, tree: set[int]) -> bool:
        if p.pid in tree:
            return True
        try:
            return p.cwd().startswith(self.folder)
        except (psutil.Error, OSError):
            return False

    def sample(self) -> None:
        self.loads.append(psutil.getloadavg()[0])
        tree: set[int] = set()
        if self.root is not None:
            try:
                root = psutil.Process(self.root)
                tree = {root.pid, *(c.pid for c in root.children(recursive=True))}
            except psutil.Error:
                pass
        for p in psutil.process_iter():
            try:
                if p.pid == self.me or not self._mine(p, tree):
                    continue
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    t = p.cpu_times()
                    rec = self.procs.setdefault(key, {"pid": p.pid, "first": time.time()})
                    # Every time: a process first seen between fork and exec has its parent's command.
                    rec["ppid"], rec["cmd"] = p.ppid(), " ".join(p.cmdline())
                    rec["cpu_s"] = t.user + t.system
                    rec["last"] = time.time()
            except (psutil.Error, OSError):
                continue

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.every_s)


def categorize(procs: list[dict]) -> dict[str, float]:
    """CPU seconds per category; a server's and a client's time per arm."""
    by_pid = {p["pid"]: p for p in procs}  # pids are not reused within one demo run on these machines

    def own(p: dict) -> str | None:
        cmd = p["cmd"]
        for name, rx in RULES:
            if rx.search(cmd):
                return name
        arm = ARM.search(cmd)
        if "run-cell" in cmd and arm:
            return f"{arm[1]}: client (run-cell)"
        if "servingbench.runtime.pool" in cmd and arm:
            return f"{arm[1]}: pool keeper"
        if "snakemake" in cmd:
            return "snakemake"
        return None

    def category(p: dict, depth: int = 0) -> str:
        mine = own(p)
        parent = by_pid.get(p["ppid"])
        if mine is not None:
            return mine
        if parent is None or depth > 20:
            return mine or "other"
        up = category(parent, depth + 1)
        if up.endswith(("client (run-cell)", "pool keeper")):  # a child of a cell or keeper is its server
            return up.split(":")[0] + ": server"
        return up

    out: dict[str, float] = defaultdict(float)
    for p in procs:
        out[category(p)] += p.get("cpu_s", 0.0)
    return dict(sorted(out.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="the folder the command works in")
    ap.add_argument("--out", help="write the accounting here (JSON)")
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    sampler = CpuSampler(Path(a.dir), a.every)
    t0 = time.monotonic()
    sampler.start()
    proc = subprocess.Popen(cmd, cwd=a.dir)
    sampler.root = proc.pid
    _, status, usage = os.wait4(proc.pid, 0)
    sampler.stop.set()
    sampler.join()
    wall = time.monotonic() - t0
    cats = categorize(list(sampler.procs.values()))
    waited = usage.ru_utime + usage.ru_stime
    result = {"wall_s": wall, "cpu_by_category_s": cats, "cpu_sampled_s": sum(cats.values()),
              "cpu_waited_tree_s": waited, "load_mean": sum(sampler.loads) / max(1, len(sampler.loads)),
              "load_max": max(sampler.loads, default=0.0),
              "processes": list(sampler.procs.values())}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))
    for k, v in cats.items():
        print(f"  {k:<40} {v:8.1f} s CPU")
    print(f"wall {wall:.1f} s; CPU sampled {result['cpu_sampled_s']:.1f} s; command tree (waited) {waited:.1f} s; "
          f"load average mean {result['load_mean']:.1f}, max {result['load_max']:.1f}")
    sys.exit(status >> 8)


if __name__ == "__main__":
    main()
