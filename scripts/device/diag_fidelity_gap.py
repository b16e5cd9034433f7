# Device (one call, ~4 min): PYTHONPATH=$PWD:$PYTHONPATH timeout 250 python3 scripts/device/diag_fidelity_gap.py --out $OUT --budget-s 215
"""Why does the naive server decode slower than the bare ``generate`` loop on phi-2 and mistral?

Issue 17: on an H200 the naive server's TPOT through the kit was 1.03x the bare loop's on gpt2
and 0.98x on llama-2-7b-chat, but 1.16x on phi-2 and 1.61x on mistral-7b-instruct
(benchmarks/fidelity-h200/). This script loads each model once (dummy weights, as the kit
prepares them) and measures, **interleaved request by request** so that the machine's own drift
hits every variant alike:

  bare            the benchmark's bare loop: ``generate`` on the main thread, a streamer that only
                  stamps each token (benchmarks/transformers_fidelity.py)
  bare_worker     the same call on the naive server's worker thread (``Generator.worker``)
  naive_path      ``Generator.stream`` exactly (worker thread, TokenStreamer decoding every token,
                  a reader thread), stamped where the server would write each event; no HTTP
  http            the kit's naive server in its own process (launched as the adapter launches it),
                  read over HTTP by a minimal SSE reader here, stamped per event
  kit             the ``http`` server read by the kit's client (LoadClient) with the kit's Monitor
                  running, as a cell measures it
  http_direct     the same server writing each event from the generate thread (no queue, no
                  reader thread woken per token: a candidate remedy for GIL hand-offs)
  http_pinned     the same server with its generate thread pinned to one CPU (a candidate remedy
                  for per-request CPU placement)
  (on request) decode: main thread, bare kwargs, the server's ``TokenStreamer``, no reader;
  server_kwargs: main thread, stamping streamer, the generate() kwargs the server builds

For every variant: median TPOT over requests (and its ratio to ``bare``), per-token gap p50/p90/
max, and the generate thread's CPU time per token where it can be read (in-process variants:
``time.thread_time``; the server: its process's utime+stime from /proc). Also per model: the
attention implementation, the cache class and its layer classes, the logits processors
``generate`` builds for each path, the generation config, the host syncs per source line; the
bare loop's ms/token pinned to each CPU in turn (are some vCPUs slower?) and pinned next to a
busy process on each other CPU (which CPU shares its core?); the GPU's kernel time per token;
a cProfile of one bare and one naive_path request (top functions on the generate thread).

    PYTHONPATH=$PWD python3 scripts/device/diag_fidelity_gap.py --out $OUT        # the GPU run
    PYTHONPATH=$PWD python3 scripts/device/diag_fidelity_gap.py --tiny --out /tmp/d  # CPU check

Writes ``diag_fidelity_gap.json`` and ``diag_fidelity_gap.md`` (and ``profile-*.txt``) to
``--out`` after every model, so a call cut short keeps what it measured. Needs torch,
transformers, PyYAML and the kit's source; pydantic (the kit's config loader) is used when present.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import json
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

DEFAULT_MODELS = ["mistral-7b-instruct", "phi-2", "llama-2-7b-chat"]
WEIGHT = {"mistral-7b-instruct": 0.45, "phi-2": 0.35, "llama-2-7b-chat": 0.2}  # share of the budget
WORDS = ("the quick brown fox jumps over the lazy dog while a careful engineer measures how long "
         "each token takes to arrive across the loopback interface of a busy machine").split()
# Few layers, small hidden size: Python and dispatch dominate a step, as on the GPU.
TINY = {"num_hidden_layers": 4, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


# -- models as the kit prepares them ------------------------------------------------------
def load_cfg(path: Path, tiny: bool) -> Any:
    """The kit's config (its loader when pydantic is here, else the YAML's numbers as attributes)."""
    try:
        from servingbench.host.config import load_config

        cfg = load_config(path)
        models = {name: m.model_copy(update={"architecture": _tiny(m.architecture) if tiny else m.architecture})
                  for name, m in cfg.models.items()}
        return cfg.model_copy(update={"weights": "dummy", "models": models})
    except ImportError as exc:  # no pydantic: the YAML is enough for prepare_model
        log(f"kit config loader unavailable ({exc}); reading {path} with PyYAML")
        import yaml

        sys.modules.setdefault("servingbench.host.config", types.SimpleNamespace(Config=object, load_config=None))
        raw = yaml.safe_load(path.read_text())
        models = {}
        for name, m in raw["models"].items():
            arch = _tiny(m["architecture"]) if tiny else m["architecture"]
            models[name] = types.SimpleNamespace(
                hf_id=m["hf_id"], chat_template=bool(m.get("chat_template", False)), source=m.get("source", "hub"),
                architecture=arch, context_length=int(arch["max_position_embeddings"]))
        return types.SimpleNamespace(weights="dummy", models=models)


def _tiny(arch: dict[str, Any]) -> dict[str, Any]:
    a = {**arch, **TINY}
    if "num_key_value_heads" in a:  # keep grouped-query attention where the real model has it
        gqa = arch["num_key_value_heads"] != arch["num_attention_heads"]
        a["num_key_value_heads"] = TINY["num_attention_heads"] // 2 if gqa else TINY["num_attention_heads"]
    return a


def prepare(cfg: Any, model: str, root: Path) -> str:
    from servingbench.host.models import prepare_model

    d = root / model
    if not (d / "config.json").exists():
        prepare_model(cfg, model, d, with_weights=False)
    return str(d)


def make_prompt(tok: Any, n_tokens: int) -> str:
    words: list[str] = []
    while len(tok(" ".join(words), add_special_tokens=False)["input_ids"]) < n_tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    return " ".join(words)


# -- the naive server's module, wherever it lives now ----------------------------------------
def server_module(model_dir: str, device: str, dtype: str) -> tuple[types.ModuleType, list[str], dict[str, str]]:
    """The naive server's module and the argv/env the kit's adapter launches it with."""
    from servingbench.runtime.frameworks import get_adapter
    from servingbench.runtime.spec import ServerSpec

    spec = ServerSpec(arm="transformers-naive", framework="transformers", model="m", model_dir=model_dir,
                      hf_id="x/y", weights="dummy", device=device, dtype=dtype, context_length=2048)
    launch = get_adapter("transformers-naive").launch(spec, "127.0.0.1", 0)
    argv = list(launch.argv)
    mod = importlib.import_module(argv[argv.index("-m") + 1])
    return mod, argv, dict(launch.env)


# -- stamping -------------------------------------------------------------------------------
class StepClock:
    """A streamer that only stamps (wall, this thread's CPU) at each token; skips the prompt."""

    def __init__(self) -> None:
        self.stamps: list[tuple[int, int]] = []
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.stamps.append((time.perf_counter_ns(), time.thread_time_ns()))

    def end(self) -> None:
        pass


def figures(t0: int, stamps: list[int], cpu_ns: int | None = None) -> dict[str, Any]:
    """TTFT, TPOT, gaps (ms) of one request from its per-token (or per-event) stamps."""
    offs = [(s - t0) / 1e6 for s in stamps]
    n = len(offs)
    return {"ttft_ms": offs[0] if offs else None, "tokens": n,
            "tpot_ms": (offs[-1] - offs[0]) / (n - 1) if n > 1 else None,
            "gaps_ms": [b - a for a, b in zip(offs, offs[1:])],
            "cpu_ms_per_token": (cpu_ns / 1e6 / n) if cpu_ns is not None and n else None}


class Bench:
    """One model loaded in this process (as the server loads it) plus its server processes."""

    def __init__(self, args: argparse.Namespace, model: str, model_dir: str) -> None:
        self.args, self.model_name, self.model_dir = args, model, model_dir
        self.dtype = "float16" if args.device == "cuda" else "float32"
        self.mod, self.argv, self.env = server_module(model_dir, args.device, self.dtype)
        self.servers: dict[str, tuple[subprocess.Popen, int]] = {}
        self.gen = None

    # in-process ------------------------------------------------------------------------
    def load(self) -> None:
        import torch

        self.torch = torch
        self.gen = self.mod.Generator(self.model_dir, self.args.device, self.dtype, "dummy")
        self.tok, self.model = self.gen.tokenizer, self.gen.model
        self.prompt = make_prompt(self.tok, self.args.prompt_tokens)
        self.sync = torch.cuda.synchronize if self.args.device == "cuda" else (lambda: None)
        self._hooks()

    def req(self, tokens: int) -> dict[str, Any]:
        return {"prompt": self.prompt, "max_new_tokens": tokens, "min_new_tokens": tokens,
                "temperature": self.args.temperature, "top_p": self.args.top_p, "do_sample": True}

    def bare_kwargs(self, tokens: int) -> dict[str, Any]:
        inputs = self.tok(self.prompt, return_tensors="pt").to(self.args.device)
        inputs.pop("token_type_ids", None)
        return dict(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True,
                    temperature=self.args.temperature, top_p=self.args.top_p,
                    pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)

    def _timed_generate(self, kw: dict[str, Any], streamer: Any) -> int:
        self.sync()
        t0 = time.perf_counter_ns()
        with self.torch.inference_mode():
            self.model.generate(**kw, streamer=streamer)
        self.sync()
        return t0

    def _hooks(self) -> None:
        """Stamp every forward (wall and thread CPU): its launch cost, apart from the rest of a step."""
        self.fwd: list[tuple[int, int, int, int]] = []
        pre: dict[int, tuple[int, int]] = {}

        def before(*_: Any) -> None:
            pre[threading.get_ident()] = (time.perf_counter_ns(), time.thread_time_ns())

        def after(*_: Any) -> None:
            w0, c0 = pre.pop(threading.get_ident(), (0, 0))
            self.fwd.append((w0, time.perf_counter_ns(), c0, time.thread_time_ns()))

        self.model.register_forward_pre_hook(before)
        self.model.register_forward_hook(after)

    def _instrumented(self, tid: int, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one request; add the generate thread's switches/CPU and per-forward timings."""
        st0 = thread_state(os.getpid(), tid)
        self.fwd.clear()
        r = body()
        st1 = thread_state(os.getpid(), tid)
        if st0 and st1:
            r.update(state_delta({tid: st0}, {tid: st1}))
        decode = self.fwd[1:]  # the first forward is the prefill
        if decode:
            r["fwd_ms_p50"] = pct([(w1 - w0) / 1e6 for w0, w1, _, _ in decode], 50)
            r["fwd_cpu_ms_p50"] = pct([(c1 - c0) / 1e6 for _, _, c0, c1 in decode], 50)
            starts = [w0 for w0, _, _, _ in decode]
            r["step_ms_p50"] = pct([(b - a) / 1e6 for a, b in zip(starts, starts[1:])], 50)
        return r

    def worker_tid(self) -> int:
        return self.gen.worker.submit(threading.get_native_id).result()

    def bare(self, tokens: int, on_worker: bool = False, server_kwargs: bool = False) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            kw = self.gen._kwargs(self.req(tokens)) if server_kwargs else self.bare_kwargs(tokens)
            clock = StepClock()
            t0 = self._timed_generate(kw, clock)
            r = figures(t0, [w for w, _ in clock.stamps])
            cpu = [c for _, c in clock.stamps]
            r["cpu_ms_per_token"] = (cpu[-1] - cpu[0]) / 1e6 / (len(cpu) - 1) if len(cpu) > 1 else None
            return r

        if on_worker:
            return self._instrumented(self.worker_tid(), lambda: self.gen.worker.submit(run).result())
        return self._instrumented(threading.get_native_id(), run)

    def decode(self, tokens: int) -> dict[str, Any]:
        """Bare kwargs on the main thread with the server's TokenStreamer (no reader)."""
        stamps: list[int] = []
        base = self.mod.TokenStreamer

        class Stamped(base):  # type: ignore[misc, valid-type]
            def put(self, value: Any) -> None:
                if not (self.skip_prompt and self.next_tokens_are_prompt):
                    stamps.append(time.perf_counter_ns())
                super().put(value)

        def run() -> dict[str, Any]:
            streamer = Stamped(self.tok, skip_prompt=True, skip_special_tokens=True)
            c0 = time.thread_time_ns()
            t0 = self._timed_generate(self.bare_kwargs(tokens), streamer)
            return figures(t0, stamps, time.thread_time_ns() - c0)

        return self._instrumented(threading.get_native_id(), run)

    def naive_path(self, tokens: int) -> dict[str, Any]:
        """``Generator.stream`` exactly; stamped where the server writes each event."""
        def run() -> dict[str, Any]:
            stamps: list[int] = []
            self.sync()
            c0 = self.gen.worker.submit(time.thread_time_ns).result()
            t0 = time.perf_counter_ns()
            self.gen.stream(self.req(tokens), lambda ev: stamps.append(time.perf_counter_ns()))
            cpu = self.gen.worker.submit(time.thread_time_ns).result() - c0
            return figures(t0, stamps, cpu)

        return self._instrumented(self.worker_tid(), run)

    # the server in its own process ----------------------------------------------------------
    def start_server(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        port = free_port()
        argv = list(self.argv)
        argv[argv.index("--port") + 1] = str(port)
        argv[0] = sys.executable
        if name != "http":  # this script re-runs the server with a remedy applied first
            argv = [sys.executable, __file__, "_serve", "--remedy", name.removeprefix("http_"),
                    "--module", argv[argv.index("-m") + 1], "--", *argv[argv.index("-m") + 2:]]
        env = dict(os.environ, **self.env, **(extra_env or {}))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        log_path = Path(self.args.out) / f"server-{self.model_name}-{name}.log"
        proc = subprocess.Popen(argv, env=env, cwd=str(REPO), stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        self.servers[name] = (proc, port)

    def wait_servers(self, timeout_s: float) -> None:
        import http.client

        deadline = time.monotonic() + timeout_s
        for name, (proc, port) in list(self.servers.items()):
            while True:
                if proc.poll() is not None:
                    log(f"server {name} exited {proc.returncode}; see server-{self.model_name}-{name}.log")
                    del self.servers[name]
                    break
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    c.request("GET", "/health")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    log(f"server {name} not up after {timeout_s:.0f} s; dropped")
                    proc.kill()
                    del self.servers[name]
                    break
                time.sleep(0.2)

    def http(self, name: str, tokens: int) -> dict[str, Any]:
        import http.client

        proc, port = self.servers[name]
        cpu0 = proc_cpu_ns(proc.pid)
        st0 = threads_state(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = json.dumps(self.req(tokens))  # the body the kit's adapter sends (forced length)
        stamps: list[int] = []
        with CpuSampler(proc.pid) as sampler:
            t0 = time.perf_counter_ns()
            conn.request("POST", "/generate_stream", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            while True:
                line = resp.fp.readline()
                if not line:
                    break
                if line.startswith(b"data: "):
                    now = time.perf_counter_ns()
                    data = line[6:].strip()
                    if data == b"[DONE]":
                        break
                    ev = json.loads(data)
                    if "error" in ev:
                        raise RuntimeError(f"server error: {ev['error']}")
                    if "generated_tokens" not in ev:
                        stamps.append(now)
        conn.close()
        r = figures(t0, stamps, proc_cpu_ns(proc.pid) - cpu0)
        r.update(state_delta(st0, threads_state(proc.pid)))
        r["gen_thread_cpu_runs"] = sampler.runs()  # [cpu, samples of 10 ms]
        return r

    def kit(self, tokens: int) -> dict[str, Any]:
        """The ``http`` server read by the kit's own client (LoadClient) with its Monitor running."""
        import asyncio

        from servingbench.runtime.client import LoadClient, RequestRecord
        from servingbench.runtime.frameworks import get_adapter
        from servingbench.runtime.monitor import GPU, Monitor
        from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec

        proc, port = self.servers["http"]
        if not hasattr(self, "nvml"):
            self.nvml = GPU() if self.args.device == "cuda" else None
        spec = ServerSpec(arm="transformers-naive", framework="transformers", model=self.model_name,
                          model_dir=self.model_dir, hf_id="x/y", weights="dummy", device=self.args.device,
                          dtype=self.dtype, context_length=2048)
        n_prompt = len(self.tok(self.prompt)["input_ids"])
        item = PromptItem(id="p", prompt=self.prompt, prompt_tokens=n_prompt, target_output_tokens=tokens)
        gen = GenerationParams(temperature=self.args.temperature, top_p=self.args.top_p, max_tokens=tokens)

        async def one() -> Any:
            async with LoadClient(f"http://127.0.0.1:{port}", get_adapter("transformers-naive"), spec, gen,
                                  "forced", 120.0) as client:
                return await client.send(item, True, RequestRecord(prompt_id="p"))

        st0 = threads_state(proc.pid)
        monitor = Monitor(lambda: proc.pid, self.nvml, 0.1).start()
        try:
            with CpuSampler(proc.pid) as sampler:
                rec = asyncio.run(one())
        finally:
            monitor.stop()
        if rec.error:
            raise RuntimeError(f"kit client: {rec.error}")
        r = figures(0, [int(o * 1e6) for o in rec.event_offsets_ms])
        r.update(state_delta(st0, threads_state(proc.pid)))
        r["gen_thread_cpu_runs"] = sampler.runs()
        return r

    def stop(self) -> None:
        for proc, _ in self.servers.values():
            proc.terminate()
        for proc, _ in self.servers.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.servers.clear()
        if self.gen is not None:
            self.gen.worker.shutdown()
            del self.model, self.gen
            self.gen = None
            import gc

            gc.collect()
            if self.args.device == "cuda":
                self.torch.cuda.empty_cache()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_ns(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in ns; None where /proc cannot say."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def thread_state(pid: int, tid: int) -> dict[str, int] | None:
    """A thread's CPU ticks, voluntary / involuntary context switches and last CPU (/proc)."""
    try:
        base = Path(f"/proc/{pid}/task/{tid}")
        f = (base / "stat").read_text().rsplit(")", 1)[1].split()
        status = dict(line.split(":", 1) for line in (base / "status").read_text().splitlines() if ":" in line)
        return {"ticks": int(f[11]) + int(f[12]), "last_cpu": int(f[36]),
                "vcs": int(status["voluntary_ctxt_switches"]), "nvcs": int(status["nonvoluntary_ctxt_switches"])}
    except (OSError, IndexError, ValueError, KeyError):
        return None


def threads_state(pid: int) -> dict[int, dict[str, int]]:
    try:
        tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return {}
    return {tid: st for tid in tids if (st := thread_state(pid, tid)) is not None}


class CpuSampler:
    """Samples which CPU each thread of another process is on, every ``period_s``, from /proc.

    Runs in this process (the server's GIL is not touched); afterwards ``runs()`` gives, for the
    server's busiest thread in the window, its CPU as (cpu, samples) runs: did a slow stretch
    coincide with a CPU, or with a move?"""

    def __init__(self, pid: int, period_s: float = 0.01) -> None:
        self.pid, self.period_s = pid, period_s
        self.samples: list[dict[int, tuple[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            snap = {tid: (st["last_cpu"], st["ticks"]) for tid, st in threads_state(self.pid).items()}
            self.samples.append(snap)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def runs(self) -> list[list[int]]:
        if len(self.samples) < 2:
            return []
        first, last = self.samples[0], self.samples[-1]
        tid = max(last, key=lambda t: last[t][1] - first.get(t, (0, 0))[1])
        out: list[list[int]] = []
        for snap in self.samples:
            if tid in snap:
                cpu = snap[tid][0]
                if out and out[-1][0] == cpu:
                    out[-1][1] += 1
                else:
                    out.append([cpu, 1])
        return out


def state_delta(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]) -> dict[str, Any]:
    """Per request: the busiest thread's switches and CPUs, and how many threads used CPU."""
    busy = []
    for tid, a in after.items():
        b = before.get(tid, {"ticks": 0, "vcs": 0, "nvcs": 0})
        busy.append((a["ticks"] - b["ticks"], a["vcs"] - b["vcs"], a["nvcs"] - b["nvcs"], a["last_cpu"], tid))
    busy.sort(reverse=True)
    if not busy:
        return {}
    top = busy[0]
    return {"gen_thread_ticks": top[0], "gen_thread_vcs": top[1], "gen_thread_nvcs": top[2],
            "gen_thread_last_cpu": top[3], "threads_with_cpu": sum(1 for x in busy if x[0] > 0),
            "other_threads_ticks": sum(x[0] for x in busy[1:])}


# -- what generate does in each path ----------------------------------------------------------
def generate_setup(b: Bench) -> dict[str, Any]:
    """Attention, cache classes, logits processors and kwargs of the bare and the server path."""
    model = b.model
    info: dict[str, Any] = {"attn_implementation": getattr(model.config, "_attn_implementation", None),
                            "dtype": str(model.dtype), "model_class": type(model).__name__,
                            "generation_config": model.generation_config.to_diff_dict(),
                            "sliding_window": getattr(model.config, "sliding_window", None),
                            "torch_threads": b.torch.get_num_threads(),
                            "tokenizer": type(b.tok).__name__,
                            "thread_state_main": torch_thread_state(b.torch),
                            "thread_state_worker": b.gen.worker.submit(torch_thread_state, b.torch).result()}
    seen: dict[str, Any] = {}
    orig = model._get_logits_processor

    def spy(*a: Any, **k: Any) -> Any:
        procs = orig(*a, **k)
        seen["processors"] = [type(p).__name__ for p in procs]
        return procs

    model._get_logits_processor = spy
    try:
        for path, kw in (("bare", b.bare_kwargs(3)), ("server", b.gen._kwargs(b.req(3)))):
            with b.torch.inference_mode():
                out = model.generate(**kw, return_dict_in_generate=True)
            cache = out.past_key_values
            layers = getattr(cache, "layers", None) or []
            info[path] = {"kwargs": {k: v for k, v in kw.items() if not hasattr(v, "shape")},
                          "logits_processors": seen.get("processors"),
                          "cache": type(cache).__name__,
                          "cache_layers": sorted({type(layer).__name__ for layer in layers})}
    finally:
        del model._get_logits_processor
    if b.args.device == "cuda":
        try:  # untestable without a GPU: a failure here must not cost the measurements
            info["host_syncs_per_5_tokens"] = host_syncs(b, 5)
        except Exception as exc:
            info["host_syncs_per_5_tokens"] = f"failed: {type(exc).__name__}: {exc}"
    return info


def host_syncs(b: Bench, tokens: int) -> dict[str, int]:
    """Where generate makes the host wait for the GPU (torch's sync debug mode), counted per line."""
    import warnings

    counts: dict[str, int] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b.torch.cuda.set_sync_debug_mode("warn")
        try:
            with b.torch.inference_mode():
                b.model.generate(**b.bare_kwargs(tokens), streamer=StepClock())
        finally:
            b.torch.cuda.set_sync_debug_mode(0)
    for w in caught:
        if "synchroniz" in str(w.message):
            key = f"{Path(w.filename).name}:{w.lineno}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def cpu_map(b: Bench, tokens: int, passes: int) -> dict[str, list[float]]:
    """The bare loop's ms/token with the main thread pinned to each CPU in turn."""
    cpus = sorted(os.sched_getaffinity(0))
    out: dict[str, list[float]] = {str(c): [] for c in cpus}
    try:
        for _ in range(passes):
            for c in cpus:
                os.sched_setaffinity(0, {c})
                out[str(c)].append(round(b.bare(tokens)["tpot_ms"], 3))
    finally:
        os.sched_setaffinity(0, set(cpus))
    return out


def sibling_map(b: Bench, tokens: int) -> dict[str, Any]:
    """The bare loop pinned to one CPU while a busy process spins on each other CPU in turn.

    A CPU whose load slows the pinned one shares its core (SMT) or its host thread."""
    cpus = sorted(os.sched_getaffinity(0))
    pinned = cpus[0]
    out: dict[str, Any] = {"pinned_cpu": pinned}
    try:
        os.sched_setaffinity(0, {pinned})
        out["idle"] = round(b.bare(tokens)["tpot_ms"], 3)
        for c in cpus[1:]:
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                   preexec_fn=lambda c=c: os.sched_setaffinity(0, {c}))
            try:
                time.sleep(0.1)
                out[str(c)] = round(b.bare(tokens)["tpot_ms"], 3)
            finally:
                hog.kill()
                hog.wait()
        out["idle_again"] = round(b.bare(tokens)["tpot_ms"], 3)
    finally:
        os.sched_setaffinity(0, set(cpus))
    return out


def gpu_busy(b: Bench, tokens: int) -> dict[str, Any]:
    """Sum of the GPU's kernel time per decode token (torch.profiler) against the wall time."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        r = b.bare(tokens)
    us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in prof.key_averages())
    return {"gpu_kernel_ms_per_token": us / 1000 / (tokens + 1), "wall_tpot_ms_under_profiler": r["tpot_ms"]}


def torch_thread_state(torch: Any) -> dict[str, Any]:
    """Thread-local torch state that could make one thread's ops dearer than another's."""
    st: dict[str, Any] = {"grad": torch.is_grad_enabled(), "inference": torch.is_inference_mode_enabled(),
                          "default_dtype": str(torch.get_default_dtype()), "num_threads": torch.get_num_threads()}
    for name, fn in (("autocast", lambda: torch.is_autocast_enabled()),
                     ("torch_function_modes", lambda: torch._C._len_torch_function_stack()),
                     ("dispatch_modes", lambda: torch._C._len_torch_dispatch_stack()),
                     ("default_device", lambda: str(torch.get_default_device()))):
        try:
            st[name] = fn()
        except Exception as exc:  # private or newer API: say so, do not fail
            st[name] = f"n/a ({type(exc).__name__})"
    return st


def system_state() -> dict[str, Any]:
    """Steal time, CPU pressure and load: does the host take CPU from this guest?"""
    st: dict[str, Any] = {}
    try:
        cpu = open("/proc/stat").readline().split()[1:]
        st["proc_stat_cpu"] = dict(zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"),
                                       map(int, cpu)))
        st["loadavg"] = Path("/proc/loadavg").read_text().strip()
        st["psi_cpu"] = Path("/proc/pressure/cpu").read_text().strip()
    except OSError:
        pass
    return st


def topology() -> dict[str, Any]:
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*")):
        try:
            out[d.name] = {"siblings": (d / "topology/thread_siblings_list").read_text().strip(),
                           "core": (d / "topology/core_id").read_text().strip()}
        except OSError:
            pass
    return out


def profile(b: Bench, tokens: int, path: str) -> str:
    """cProfile of one request on the thread that runs generate (top 25 by own time)."""
    prof = cProfile.Profile()
    if path == "bare":
        prof.enable()
        b.bare(tokens)
        prof.disable()
    else:
        streamer = b.mod.TokenStreamer(b.tok, skip_prompt=True, skip_special_tokens=True)

        def run() -> None:
            prof.enable()
            try:
                b.gen._run(b.req(tokens), streamer)
            finally:
                prof.disable()

        done = b.gen.worker.submit(run)
        for _ in streamer:
            pass
        done.result()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
    return s.getvalue()


# -- one model ---------------------------------------------------------------------------------
def summarize(reqs: list[dict[str, Any]]) -> dict[str, Any]:
    tpots = [r["tpot_ms"] for r in reqs if r["tpot_ms"] is not None]
    gaps = [g for r in reqs for g in r["gaps_ms"]]
    cpu = [r["cpu_ms_per_token"] for r in reqs if r.get("cpu_ms_per_token") is not None]
    p50, p90 = pct(gaps, 50), pct(gaps, 90)
    return {"requests": len(reqs), "tpot_ms_p50": pct(tpots, 50), "tpot_ms_min": min(tpots, default=None),
            "tpot_ms_max": max(tpots, default=None), "ttft_ms_p50": pct([r["ttft_ms"] for r in reqs], 50),
            "gap_ms_p50": p50, "gap_ms_p90": p90, "gap_ms_max": max(gaps, default=None),
            "gap_p90_over_p50": p90 / p50 if p50 else None, "cpu_ms_per_token_p50": pct(cpu, 50),
            "tpots_ms": [round(t, 2) for t in tpots]} | {
            f"{k}_med": pct([r[k] for r in reqs if r.get(k) is not None], 50)
            for k in ("fwd_ms_p50", "fwd_cpu_ms_p50", "step_ms_p50", "gen_thread_vcs", "gen_thread_nvcs",
                      "threads_with_cpu", "other_threads_ticks")} | {
            "gen_thread_cpus": sorted({r["gen_thread_last_cpu"] for r in reqs if "gen_thread_last_cpu" in r})}


def run_model(args: argparse.Namespace, cfg: Any, model: str, deadline: float, out: Path,
              results: dict[str, Any]) -> None:
    mdir = prepare(cfg, model, Path(args.work))
    b = Bench(args, model, mdir)
    res: dict[str, Any] = {"model_dir": mdir, "server_module": b.mod.__name__}
    results["models"][model] = res
    want_http = [v for v in args.variants if v.startswith("http")]
    if "kit" in args.variants and "http" not in want_http:
        want_http.append("http")
    for name in want_http:  # their loading overlaps ours
        b.start_server(name)
    try:
        t = time.monotonic()
        b.load()
        log(f"[{model}] loaded in-process in {time.monotonic() - t:.1f} s")
        res["setup"] = generate_setup(b)
        log(f"[{model}] setup: attn {res['setup']['attn_implementation']}, cache {res['setup']['bare']['cache']} "
            f"{res['setup']['bare']['cache_layers']}, processors bare {res['setup']['bare']['logits_processors']} "
            f"server {res['setup']['server']['logits_processors']}")
        b.wait_servers(max(60.0, deadline - time.monotonic() - 30))
        runners: dict[str, Callable[[int], dict[str, Any]]] = {
            "bare": lambda n: b.bare(n),
            "bare_worker": lambda n: b.bare(n, on_worker=True),
            "server_kwargs": lambda n: b.bare(n, server_kwargs=True),
            "decode": b.decode,
            "naive_path": b.naive_path,
        }
        for name in b.servers:
            runners[name] = lambda n, name=name: b.http(name, n)
        if "http" in b.servers:
            runners["kit"] = b.kit
        variants = [v for v in args.variants if v in runners]
        res["dropped"] = {}
        for v in list(variants):  # warm-up: the first generate in each thread/process costs more
            try:
                for _ in range(args.warmup):
                    runners[v](min(8, args.tokens))
            except Exception as exc:  # a variant that cannot run must not cost the others
                res["dropped"][v] = f"{type(exc).__name__}: {str(exc)[:300]}"
                log(f"[{model}] {v} dropped: {res['dropped'][v]}")
                variants.remove(v)
        log(f"[{model}] warmed up: {variants}")
        res["system_before"] = system_state()
        if args.cpu_map and model == args.models[0]:
            res["cpu_map_ms_per_token"] = cpu_map(b, args.cpu_map_tokens, args.cpu_map_passes)
            log(f"[{model}] cpu map: {res['cpu_map_ms_per_token']}")
            res["sibling_map_ms_per_token"] = sibling_map(b, args.cpu_map_tokens)
            log(f"[{model}] sibling map: {res['sibling_map_ms_per_token']}")
        reqs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        per_round_s = None
        rnd = 0
        while rnd < args.max_rounds:
            t = time.monotonic()
            if per_round_s and t + per_round_s > deadline - args.profile_reserve_s and rnd >= args.min_rounds:
                break
            order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
            for v in order:
                t_req = time.monotonic()
                reqs[v].append(runners[v](args.tokens))
                reqs[v][-1]["t_start_s"] = round(t_req - args.t_start, 3)  # drift over time, across variants
            rnd += 1
            per_round_s = time.monotonic() - t
            log(f"[{model}] round {rnd}: " + ", ".join(f"{v} {reqs[v][-1]['tpot_ms']:.2f}" for v in variants))
        res["rounds"] = rnd
        res["system_after"] = system_state()
        res["variants"] = {v: summarize(r) for v, r in reqs.items()}
        res["per_request"] = {v: [{**r, "gaps_ms": [round(g, 2) for g in r["gaps_ms"]]} for r in rs]
                              for v, rs in reqs.items()}
        base = res["variants"].get("bare", {}).get("tpot_ms_p50")
        for s in res["variants"].values():
            s["tpot_ratio"] = s["tpot_ms_p50"] / base if base and s["tpot_ms_p50"] else None
        write(out, results)
        if args.device == "cuda":  # after the rounds: the profiler's set-up must not touch them
            try:  # untestable without a GPU: a failure here must not cost the measurements
                res["gpu_busy"] = gpu_busy(b, args.cpu_map_tokens)
            except Exception as exc:
                res["gpu_busy"] = f"failed: {type(exc).__name__}: {exc}"
            log(f"[{model}] gpu busy: {res['gpu_busy']}")
        if args.profile and time.monotonic() < deadline and model in args.models[:2]:
            for path in ("bare", "naive_path"):
                text = profile(b, args.tokens, path)
                (out / f"profile-{model}-{path}.txt").write_text(text)
            log(f"[{model}] profiles written")
    finally:
        b.stop()
        write(out, results)


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Interleaved request by request; {results['tokens']} tokens forced, prompt ~{results['prompt_tokens']} "
             f"tokens, device {results['device']}. Ratio: TPOT p50 / bare's.", "",
             "| model | variant | n | TPOT p50 ms | ratio | TPOT min-max | gap p50 / p90 / max | p90/p50 | CPU ms/token "
             "| forward ms (CPU ms) | gen thread vcs / nvcs per request | its CPUs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def f(x: Any, p: int = 2) -> str:
        return "-" if x is None else f"{x:.{p}f}"

    for model, res in results["models"].items():
        for v, s in res.get("variants", {}).items():
            lines.append(f"| {model} | {v} | {s['requests']} | {f(s['tpot_ms_p50'])} | {f(s['tpot_ratio'])} | "
                         f"{f(s['tpot_ms_min'])}-{f(s['tpot_ms_max'])} | {f(s['gap_ms_p50'])} / {f(s['gap_ms_p90'])} / "
                         f"{f(s['gap_ms_max'])} | {f(s['gap_p90_over_p50'])} | {f(s['cpu_ms_per_token_p50'])} | "
                         f"{f(s['fwd_ms_p50_med'])} ({f(s['fwd_cpu_ms_p50_med'])}) | {f(s['gen_thread_vcs_med'], 0)} / "
                         f"{f(s['gen_thread_nvcs_med'], 0)} | {s['gen_thread_cpus']} |")
    for model, res in results["models"].items():
        if "setup" in res:
            lines += ["", f"{model}: " + json.dumps(res["setup"], default=str)]
        for key, what in (("cpu_map_ms_per_token", "bare ms/token pinned to each CPU"),
                          ("sibling_map_ms_per_token", "bare ms/token pinned, a busy process on each other CPU"),
                          ("gpu_busy", "GPU kernel time per token")):
            if key in res:
                lines += ["", f"{model} {what}: " + json.dumps(res[key])]
        if "error" in res:
            lines += ["", f"{model} failed: {res['error']}"]
    return "\n".join(lines) + "\n"


def write(out: Path, results: dict[str, Any]) -> None:
    (out / "diag_fidelity_gap.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "diag_fidelity_gap.md").write_text(markdown(results))


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
           "cpus": sorted(os.sched_getaffinity(0)), "switch_interval_s": sys.getswitchinterval(),
           "topology": topology(), "torch_threads": torch.get_num_threads()}
    try:
        env["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if args.device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


# -- remedies applied to the server in a process of its own -------------------------------------
def direct_stream(mod: types.ModuleType) -> Callable[..., dict[str, Any]]:
    """``Generator.stream`` that writes each event from the generate thread itself: no queue, no
    reader thread to wake (and hand the GIL to) per token; the handler waits for the result."""

    class Direct(mod.TokenStreamer):  # type: ignore[misc, name-defined]
        emit: Callable[[dict[str, Any]], None]

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text or self._unsent:
                self.emit({"text": text, "tokens": self._unsent})
            self._unsent = 0

    def stream(self: Any, req: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        streamer = Direct(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        streamer.emit = emit
        return self.worker.submit(self._run, req, streamer).result()

    return stream


def serve_with_remedy(remedy: str, module: str, rest: list[str]) -> None:
    """Run the naive server with a remedy applied first (``pinned``: generate thread on one CPU)."""
    mod = importlib.import_module(module)
    if remedy == "pinned":
        orig = mod.Generator._run

        def pinned_run(self: Any, *a: Any, **k: Any) -> Any:
            if not getattr(self, "_pinned", False):
                cpu = sorted(os.sched_getaffinity(0))[-1]
                os.sched_setaffinity(threading.get_native_id(), {cpu})
                self._pinned = True
            return orig(self, *a, **k)

        mod.Generator._run = pinned_run
    elif remedy == "direct":
        mod.Generator.stream = direct_stream(mod)
    elif remedy != "none":
        raise SystemExit(f"unknown remedy {remedy!r}")
    mod.main(rest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--config", default=str(REPO / "configs" / "h200-dummy.yaml"))
    ap.add_argument("--variants", nargs="+", default=["bare", "bare_worker", "naive_path", "http", "kit",
                                                      "http_direct", "http_pinned"],
                    help="also: decode (the streamer alone; on the CPU it cost 15-25 us per token), "
                         "server_kwargs (the server's generate kwargs on the main thread)")
    ap.add_argument("--tiny", action="store_true", help="small random architectures on the CPU (a check)")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--min-rounds", type=int, default=2)
    ap.add_argument("--max-rounds", type=int, default=40)
    ap.add_argument("--budget-s", type=float, default=215.0, help="whole run; models share it")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--profile-reserve-s", type=float, default=12.0)
    ap.add_argument("--cpu-map", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cpu-map-tokens", type=int, default=12)
    ap.add_argument("--cpu-map-passes", type=int, default=1)
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch intra-op threads here and OMP_NUM_THREADS for the servers (default: as is; "
                         "--tiny: 1, as a 2-core CPU box oversubscribed by OpenMP spin-waits measures nothing else)")
    ap.add_argument("--work", default=None, help="model directories (default: a temp dir)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/out/diag_fidelity_gap")
    args = ap.parse_args(argv)
    start = args.t_start = time.monotonic()

    def on_term(*_: Any) -> None:  # `timeout` sends SIGTERM: stop the servers, keep what was measured
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.work = args.work or tempfile.mkdtemp(prefix="diag-gap-")
    if args.torch_threads is None and args.tiny:
        args.torch_threads = 1
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # the servers inherit it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_cfg(Path(args.config), args.tiny)
    results: dict[str, Any] = {"tokens": args.tokens, "prompt_tokens": args.prompt_tokens, "device": args.device,
                               "tiny": args.tiny, "argv": sys.argv[1:], "models": {}}
    results["environment"] = environment(args)
    log(f"environment: {results['environment']}")
    total_w = sum(WEIGHT.get(m, 0.3) for m in args.models)
    for i, model in enumerate(args.models):
        left = args.budget_s - (time.monotonic() - start)
        share = left * WEIGHT.get(model, 0.3) / sum(WEIGHT.get(m, 0.3) for m in args.models[i:])
        log(f"[{model}] start, {share:.0f} s of {left:.0f} s left (weights {total_w:.2f})")
        try:
            run_model(args, cfg, model, time.monotonic() + share, out, results)
        except Exception as exc:  # one model that fails must not cost the others
            import traceback

            traceback.print_exc()
            results["models"].setdefault(model, {})["error"] = f"{type(exc).__name__}: {exc}"
            write(out, results)
    print(markdown(results), flush=True)
    log(f"done in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        rp = argparse.ArgumentParser()
        rp.add_argument("--remedy", required=True)
        rp.add_argument("--module", required=True)
        sep = sys.argv.index("--")
        a = rp.parse_args(sys.argv[2:sep])
        serve_with_remedy(a.remedy, a.module, sys.argv[sep + 1:])
        sys.exit(0)
    sys.exit(main())
