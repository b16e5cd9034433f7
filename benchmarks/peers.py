"""GuideLLM and NVIDIA AIPerf as peers in the calibration: their own environments, their CLIs.

Each peer is installed, at a pinned version, into its own virtual environment under
``.bench-envs/`` (git-ignored; never into the kit's environment: both pull in large, fast-moving
dependency trees), created on first use with ``python -m venv`` and pip. Each run is one call of
the tool's own CLI against the calibration server with a dataset of unique prompts, a local
word-level tokenizer (so that neither tool reaches for the Hugging Face Hub) and the tool's own
warm-up; its per-request export is read back as the common request dicts of
``calibration_stats`` (AIPerf's requests by the ``X-Request-ID`` it sends, GuideLLM's by prompt).

Scheduling: the tool's whole process tree runs on the client core (CPU affinity, as ``taskset``)
with the priority the driver asks for (``rr``: SCHED_RR priority 1, as ``chrt -r 1``; ``nice``:
nice -10; ``none``), set in the child before ``exec`` and inherited by every process it spawns.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Peer:
    package: str
    version: str
    cli: str
    # how the tool defines the rate it reports (RESULTS.md quotes these)
    self_rate: str


PEERS = {
    "guidellm": Peer("guidellm", "0.8.1", "guidellm",
                     "metrics.requests_per_second.successful.mean: successful requests / benchmark duration "
                     "(first to last measured request, warm-up excluded), by time.time()"),
    "aiperf": Peer("aiperf", "0.13.0", "aiperf",
                   "request_throughput.avg: requests / benchmark_duration of the profiling phase, by the "
                   "timing manager's clock"),
}


# Each on the client core alone. GuideLLM: SCHED_RR priority 1, the real-time class our
# single-process clients get (SCHED_FIFO 1), which keeps neighbours' work off its core. AIPerf:
# nice -10 instead: under RR a woken process does not preempt a running sibling of the same
# priority, and AIPerf's dataset manager and record processor run CPU bursts on the same core
# as its request worker, which then waits up to a 100 ms slice (measured: 29 req/s under RR,
# 100 under nice -10, burst c=16; RESULTS.md). GuideLLM under nice -10 lost 85% to neighbours.
DEFAULT_SCHED = {"guidellm": "rr", "aiperf": "nice"}
SCHEDS = ("rr", "nice", "none")


def parse_sched(text: str) -> dict[str, str]:
    """``rr`` (every peer) or ``guidellm=rr,aiperf=nice`` (unnamed peers keep their default)."""
    out = dict(DEFAULT_SCHED)
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, eq, value = part.rpartition("=")
        if value not in SCHEDS:
            raise ValueError(f"{value!r} is not one of {', '.join(SCHEDS)}")
        if not eq:
            out = {k: value for k in PEERS}
        elif name in PEERS:
            out[name] = value
        else:
            raise ValueError(f"unknown peer {name!r}")
    return out


class PeerUnavailable(Exception):
    """The peer cannot be installed or run here; the message says why (RESULTS.md quotes it)."""


def env_dir(root: Path, name: str) -> Path:
    return root / f"{name}-{PEERS[name].version}"


def _torch_constraint() -> str | None:
    """The kit's own torch, when it is a CPU build: GuideLLM depends on torch, and pip would
    otherwise fetch the newest CUDA build (several GB) for a tool that only sends HTTP."""
    try:
        from importlib.metadata import version
        v = version("torch")
    except Exception:
        return None
    return f"torch=={v}" if "+cpu" in v else None


def ensure_env(name: str, root: Path, python: str, log=print) -> Path:
    """The peer's CLI in its own environment, created (minutes, once) if missing."""
    peer = PEERS[name]
    d = env_dir(root, name)
    cli = d / "bin" / peer.cli
    ready = d / ".ready"
    if ready.exists() and cli.exists():
        return cli
    d.parent.mkdir(parents=True, exist_ok=True)
    log(f"  creating {d} ({peer.package}=={peer.version}; a few minutes, once)", flush=True)
    r = subprocess.run([python, "-m", "venv", "--clear", str(d)], capture_output=True, text=True)
    if r.returncode:
        raise PeerUnavailable(f"python -m venv with {python} failed: {_last_line(r.stderr)}")
    cmd = [str(d / "bin" / "python"), "-m", "pip", "install", "-q", f"{peer.package}=={peer.version}"]
    cons = _torch_constraint()
    r = None
    if cons:  # where that build cannot be found (PyPI has no +cpu builds), install unconstrained
        cfile = d / "constraints.txt"
        cfile.write_text(cons + "\n")
        r = subprocess.run(cmd + ["-c", str(cfile)], capture_output=True, text=True)
    if r is None or r.returncode:
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode or not cli.exists():
        raise PeerUnavailable(f"pip install {peer.package}=={peer.version} failed with {python}: "
                              f"{_last_line(r.stderr or r.stdout)}")
    ready.write_text(peer.version + "\n")
    return cli


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and "is ignored: it is neither a file nor a directory" not in ln]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:300]


def write_tokenizer(d: Path) -> Path:
    """A word-level tokenizer (whitespace split, " tok" is one token, anything else [UNK]):
    both tools load one to count tokens; the calibration server sends " tok" per event."""
    d.mkdir(parents=True, exist_ok=True)
    special = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": 0, "content": "[UNK]", **special}, {"id": 1, "content": "</s>", **special}],
           "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
           "decoder": None,
           "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "</s>": 1, "tok": 2}, "unk_token": "[UNK]"}}
    (d / "tokenizer.json").write_text(json.dumps(tok))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "eos_token": "</s>",
        "model_max_length": 4096}))
    return d


def prompts_for(name: str, tag: str, count: int) -> list[str]:
    return [f"{tag}-{name}-{i}" for i in range(count)]


def command(name: str, cli: Path, url: str, level: int, n: int, tokens: int, work: Path,
            tokenizer: Path) -> list[str]:
    """The tool's own CLI for one closed-loop level: ``level`` concurrent streams, ``level``
    warm-up requests (the tool's own warm-up, excluded from its figures), then ``n`` measured."""
    data = work / "prompts.jsonl"
    field = "text" if name == "aiperf" else "prompt"
    with data.open("w") as fh:
        for p in prompts_for(name, work.name, n + level + 8):  # unique prompt per request sent
            fh.write(json.dumps({field: p}) + "\n")
    if name == "aiperf":
        return [str(cli), "profile", "--model", "calibration", "--url", url, "--endpoint-type", "completions",
                "--streaming", "--tokenizer", str(tokenizer), "--input-file", str(data),
                "--custom-dataset-type", "single_turn", "--dataset-sampling-strategy", "sequential",
                "--concurrency", str(level), "--request-count", str(n), "--warmup-request-count", str(level),
                "--extra-inputs", f"max_tokens:{tokens}", "--random-seed", "0",
                "--output-artifact-dir", str(work / "out"), "--ui", "none", "--no-server-metrics",
                "--no-gpu-telemetry"]
    if name == "guidellm":
        scenario = {"spec": {
            "backend": {"kind": "openai_http", "target": url, "model": "calibration",
                        "request_format": "/v1/completions", "max_tokens": tokens, "stream": True,
                        "validate_backend": False},
            "profile": {"kind": "concurrent", "streams": level, "warmup": {"value": level, "mode": "requests"}},
            "constraints": [{"kind": "max_requests", "count": n + level}],
            "tokenizer": {"kind": "huggingface_auto", "model": str(tokenizer)},
            "data": [{"kind": "json_file", "path": str(data)}],
            "outputs": [{"kind": "json", "path": str(work / "out.json")}]}}
        (work / "scenario.json").write_text(json.dumps(scenario, indent=1))
        return [str(cli), "run", "--config", str(work / "scenario.json"), "--disable-console-interactive"]
    raise ValueError(f"unknown peer {name!r}")


def parse(name: str, work: Path) -> dict[str, Any]:
    """The tool's export as ``requests`` (calibration_stats dicts) and its self-reported rate."""
    if name == "aiperf":
        return parse_aiperf(work / "out")
    if name == "guidellm":
        return parse_guidellm(work / "out.json")
    raise ValueError(f"unknown peer {name!r}")


def parse_aiperf(out: Path) -> dict[str, Any]:
    """profile_export.jsonl (one record per request, warm-up included and marked) and
    profile_export_aiperf.json (the profiling phase's summary)."""
    reqs = []
    with (out / "profile_export.jsonl").open() as fh:
        for line in fh:
            r = json.loads(line)
            md, m = r["metadata"], r.get("metrics") or {}
            ttft = (m.get("time_to_first_token") or {})
            ok = not r.get("error") and not md.get("was_cancelled") and ttft.get("value") is not None
            reqs.append({"p": None, "rid": md.get("x_request_id"), "ok": ok,
                         "err": str(r.get("error"))[:200] if r.get("error") else None,
                         "measured": md.get("benchmark_phase") == "profiling",
                         "ttft_ms": _ms(ttft) if ok else None,
                         "start_ns": md.get("request_start_ns"), "end_ns": md.get("request_end_ns")})
    summary = json.loads((out / "profile_export_aiperf.json").read_text())
    rate = (summary.get("request_throughput") or {}).get("avg")
    dur = (summary.get("benchmark_duration") or {}).get("avg")
    return {"requests": reqs, "self_req_per_s": rate, "self_window_s": dur}


def _ms(metric: dict[str, Any]) -> float:
    scale = {"ms": 1.0, "ns": 1e-6, "us": 1e-3, "sec": 1e3, "s": 1e3}[metric.get("unit", "ms")]
    return metric["value"] * scale


def parse_guidellm(path: Path) -> dict[str, Any]:
    """benchmarks[0] of the JSON report: per-request stats of every request (warm-up ones start
    before the benchmark's measured ``start_time``) and the reported requests per second."""
    b = json.loads(path.read_text())["benchmarks"][0]
    t0 = b["start_time"]
    reqs = []
    for status, rows in b["requests"].items():
        if status == "total" or not isinstance(rows, list):
            continue
        for r in rows:
            try:
                prompt = json.loads(r["request_args"])["body"]["prompt"]
            except (KeyError, TypeError, ValueError):
                prompt = None
            start, end = r.get("request_start_time"), r.get("request_end_time")
            ok = status == "successful" and r.get("time_to_first_token_ms") is not None
            reqs.append({"p": prompt, "rid": None, "ok": ok, "err": None if ok else status,
                         "measured": start is not None and start >= t0,
                         "ttft_ms": r.get("time_to_first_token_ms") if ok else None,
                         "start_ns": int(start * 1e9) if start is not None else None,
                         "end_ns": int(end * 1e9) if end is not None else None})
    rate = b["metrics"]["requests_per_second"]["successful"]["mean"]
    return {"requests": reqs, "self_req_per_s": rate, "self_window_s": b.get("duration")}


def _child_setup(cpus: set[int] | None, sched: str):
    def setup() -> None:
        os.setsid()  # its own process group: a timed-out tool is killed whole
        if cpus:
            os.sched_setaffinity(0, cpus)
        if sched == "rr":
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        elif sched == "nice":
            os.setpriority(os.PRIO_PROCESS, 0, -10)
    return setup


def launch_prefix(cpus: set[int] | None, sched: str) -> str:
    """The shell equivalent of what the child is started with (for the record)."""
    parts = []
    if cpus:
        parts.append("taskset -c " + ",".join(str(c) for c in sorted(cpus)))
    parts.append({"rr": "chrt -r 1", "nice": "nice -n -10", "none": ""}[sched])
    return " ".join(p for p in parts if p)


def run(name: str, argv: list[str], work: Path, cpus: set[int] | None, sched: str,
        timeout_s: float) -> dict[str, Any]:
    """Run one CLI call; returns its exit status, wall and CPU seconds (the whole process tree,
    start-up included, from RUSAGE_CHILDREN) and the tail of its output."""
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    if name == "guidellm":  # AIPerf 0.13 cannot load a local tokenizer path in offline mode
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTHONPATH", None)  # the kit's path must not leak into the tool's interpreter
    log = work / "tool.log"
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=work, env=env,
                                preexec_fn=_child_setup(cpus, sched))
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = None
    wall = time.monotonic() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    tail = log.read_text(errors="replace").splitlines()[-15:]
    return {"rc": rc, "wall_s": wall, "cpu_s": cpu, "tail": tail}


def temp_workdir(root: Path, tag: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=tag + "-", dir=root))
    return d


if __name__ == "__main__":  # install the peers ahead of a run: python benchmarks/peers.py [root]
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / ".bench-envs"
    for nm in PEERS:
        try:
            print(nm, ensure_env(nm, base, sys.executable))
        except PeerUnavailable as e:
            print(nm, "unavailable:", e)
