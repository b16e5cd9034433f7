"""Where does a Transformers arm's server spend a cell? py-spy on the server while the kit measures it
(issue 17, part 1: ``transformers serve``'s ratio to the bare loop, explained with a profile).

    python3 scripts/device/profile_arm.py --config configs/h200-dummy.yaml --model phi-2 \
        --arms serve naive --out OUT [--requests 16 --tokens 64]

For each arm, one server in a kit pool (as a Snakemake cell's), the prompt and forced length of
benchmarks/transformers_fidelity.py, then phases of ``--requests`` requests each through the kit's
``run_cell``:
  ``plain``  no profiler: the TPOT the other phases are read against;
  ``idle``   ``py-spy record --idle --threads``: every thread's stack, waiting ones too (where the
             wall time of each thread goes);
  ``gil``    ``py-spy record --gil --threads``: only the thread holding the GIL (who holds it, and
             for what);
  ``native`` ``py-spy record --native --threads``: C/C++ frames too (torch's kernel launches).
py-spy pauses the process for each sample (100 Hz), so profiled phases run a little slower; the
shares of samples, not the phases' TPOT, are the finding. Writes OUT/profile.json (per arm and
phase: the kit's TPOT, and per thread its samples, top own-time frames and top inclusive frames),
OUT/profile.md and py-spy's raw collapsed stacks OUT/ARM-PHASE.txt. Needs py-spy on PATH (the kit's
wheels carry it: scripts/device/make-kit-wheels.sh); without it only ``plain`` runs.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import transformers_fidelity as tf  # noqa: E402

from servingbench.runtime.pool import ServerPool, pooled_server  # noqa: E402
from servingbench.runtime.spec import GenerationParams  # noqa: E402

PHASES = {"plain": None, "idle": ["--idle"], "gil": ["--gil"], "native": ["--native"]}
ARM_NAMES = {"serve": "transformers-serve", "naive": "transformers-naive"}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines merge, paths shorten."""
    m = _FRAME.match(frame.strip())
    return f"{m['func']} ({Path(m['file']).name})" if m else frame.strip()


def summarise(raw: str, top: int = 15) -> dict[str, Any]:
    """Per thread of py-spy's raw (collapsed) output: samples, top own-time and inclusive frames."""
    threads: dict[str, dict[str, Any]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if not frames:
            continue
        thread = frames[0] if frames[0].startswith("thread ") else "thread ?"
        calls = [frame_name(f) for f in (frames[1:] if frames[0].startswith("thread ") else frames)]
        t = threads.setdefault(thread, {"samples": 0, "own": collections.Counter(), "inclusive": collections.Counter()})
        n = int(count)
        t["samples"] += n
        if calls:
            t["own"][calls[-1]] += n
            for c in set(calls):
                t["inclusive"][c] += n
    out = {}
    for name, t in sorted(threads.items(), key=lambda kv: -kv[1]["samples"]):
        s = t["samples"] or 1
        out[name] = {"samples": t["samples"],
                     "own": [[f, n, round(n / s, 3)] for f, n in t["own"].most_common(top)],
                     "inclusive": [[f, n, round(n / s, 3)] for f, n in t["inclusive"].most_common(top)]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--arms", nargs="+", default=["serve", "naive"], choices=sorted(ARM_NAMES))
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES))
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--serve-args", default="--continuous-batching")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script")
    ap.add_argument("--work", default="/tmp/profile-arm")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    pyspy = shutil.which("py-spy")
    phases = [p for p in a.phases if p == "plain" or pyspy]
    if len(phases) < len(a.phases):
        print("profile_arm: no py-spy on PATH: only the plain phase runs", file=sys.stderr)
    from servingbench.host.config import load_config

    cfg = load_config(a.config).model_copy(update={"weights": "dummy"})
    spec_m = cfg.models[a.model]
    g = cfg.generation[a.model]["chat"]
    gen = GenerationParams(temperature=g.temperature, top_p=g.top_p, max_tokens=a.tokens)
    args = argparse.Namespace(serve_args=a.serve_args, device=a.device, warmup=2, monitor_interval_s=0.1)
    mdir = tf.model_dir_for(cfg, a.model, work / "models", with_weights=False)
    prompt, n_prompt = tf.make_prompt(mdir, 100)
    workload = tf.write_workload(work / "w.jsonl", prompt, n_prompt, a.tokens, a.requests + 2)
    env = tf.CPU_ENV if a.device == "cpu" else ()
    report: dict[str, Any] = {"model": a.model, "tokens": a.tokens, "requests": a.requests, "rate_hz": a.rate,
                              "py_spy": pyspy and subprocess.run([pyspy, "--version"], capture_output=True,
                                                                 text=True).stdout.strip(), "arms": {}}
    for arm in a.arms:
        name = ARM_NAMES[arm]
        mdir_arm = tf.model_dir_for(cfg, a.model, work / "models", with_weights=True) if arm == "serve" else mdir
        spec = tf.cell_spec(name, a.model, mdir_arm, spec_m.hf_id, spec_m.context_length, gen, args, a.requests, env)
        pool = ServerPool(work / "pools" / arm)
        provider = pooled_server(pool)
        entry: dict[str, Any] = report["arms"].setdefault(arm, {})
        try:
            # Starts the server and warms it: its start-up is not profiled.
            tf.run_kit(dataclasses.replace(spec, requests=2), workload, work, provider=provider)
            pid = int(pool.states()[0][1]["server_pid"])
            for phase in phases:
                spy = None
                raw = out / f"{arm}-{phase}.txt"
                if PHASES[phase] is not None:
                    spy = subprocess.Popen([pyspy, "record", "--pid", str(pid), "--threads", *PHASES[phase],
                                            "--rate", str(a.rate), "--format", "raw", "--output", str(raw)],
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                    time.sleep(1.0)  # py-spy attached before the first request
                t = time.monotonic()
                reqs = tf.run_kit(spec, workload, work, provider=provider)
                ph: dict[str, Any] = {**tf.arm_summary(reqs), "seconds": round(time.monotonic() - t, 1)}
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                    try:
                        ph["py_spy_log"] = spy.communicate(timeout=60)[0].decode(errors="replace")[-600:]
                    except subprocess.TimeoutExpired:
                        spy.kill()
                        ph["py_spy_log"] = "py-spy did not stop within 60 s"
                    ph["threads"] = summarise(raw.read_text()) if raw.exists() else {}
                entry[phase] = ph
                print(f"[{arm}] {phase}: TPOT p50 {tf._f(ph.get('tpot_ms_p50'), '{:.2f}')} ms "
                      f"({ph['seconds']} s)", file=sys.stderr, flush=True)
                (out / "profile.json").write_text(json.dumps(report, indent=1))  # nothing lost if cut
        except Exception as exc:  # one arm that cannot run must not cost the other
            entry["failed"] = f"{type(exc).__name__}: {str(exc)[:400]}"
            print(f"[{arm}] failed: {entry['failed']}", file=sys.stderr, flush=True)
        finally:
            pool.stop_all()
    (out / "profile.json").write_text(json.dumps(report, indent=1))
    (out / "profile.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """Per arm and phase: TPOT, then each thread's share of samples and its top frames."""
    lines = [f"# py-spy on the Transformers arms: {report['model']}, {report['tokens']} tokens x "
             f"{report['requests']} requests, {report['rate_hz']} Hz ({report.get('py_spy')})", ""]
    for arm, phases in report["arms"].items():
        lines.append(f"## {arm}")
        if "failed" in phases:
            lines += [f"failed: {phases['failed']}", ""]
        for phase, ph in phases.items():
            if phase == "failed":
                continue
            lines.append(f"### {phase}: TPOT p50 {tf._f(ph.get('tpot_ms_p50'), '{:.2f}')} ms, "
                         f"gap p90/p50 {tf._f(ph.get('gap_p90_over_p50'), '{:.2f}')}")
            for thread, t in list(ph.get("threads", {}).items())[:6]:
                lines.append(f"- {thread}: {t['samples']} samples")
                lines += [f"  - own {share:.0%} {f}" for f, _, share in t["own"][:8]]
                lines += [f"  - incl {share:.0%} {f}" for f, _, share in t["inclusive"][:10]]
            lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
