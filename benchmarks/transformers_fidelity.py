"""Are the Transformers arms as fast inside the kit as alone? (issue 17, part 3)

For each seed architecture with dummy (random) weights, the same prompt and forced output
length go through
  (a) ``bare``: ``model.generate`` in one process, one request at a time, timed with CUDA
      synchronised host clocks (a streamer that only stamps each token: no HTTP, no decode);
  (b) ``naive``: the transformers-naive server, measured by the kit (``run_cell``: its client,
      its monitor, its server start-up and log copying, exactly as a cell runs);
  (c) ``serve``: ``transformers serve`` (with the configured ``--continuous-batching``),
      measured by the kit; skipped, with the reason, where it cannot start (no fastapi/uvicorn).
It prints and writes (``--out``: ``fidelity.json``, ``fidelity.md``) the median TTFT and TPOT
of each arm over ``--requests`` requests, the ratio of each to (a), and the per-token gap
distribution (p50, p90, max, p90/p50) of every arm. Each arm's process is loaded once (see
``measure_model``) and the arms take turns, the order rotating, so that the machine's own slow
minutes fall on every arm alike:
  ``--interleave``: request by request. Round i is one request of each arm, seconds apart; each
      arm's ``--warmup`` unmeasured requests run before the first round only. This is the mode
      that can resolve issue 17's 15 %: on the H200 guest one arm's TPOT wandered 0.7-1.7x
      between blocks minutes apart (docs/transformers-fidelity.md).
  otherwise: in ``--blocks`` blocks of requests, ``--warmup`` unmeasured requests per arm and block.
Paired ratios: per round (a block's medians in block mode) each arm's TPOT and TTFT over the bare
loop's of the same round; their median over rounds with a 95 % percentile-bootstrap interval over
rounds (10,000 resamples, seeded; servingbench.host.intervals) and a verdict that claims no more
than the interval does: "within 15 %" only when its upper end is <= 1.15, "slower by more than
15 %" only when its lower end is > 1.15, else "not resolved with N rounds" (and below 6 rounds
no 95 % interval of a median exists at all). The gap criterion (p90/p50 <= 1.5) is reported
twice: pooled over all of an arm's gaps, and as the median over requests of each request's own
p90/p50 (within a request the vCPU's speed changes less often than across a run).

TPOT is (E2E - TTFT) / (tokens - 1) per request, as the kit defines it; a gap is the time
between consecutive content events (for the bare loop: consecutive tokens). On the naive arm one
event carries one token (TokenStreamer); ``transformers serve`` may carry several per event,
so its gaps are per event and the table says how many tokens an event carried.

On the GPU machine, from the repository root (docs/transformers-fidelity.md, "Run it", says
how long it takes):

    python3 benchmarks/transformers_fidelity.py --config config.yaml --out /tmp/fidelity \
        --models gpt2 phi-2 llama-2-7b-chat mistral-7b-instruct --interleave --requests 64

Needs torch + transformers (+ fastapi, uvicorn, pydantic, openai for ``serve``) and the kit's
runtime deps; model preparation needs the kit's host deps (pydantic, PyYAML) for config.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from servingbench.runtime.metrics import percentile  # noqa: E402
from servingbench.runtime.spec import CellSpec, GenerationParams, ServerSpec  # noqa: E402

WORDS = ("the quick brown fox jumps over the lazy dog while a careful engineer measures how long "
         "each token takes to arrive across the loopback interface of a busy machine").split()
ARMS = ("bare", "naive", "serve")
LIMIT = 1.15  # issue 17: an arm's TPOT within 15 % of the bare loop's
RESAMPLES = 10_000  # of the paired ratios' bootstrap
# On a CPU, every arm's OpenMP threads sleep at barriers, as configs/cpu.yaml sets for the kit's
# CPU runs: spinning threads measure the machine's other load (docs/transformers-fidelity.md).
CPU_ENV = (("OMP_WAIT_POLICY", "PASSIVE"),)


# -- figures --------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    """The kit's percentile (q in 0..100); None for no values."""
    return percentile(sorted(values), q) if values else None


def request_figures(offsets_ms: list[float], tokens: int) -> dict[str, Any]:
    """TTFT, E2E, TPOT and gaps of one request from its content-event offsets (from dispatch)."""
    ttft, e2e = offsets_ms[0], offsets_ms[-1]
    return {"ttft_ms": ttft, "e2e_ms": e2e, "tokens": tokens, "events": len(offsets_ms),
            "tpot_ms": (e2e - ttft) / (tokens - 1) if tokens > 1 else None,
            "gaps_ms": [b - a for a, b in zip(offsets_ms, offsets_ms[1:])]}


def arm_summary(reqs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over requests and the pooled gap distribution of one arm."""
    gaps = [g for r in reqs for g in r["gaps_ms"]]
    tpots = [r["tpot_ms"] for r in reqs if r["tpot_ms"] is not None]
    p50, p90 = pct(gaps, 50), pct(gaps, 90)
    own = [q for r in reqs if (q := gap_ratio(r["gaps_ms"])) is not None]
    return {"requests": len(reqs),
            "ttft_ms_p50": pct([r["ttft_ms"] for r in reqs], 50),
            "tpot_ms_p50": pct(tpots, 50), "tpot_ms_min": min(tpots, default=None),
            "tpot_ms_max": max(tpots, default=None),
            "gap_ms_p50": p50, "gap_ms_p90": p90, "gap_ms_max": max(gaps, default=None),
            "gap_p90_over_p50": (p90 / p50) if p50 else None,
            "gap_p90_over_p50_request_p50": pct(own, 50),
            "tokens_per_event": (sum(r["tokens"] for r in reqs) / sum(r["events"] for r in reqs)) if reqs else None}


def gap_ratio(gaps: list[float]) -> float | None:
    """p90/p50 of one request's own gaps (the report's per-request figure); None for fewer than
    two gaps or a zero median."""
    from servingbench.host.report.gaps import request_ratio

    return request_ratio(gaps, min_gaps=2)


def block_sizes(requests: int, blocks: int) -> list[int]:
    """``requests`` split into ``blocks`` nearly equal blocks (none empty)."""
    blocks = max(1, min(blocks, requests))
    return [requests // blocks + (1 if i < requests % blocks else 0) for i in range(blocks)]


def block_plan(requests: int, blocks: int, warmup: int, interleave: bool) -> list[tuple[int, int]]:
    """(measured, warm-up requests) per arm of each block in turn. Interleaved: one measured
    request per block (a round), the warm-ups before the first only; else ``warmup`` per block."""
    if interleave:
        return [(1, warmup if i == 0 else 0) for i in range(requests)]
    return [(n, warmup) for n in block_sizes(requests, blocks)]


def arm_order(arms: list[str], block: int) -> list[str]:
    """The arms' order in a block: rotated by one each block, so that each arm leads as often."""
    k = block % len(arms)
    return arms[k:] + arms[:k]


# -- paired ratios ----------------------------------------------------------------------------
def verdict(ci: tuple[float, float] | None, rounds: int, limit: float = LIMIT) -> str:
    """What the interval of a ratio to the bare loop supports, and nothing more."""
    pct_text = f"{round((limit - 1) * 100)} %"
    if ci is not None and ci[1] <= limit:
        return f"within {pct_text}"
    if ci is not None and ci[0] > limit:
        return f"slower by more than {pct_text}"
    from servingbench.host.intervals import MIN_INTERVAL_N

    why = (f"95 % interval {ci[0]:.2f}-{ci[1]:.2f}" if ci is not None
           else f"a 95 % interval of a median needs at least {MIN_INTERVAL_N} rounds")
    return f"not resolved with {rounds} rounds ({why})"


def paired_ratio(arm_rounds: list[float | None], base_rounds: list[float | None], seed: int) -> dict[str, Any]:
    """Round by round the arm's figure over the bare loop's of the same round (rounds where
    either is missing are left out); the median ratio, its 95 % percentile-bootstrap interval
    over rounds and the verdict against ``LIMIT``."""
    from servingbench.host.intervals import bootstrap

    ratios = [a / b for a, b in zip(arm_rounds, base_rounds) if a is not None and b]
    ci = bootstrap(ratios, "p50", seed, RESAMPLES)
    return {"rounds": len(ratios), "ratio_p50": pct(ratios, 50), "ci95": list(ci) if ci else None,
            "verdict": verdict(ci, len(ratios)), "ratios": ratios}


def _dtype(device: str) -> str:
    return "float16" if device == "cuda" else "float32"


# -- the prompt -----------------------------------------------------------------------------
def make_prompt(model_dir: str, prompt_tokens: int) -> tuple[str, int]:
    """A plain-text prompt of about ``prompt_tokens`` tokens in the model's own tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    words: list[str] = []
    n = 0
    while n < prompt_tokens:
        words.append(WORDS[len(words) % len(WORDS)])
        n = len(tok(" ".join(words), add_special_tokens=False)["input_ids"])
    text = " ".join(words)
    return text, len(tok(text)["input_ids"])


# -- (a) the bare loop ------------------------------------------------------------------------
def bare_kwargs(tok: Any, prompt: str, tokens: int, temperature: float, top_p: float, device: str) -> dict[str, Any]:
    """The bare loop's ``generate`` arguments: the forced length, the kit's sampling settings."""
    inputs = tok(prompt, return_tensors="pt").to(device)
    inputs.pop("token_type_ids", None)
    return dict(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True, temperature=temperature,
                top_p=top_p, pad_token_id=tok.pad_token_id or tok.eos_token_id)


def bare_worker(model_dir: str, prompt: str, tokens: int, temperature: float, top_p: float,
                device: str = "cuda") -> None:
    """``generate`` in this process, one request at a time, each token stamped after a sync.

    Loads the model once, then runs one block per line of stdin (a line holds the measured and
    the warm-up request counts) and prints that block's per-request figures as one JSON line;
    the warm-ups run first and are not measured."""
    import torch

    from servingbench.runtime.frameworks.servers.transformers_naive_server import Generator

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = Generator(model_dir, device, _dtype(device), "dummy")  # the model exactly as the server loads it
    model, tok = gen.model, gen.tokenizer

    class StepClock:
        """A streamer that only stamps: ``generate`` hands it each token on the host (a sync)."""

        def __init__(self) -> None:
            self.stamps: list[int] = []
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            self.stamps.append(time.perf_counter_ns())

        def end(self) -> None:
            pass

    print("ready", flush=True)
    for line in sys.stdin:
        n, warmup = map(int, line.split())
        out = []
        for i in range(warmup + n):
            kw = bare_kwargs(tok, prompt, tokens, temperature, top_p, device)
            clock = StepClock()
            sync()
            t0 = time.perf_counter_ns()
            with torch.inference_mode():
                model.generate(**kw, streamer=clock)
            sync()
            if i >= warmup:
                out.append(request_figures([(s - t0) / 1e6 for s in clock.stamps], len(clock.stamps)))
        print(json.dumps(out), flush=True)
    gen.worker.shutdown()


class BareLoop:
    """The bare loop in a process of its own, kept loaded between blocks (its CUDA context and
    model stay beside the servers'; only one arm runs at a time)."""

    def __init__(self, model_dir: str, prompt: str, args: argparse.Namespace, gen: GenerationParams) -> None:
        cmd = [sys.executable, __file__, "_bare", "--model-dir", model_dir, "--prompt", prompt,
               "--tokens", str(args.tokens), "--temperature", str(gen.temperature),
               "--top-p", str(gen.top_p), "--device", args.device]
        self.timeout_s = args.arm_timeout_s
        self.errlog = tempfile.TemporaryFile()
        env = dict(os.environ, **dict(CPU_ENV)) if args.device == "cpu" else None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errlog, text=True,
                                     env=env)
        self._line()  # "ready": the model is loaded

    def _line(self) -> str:
        # One line answers each command; a process that says nothing for the arm's timeout is stuck.
        if not select.select([self.proc.stdout], [], [], self.timeout_s)[0]:
            self.proc.kill()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            self.errlog.seek(0)
            raise RuntimeError(f"bare loop failed: {self.errlog.read()[-2000:].decode(errors='replace')}")
        return line

    def run(self, n: int, warmup: int) -> list[dict[str, Any]]:
        """``n`` measured requests after ``warmup`` unmeasured ones."""
        self.proc.stdin.write(f"{n} {warmup}\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# -- (b), (c) through the kit -----------------------------------------------------------------
def cell_spec(arm: str, model: str, model_dir: str, hf_id: str, ctx: int, gen: GenerationParams,
              args: argparse.Namespace, requests: int, env: tuple[tuple[str, str], ...] = (),
              warmup: int | None = None) -> CellSpec:
    """The cell the kit runs for a server arm: ``requests`` at concurrency 1 after ``warmup``
    (default ``args.warmup``) unmeasured ones."""
    server_args = tuple(args.serve_args.split()) if arm == "transformers-serve" else ()
    server = ServerSpec(arm=arm, framework="transformers", model=model, model_dir=model_dir, hf_id=hf_id,
                        weights="dummy", device=args.device, dtype=_dtype(args.device), context_length=ctx,
                        profile="current", server_args=server_args, env=env)
    return CellSpec(server=server, task="fidelity", mode="stream", generation=gen, requests=requests,
                    warmup_requests=args.warmup if warmup is None else warmup, concurrency_levels=(1,), request_timeout_s=120.0,
                    server_start_timeout_s=600.0, monitor_interval_s=args.monitor_interval_s)


def write_workload(path: Path, prompt: str, prompt_tokens: int, tokens: int, n: int) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"p{i}", "prompt": prompt, "prompt_tokens": prompt_tokens,
                                 "target_output_tokens": tokens, "task": "fidelity"}) + "\n")
    return path


def run_kit(spec: CellSpec, workload: Path, work: Path, provider: Any = None) -> list[dict[str, Any]]:
    """One cell through ``run_cell``; the per-request figures from its requests file."""
    from servingbench.runtime.cell import run_cell
    from servingbench.runtime.providers import fresh_server
    from servingbench.runtime.results import requests_path

    out = work / "results" / "cells" / spec.arm / spec.model / f"fidelity-{time.time_ns()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    run_cell(spec, workload, out, results_dir=work / "results", provider=provider or fresh_server,
             progress_stream=open(os.devnull, "w"))
    reqs = []
    for line in requests_path(out).read_text().splitlines():
        r = json.loads(line)
        if r["error"] is None and r["event_offsets_ms"]:
            reqs.append(request_figures(r["event_offsets_ms"], r["output_tokens"] or len(r["event_offsets_ms"])))
    return reqs


# -- the arms, alternating -------------------------------------------------------------------
def measure_model(model: str, cfg: Any, mdir: str, prompt: str, workload: Path, gen: GenerationParams,
                  args: argparse.Namespace, work: Path, plan: list[tuple[int, int]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every arm of one model, taking turns block by block as ``plan`` says (``block_plan``:
    request by request with ``--interleave``).

    Each arm's process starts once and stays (the bare loop's own process; each server in a pool
    of its own, as the kit's pool keeps servers between cells), and the arms take turns block by
    block, the order rotating. The machine's own drift (on the H200 a decode step ran ~20 ms for
    seconds, then ~35 ms for seconds, whatever ran it) then falls on every arm alike instead of
    on whichever arm ran during a slow minute. Each server block is one ``run_cell`` through the
    pooled server; its cost beyond the requests' own time (``call_overhead_s_p50``, from blocks
    without warm-ups) says how far apart one round's requests are."""
    from servingbench.runtime.pool import ServerPool, pooled_server

    spec_m = cfg.models[model]
    arms: dict[str, Any] = {}
    reqs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    per_block: dict[str, dict[str, list[float | None]]] = {arm: {"tpot": [], "ttft": []} for arm in args.arms}
    overhead_s: dict[str, list[float]] = {arm: [] for arm in args.arms}
    pools = {arm: ServerPool(work / "pools" / f"{model}-{arm}") for arm in args.arms if arm != "bare"}
    bare: BareLoop | None = None
    t_arm = {arm: 0.0 for arm in args.arms}

    def block(arm: str, n: int, warmup: int) -> list[dict[str, Any]]:
        nonlocal bare
        if arm == "bare":
            if bare is None:
                bare = BareLoop(mdir, prompt, args, gen)
            return bare.run(n, warmup)
        env = CPU_ENV if args.device == "cpu" else ()
        if arm == "naive":
            spec = cell_spec("transformers-naive", model, mdir, spec_m.hf_id, spec_m.context_length, gen, args, n,
                             env, warmup)
        else:
            wdir = model_dir_for(cfg, model, work / "models", with_weights=True)
            spec = cell_spec("transformers-serve", model, wdir, spec_m.hf_id, spec_m.context_length, gen, args, n,
                             env, warmup)
        return run_kit(spec, workload, work, provider=pooled_server(pools[arm]))

    try:
        for bi, (n, warmup) in enumerate(plan):
            for arm in arm_order(list(args.arms), bi):
                if arm in arms:  # skipped
                    continue
                t = time.monotonic()
                try:
                    got = block(arm, n, warmup)
                except Exception as exc:  # one arm that cannot run must not cost the others
                    arms[arm] = {"skipped": f"{type(exc).__name__}: {str(exc)[:300]}"}
                    print(f"[{model}] {arm} skipped: {arms[arm]['skipped']}", file=sys.stderr, flush=True)
                    continue
                wall = time.monotonic() - t
                t_arm[arm] += wall
                if warmup == 0 and got:  # what a block costs beyond its requests' own time
                    overhead_s[arm].append(wall - sum(r["e2e_ms"] for r in got) / 1000)
                reqs[arm] += got
                summary = arm_summary(got) if got else {}
                per_block[arm]["tpot"].append(summary.get("tpot_ms_p50"))
                per_block[arm]["ttft"].append(summary.get("ttft_ms_p50"))
                if not args.interleave or bi % 8 == 0 or bi == len(plan) - 1:  # a round is seconds: every 8th
                    print(f"[{model}] {'round' if args.interleave else 'block'} {bi + 1}/{len(plan)} {arm}: "
                          f"TPOT p50 {_f(per_block[arm]['tpot'][-1], '{:.2f}')} ms ({wall:.1f} s)",
                          file=sys.stderr, flush=True)
    finally:
        if bare is not None:
            bare.close()
        for pool in pools.values():
            pool.stop_all()
    raw: dict[str, Any] = {}
    for arm in args.arms:
        if arm in arms:
            continue
        arms[arm] = {**arm_summary(reqs[arm]), "seconds": round(t_arm[arm], 1),
                     "call_overhead_s_p50": pct(overhead_s[arm], 50),
                     "tpot_ms_p50_per_block": per_block[arm]["tpot"], "ttft_ms_p50_per_block": per_block[arm]["ttft"]}
        raw[arm] = reqs[arm]
        print(f"[{model}] {arm}: TTFT {_f(arms[arm]['ttft_ms_p50'])} ms, TPOT {_f(arms[arm]['tpot_ms_p50'], '{:.2f}')} ms, "
              f"gap p90/p50 {_f(arms[arm]['gap_p90_over_p50'], '{:.2f}')} pooled, "
              f"{_f(arms[arm]['gap_p90_over_p50_request_p50'], '{:.2f}')} per request; "
              f"{t_arm[arm]:.0f} s, {_f(arms[arm]['call_overhead_s_p50'], '{:.3f}')} s per call beyond its requests",
              file=sys.stderr, flush=True)
    base = per_block.get("bare", {"tpot": []})["tpot"]
    for arm, s in arms.items():  # the ratio block by block: how steady it is
        if "skipped" not in s and arm != "bare" and base and not args.interleave:
            s["tpot_ratio_per_block"] = [(x / y) if x and y else None for x, y in zip(per_block[arm]["tpot"], base)]
    return arms, raw


def add_ratios(model: str, arms: dict[str, Any]) -> None:
    """Each arm's ratios to the bare loop: of the medians, and paired round by round."""
    from servingbench.host.intervals import seed_for

    base = arms.get("bare", {})
    if "tpot_ms_p50" not in base:
        return
    for arm, s in arms.items():
        if "skipped" in s:
            continue
        s["tpot_ratio"] = s["tpot_ms_p50"] / base["tpot_ms_p50"] if base["tpot_ms_p50"] else None
        s["ttft_ratio"] = s["ttft_ms_p50"] / base["ttft_ms_p50"] if base["ttft_ms_p50"] else None
        if arm != "bare":
            for figure in ("tpot", "ttft"):
                s[f"{figure}_ratio_paired"] = paired_ratio(s[f"{figure}_ms_p50_per_block"],
                                                           base[f"{figure}_ms_p50_per_block"],
                                                           seed_for("fidelity", model, arm, figure))


# -- the table -------------------------------------------------------------------------------
def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _how(results: dict[str, Any]) -> str:
    """How the arms took turns, in words."""
    if results.get("interleave"):
        return (f"the arms took turns request by request, {results['requests']} rounds, order rotating, "
                f"{results['warmup']} warm-up requests per arm before the first round only")
    return (f"{results['requests']} requests per arm (medians) in {results.get('blocks', 1)} alternating blocks"
            + (f", {results['warmup']} warm-ups per arm and block" if "warmup" in results else ""))


def _ci(p: dict[str, Any] | None) -> str:
    return "-" if not p or not p["ci95"] else f"{p['ci95'][0]:.2f}-{p['ci95'][1]:.2f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Prompt ~{results['prompt_tokens']} tokens, {results['tokens']} output tokens forced, "
             f"{_how(results)}, concurrency 1, kit monitor interval "
             f"{results['monitor_interval_s']} s. Ratios are to the bare loop (of the medians). "
             "Gap p90/p50: pooled over all the arm's gaps, and the median over requests of each request's own.", "",
             "| model | arm | TTFT ms | TTFT ratio | TPOT ms | TPOT ratio | TPOT min-max | gap p50 | gap p90 | gap max "
             "| p90/p50 pooled | p90/p50 per request (median) | tokens/event |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, arms in results["models"].items():
        for arm, s in arms.items():
            if "skipped" in s:
                lines.append(f"| {model} | {arm} | skipped: {s['skipped']} |" + " |" * 11)
                continue
            lines.append(
                f"| {model} | {arm} | {_f(s['ttft_ms_p50'])} | {_f(s.get('ttft_ratio'), '{:.2f}')} | "
                f"{_f(s['tpot_ms_p50'], '{:.2f}')} | {_f(s.get('tpot_ratio'), '{:.2f}')} | "
                f"{_f(s['tpot_ms_min'], '{:.2f}')}-{_f(s['tpot_ms_max'], '{:.2f}')} | {_f(s['gap_ms_p50'], '{:.2f}')} | "
                f"{_f(s['gap_ms_p90'], '{:.2f}')} | {_f(s['gap_ms_max'], '{:.2f}')} | "
                f"{_f(s['gap_p90_over_p50'], '{:.2f}')} | {_f(s.get('gap_p90_over_p50_request_p50'), '{:.2f}')} | "
                f"{_f(s['tokens_per_event'], '{:.2f}')} |")
    paired = [(model, arm, s) for model, arms in results["models"].items() for arm, s in arms.items()
              if s.get("tpot_ratio_paired")]
    if paired:
        unit = "round" if results.get("interleave") else "block (its medians)"
        lines += ["", f"Paired ratios to the bare loop: per {unit}, the arm's figure over the bare loop's of the "
                  f"same {unit.split()[0]}; the median over them and its 95 % percentile-bootstrap interval "
                  f"({results.get('resamples', RESAMPLES):,} resamples, seeded). \"within 15 %\" only when the "
                  f"interval's upper end is <= {results.get('limit', LIMIT)}, \"slower by more than 15 %\" only when "
                  "its lower end is above it (an arm faster than the bare loop meets the criterion).", "",
                  "| model | arm | pairs | TPOT ratio | 95 % interval | TPOT verdict | TTFT ratio | 95 % interval | TTFT verdict |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for model, arm, s in paired:
            t, f = s["tpot_ratio_paired"], s.get("ttft_ratio_paired")
            lines.append(f"| {model} | {arm} | {t['rounds']} | {_f(t['ratio_p50'], '{:.2f}')} | {_ci(t)} | "
                         f"{t['verdict']} | {_f(f and f['ratio_p50'], '{:.2f}')} | {_ci(f)} | "
                         f"{f['verdict'] if f else '-'} |")
    calls = [f"{model} {arm} {s['call_overhead_s_p50']:.3f} s" for model, arms in results["models"].items()
             for arm, s in arms.items() if s.get("call_overhead_s_p50") is not None]
    if calls:
        lines += ["", "Wall time of one block beyond its measured requests' own (median over blocks without "
                  "warm-ups; for a server arm one `run_cell` through its pooled server): " + ", ".join(calls) + "."]
    blocks = [f"- {model} {arm}: " + ", ".join(_f(x, "{:.2f}") for x in s["tpot_ratio_per_block"])
              for model, arms in results["models"].items() for arm, s in arms.items() if s.get("tpot_ratio_per_block")]
    if blocks:
        lines += ["", "TPOT ratio to the bare loop, block by block (the arms took turns; a steady ratio "
                  "is the arm's own, a wandering one the machine's):", "", *blocks]
    return "\n".join(lines) + "\n"


def model_dir_for(cfg: Any, model: str, root: Path, with_weights: bool) -> str:
    from servingbench.host.models import prepare_model

    d = root / (model + ("-w" if with_weights else ""))
    if not (d / "config.json").exists():
        prepare_model(cfg, model, d, with_weights=with_weights)
    return str(d)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--models", nargs="+", default=["gpt2"])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--task", default="chat", help="whose sampling settings (config generation)")
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2,
                    help="unmeasured requests per arm and block (with --interleave: per arm, before the first round)")
    ap.add_argument("--blocks", type=int, default=4,
                    help="the arms take turns in this many blocks of requests (1: one arm after the other)")
    ap.add_argument("--interleave", action="store_true",
                    help="the arms take turns request by request (--requests rounds; --blocks is ignored)")
    ap.add_argument("--cpus", default=None,
                    help="run every arm on these CPUs only, e.g. 2,3 (inherited by the bare loop, the pool "
                         "keepers and the servers): on a VM whose vCPUs differ in speed, every arm then "
                         "gets the same ones (default: all, as users run)")
    ap.add_argument("--monitor-interval-s", type=float, default=0.1, help="the kit's monitor (cells' default)")
    ap.add_argument("--serve-args", default="--continuous-batching")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke test only")
    ap.add_argument("--arm-timeout-s", type=float, default=600.0)
    ap.add_argument("--work", default=None, help="model dirs and kit results (default: a temp dir)")
    ap.add_argument("--out", default="benchmarks/out/transformers_fidelity")
    args = ap.parse_args(argv)
    if args.cpus:
        try:
            os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        except (ValueError, OSError):
            print(f"--cpus {args.cpus}: not a comma-separated list of CPUs this process may use "
                  f"({sorted(os.sched_getaffinity(0))})", file=sys.stderr)
            return 2

    from servingbench.host.config import load_config

    cfg = load_config(args.config).model_copy(update={"weights": "dummy"})  # the seed's shapes, random weights
    work = Path(args.work or tempfile.mkdtemp(prefix="fidelity-"))
    plan = block_plan(args.requests, args.blocks, args.warmup, args.interleave)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"prompt_tokens": args.prompt_tokens, "tokens": args.tokens,
                               "cpus": sorted(os.sched_getaffinity(0)),
                               "requests": args.requests, "interleave": args.interleave, "warmup": args.warmup,
                               "blocks": len(plan), "limit": LIMIT, "resamples": RESAMPLES,
                               "monitor_interval_s": args.monitor_interval_s,
                               "task": args.task, "models": {}, "raw": {}}
    for model in args.models:
        spec_m = cfg.models[model]
        g = cfg.generation[model][args.task]
        gen = GenerationParams(temperature=g.temperature, top_p=g.top_p, max_tokens=args.tokens)
        mdir = model_dir_for(cfg, model, work / "models", with_weights=False)
        prompt, n_prompt = make_prompt(mdir, args.prompt_tokens)
        workload = write_workload(work / f"{model}.jsonl", prompt, n_prompt, args.tokens, max(n + w for n, w in plan))
        arms, raw = measure_model(model, cfg, mdir, prompt, workload, gen, args, work, plan)
        add_ratios(model, arms)
        results["models"][model] = arms
        results["raw"][model] = raw
        (out / "fidelity.json").write_text(json.dumps(results, indent=1))  # after each model: nothing lost
        (out / "fidelity.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        bp = argparse.ArgumentParser()
        for name in ("--model-dir", "--prompt"):
            bp.add_argument(name, required=True)
        bp.add_argument("--tokens", type=int, required=True)
        bp.add_argument("--temperature", type=float, required=True)
        bp.add_argument("--top-p", type=float, required=True)
        bp.add_argument("--device", default="cuda")
        a = bp.parse_args(sys.argv[2:])
        bare_worker(a.model_dir, a.prompt, a.tokens, a.temperature, a.top_p, a.device)
        sys.exit(0)
    sys.exit(main())
