"""Synthetic result folders for the tests of aggregate, report, compare and publish.

These are SYNTHETIC inputs: files written exactly in the format of docs/results-format.md
(schema servingbench/cell-v1 and failure-v1, plus ``*.requests.jsonl``), with made-up but
self-consistent numbers, so that the report can be tested as a pure function of a results
folder without starting any server. Nothing here is a measurement; the real end-to-end report
comes from the real CPU demo (configs/cpu.yaml).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import json
import math
import random
from pathlib import Path
from typing import Any, Iterable
from unittest import mock

from servingbench.runtime import capacity as capmod
from servingbench.host.config import (
    Config, capacity_sweep_spec, cell_spec, concurrency_sweep_spec, config_hash, context_lengths, context_sweep_spec,
    parse_config,
)
from servingbench.runtime.records import MemorySummary, RequestRecord, WindowSummary, from_json, to_json
from servingbench.runtime.results import (
    CELL_SCHEMA, FAILURE_SCHEMA, atomic_write_json, atomic_write_jsonl, capacity_path, cell_path, failure_path,
    requests_path, sweep_path,
)

ALL_ARMS = ["transformers-naive", "transformers-serve", "tgi", "vllm", "sglang"]
# Relative cost of a decode step per arm (1.0 = fastest): gives each headline a clear winner.
ARM_SPEED = {"transformers-naive": 3.0, "transformers-serve": 1.7, "tgi": 1.25, "vllm": 1.0, "sglang": 1.1}
ARM_STARTUP_S = {"transformers-naive": 9.5, "transformers-serve": 12.0, "tgi": 38.0, "vllm": 21.3, "sglang": 72.5}
ARM_FRAMEWORK = {"transformers-naive": "transformers", "transformers-serve": "transformers",
                 "tgi": "tgi", "vllm": "vllm", "sglang": "sglang"}
ARCH = {
    "smollm2-135m": ({"model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576,
                      "num_attention_heads": 9, "vocab_size": 49152, "max_position_embeddings": 8192}, "135M"),
    "gpt2": ({"model_type": "gpt2", "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
              "vocab_size": 50257, "max_position_embeddings": 1024}, "124M"),
    "llama-2-7b-chat": ({"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
                         "num_attention_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}, "6.7B"),
}
# Decode time per token of the fastest arm, ms (per device, per model), and prefill time per prompt token.
BASE_TPOT_MS = {("cpu", "smollm2-135m"): 28.0, ("cuda", "gpt2"): 2.2, ("cuda", "llama-2-7b-chat"): 12.5,
                ("cuda", "smollm2-135m"): 1.8}
PREFILL_MS_PER_TOKEN = {"cpu": 0.9, "cuda": 0.05}
TASKS = {"chat": ([20, 100], [20, 100]), "qa": ([100, 500], [10, 30]),
         "summarization": ([200, 800], [50, 100]), "code": ([10, 50], [50, 150])}
MAX_TOKENS = {"chat": 100, "qa": 40, "summarization": 60, "code": 100}
# Requests each arm's synthetic server runs at once in a capacity search (the naive server: one).
ARM_SLOTS = {"transformers-naive": 1, "transformers-serve": 4, "tgi": 8, "vllm": 8}
# A small capacity search for synthetic folders: windows of 20 requests, p90 at most.
CAPACITY = {"min_requests": 20, "min_duration_s": 2, "precision": 0.1, "probe_requests": 3, "max_windows": 10}


def make_config(device: str = "cpu", weights: str = "real", arms: Iterable[str] = ("transformers-naive", "tgi", "vllm"),
                models: Iterable[str] | None = None, tasks: Iterable[str] = ("chat", "qa"),
                modes: Iterable[str] = ("sync", "stream"), cell_concurrency: Iterable[int] = (1,),
                levels: Iterable[int] = (1, 2, 4), prompt_tokens: Iterable[int] = (128, 512),
                requests: int = 6, sweeps: bool = True, profile: str = "seed",
                arm_settings: dict[str, dict[str, Any]] | None = None, trials: int = 1,
                capacity: Iterable[str] = (), slo: dict[str, Any] | None = None, gpus: int = 1) -> Config:
    """A small valid config. Adapters that other issues add are not needed to test the report.
    ``capacity``: tasks with a capacity search (and SLO sets at p90, which its 20-request
    windows support, unless ``slo`` says otherwise)."""
    models = list(models or (["smollm2-135m"] if device == "cpu" else ["gpt2", "llama-2-7b-chat"]))
    data: dict[str, Any] = {
        "device": device, "weights": weights, "profile": profile, "modes": list(modes),
        "frameworks": {a: {"framework": ARM_FRAMEWORK[a], "gpus": gpus, **(arm_settings or {}).get(a, {})}
                       for a in arms},
        "models": {m: {"hf_id": f"example/{m}", "params": ARCH[m][1], "architecture": ARCH[m][0]} for m in models},
        "tasks": {t: {"input_tokens": TASKS[t][0], "output_tokens": TASKS[t][1]} for t in tasks},
        "generation": {m: {t: {"temperature": 0.7, "top_p": 0.9, "max_tokens": MAX_TOKENS[t]} for t in tasks}
                       for m in models},
        "run": {"requests_per_cell": requests, "warmup_requests": 1, "cell_concurrency": list(cell_concurrency),
                "dtype": "float16", "max_model_len": 4096, "trials": trials},
        "sweeps": {"concurrency": {"task": list(tasks)[0], "mode": "stream", "levels": list(levels),
                                   "requests_per_level": requests},
                   "context": {"mode": "stream", "prompt_tokens": list(prompt_tokens), "output_tokens": 16,
                               "requests_per_length": 3}} if sweeps else {"concurrency": None, "context": None},
    }
    if capacity:
        data["sweeps"]["capacity"] = {"tasks": list(capacity), **CAPACITY}
        data["slo"] = slo or {"interactive": {"ttft_ms": 500, "tpot_ms": 30, "percentile": 90},
                              "server": {"ttft_ms": 2000, "tpot_ms": 100, "percentile": 90}}
    elif slo:
        data["slo"] = slo
    # The arm list is discovered from adapter modules; the report tests do not need the adapters.
    with mock.patch("servingbench.host.config.known_arms", return_value=ALL_ARMS):
        return parse_config(data, "synthetic-config")


def _percentile(values: list[float], q: float) -> float:
    pos = (len(values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _stats(values: Iterable[float | None]) -> dict[str, float] | None:
    vals = sorted(float(v) for v in values if v is not None)
    if not vals:
        return None
    return {"n": len(vals), "mean": sum(vals) / len(vals), "p50": _percentile(vals, 50), "p90": _percentile(vals, 90),
            "p99": _percentile(vals, 99), "min": vals[0], "max": vals[-1]}


class Generator:
    """Writes one results folder for a config. Options pick which cells fail, are missing, etc."""

    def __init__(self, cfg: Config, results_dir: Path, seed: int = 7, gpu_name: str = "NVIDIA A100-SXM4-40GB",
                 speed: dict[str, float] | None = None, mismatch: Iterable[str] = ("tgi",),
                 failed_requests: Iterable[str] = ()) -> None:
        self.cfg, self.results = cfg, Path(results_dir)
        self.rng = random.Random(seed)
        self.gpu_name = gpu_name
        self.speed = {**ARM_SPEED, **(speed or {})}
        self.mismatch = set(mismatch)  # arms that stop early on some requests (TGI can only cap length)
        self.failed_requests = set(failed_requests)  # labels with one failed request per window

    # -- one window -----------------------------------------------------------------------------
    def _records(self, arm: str, model: str, mode: str, window: int, concurrency: int, n: int,
                 prompt_range: tuple[int, int], out_tokens: int, label: str) -> list[dict[str, Any]]:
        device = self.cfg.device
        tpot = BASE_TPOT_MS[(device, model)] * self.speed[arm] * (1 + 0.12 * (concurrency - 1))
        rows = []
        for i in range(n):
            prompt = self.rng.randint(*prompt_range)
            out = out_tokens
            if arm in self.mismatch and i % 3 == 0:
                out = max(2, out_tokens - self.rng.randint(3, 9))
            noise = self.rng.lognormvariate(0, 0.12)
            ttft = (15 + prompt * PREFILL_MS_PER_TOKEN[device]) * self.speed[arm] * noise * (1 + 0.3 * (concurrency - 1))
            gaps = [tpot * self.rng.lognormvariate(0, 0.08) for _ in range(out - 1)]
            offsets = [round(ttft, 3)]
            for g in gaps:
                offsets.append(round(offsets[-1] + g, 3))
            failed = label in self.failed_requests and i == n - 1
            rows.append({
                "window": window, "concurrency": concurrency, "prompt_id": f"p{window:02d}-{i:03d}", "warmup": False,
                "dispatch_ns": 10**12 + (window * 1000 + i) * 10**7,
                "queue_ms": round(self.rng.uniform(0, 0.3) * (concurrency > 1), 3),
                "ttft_ms": None if failed or mode == "sync" else round(ttft, 3),
                "e2e_ms": None if failed else offsets[-1],
                "event_offsets_ms": [] if failed or mode == "sync" else offsets,
                "event_tokens": None if failed or mode == "sync" else [1] * len(offsets),
                "output_tokens_requested": out_tokens, "output_tokens": None if failed else out,
                "output_tokens_source": "server", "prompt_tokens": prompt,
                "http_status": 500 if failed else 200, "error": "HTTP 500: internal error" if failed else None,
                "finish_reason": None if failed else ("stop" if out < out_tokens else "length"),
            })
        return rows

    @staticmethod
    def _summary(rows: list[dict[str, Any]], concurrency: int, stream: bool, target: int | None) -> dict[str, Any]:
        ok = [r for r in rows if not r["error"]]
        failed = [r for r in rows if r["error"]]
        window_s = sum(r["e2e_ms"] for r in ok) / 1000.0 / concurrency * 1.04 + 0.05
        out_tokens = sum(r["output_tokens"] for r in ok)

        def tpot(r: dict[str, Any]) -> float | None:
            return (r["e2e_ms"] - r["ttft_ms"]) / (r["output_tokens"] - 1) if r["output_tokens"] > 1 else None

        s: dict[str, Any] = {
            "concurrency": concurrency, "prompt_tokens_target": target,
            "requests": len(rows), "completed": len(ok), "failed": len(failed),
            "errors": {"HTTP 500": len(failed)} if failed else {},
            "window_s": window_s, "throughput_req_s": len(ok) / window_s,
            "throughput_output_tok_s": out_tokens / window_s,
            "e2e_ms": _stats(r["e2e_ms"] for r in ok),
            "ttft_ms": _stats(r["ttft_ms"] for r in ok) if stream else None,
            # one token per event: the per-token ITL equals the event gap here
            "itl_ms": _stats(b - a for r in ok for a, b in zip(r["event_offsets_ms"], r["event_offsets_ms"][1:]))
            if stream else None,
            "itl_unknown_requests": 0 if stream else None,
            "event_gap_ms": _stats(b - a for r in ok for a, b in zip(r["event_offsets_ms"], r["event_offsets_ms"][1:]))
            if stream else None,
            "tokens_per_event": _stats(1 for r in ok for _ in r["event_offsets_ms"]) if stream else None,
            "tpot_ms": _stats(tpot(r) for r in ok) if stream else None,
            "output_tok_s": _stats(r["output_tokens"] / (r["e2e_ms"] / 1000.0) for r in ok) if stream else None,
            "queue_ms": _stats(r["queue_ms"] for r in rows),
            "prompt_tokens": _stats(r["prompt_tokens"] for r in ok),
            "output_tokens_requested_total": sum(r["output_tokens_requested"] for r in ok),
            "output_tokens_actual_total": out_tokens,
            "output_tokens_mismatched": sum(1 for r in ok if r["output_tokens"] != r["output_tokens_requested"]),
            "output_tokens_source": {"server": len(ok)},
            "server_ttft_ms_mean": None,
            "server_itl_ms_mean": None,
        }
        return s

    # -- one result file ------------------------------------------------------------------------
    def _memory(self, arm: str, model: str, out_tokens: int) -> dict[str, Any]:
        params = {"135M": 135e6, "124M": 124e6, "6.7B": 6.7e9}[self.cfg.models[model].params]
        host = int(400 * 2**20 + params * (2 if arm.startswith("transformers") else 0.4) + self.rng.randint(0, 50) * 2**20)
        mem: dict[str, Any] = {"host_rss_peak_bytes": host, "host_rss_mean_bytes": int(host * 0.93),
                               "host_processes_max": 4 if arm == "vllm" else 1}
        if self.cfg.device != "cuda":
            mem.update(gpu=None, gpu_unavailable_reason="no NVIDIA GPU visible (pynvml: NVML Shared Library Not Found)")
            return mem
        total = 40 * 2**30
        before = 500 * 2**20
        after = int(total * 0.85) if arm in ("vllm", "tgi") else int(before + params * 2 + 300 * 2**20)
        energy = out_tokens * 0.35
        mem["gpu"] = {"device_name": self.gpu_name, "driver": "535.129.03", "cuda_driver": "12.2",
                      "device_total_bytes": total, "device_used_before_load_bytes": before,
                      "device_used_after_load_bytes": after, "device_used_peak_bytes": after + 64 * 2**20,
                      "utilization_mean_pct": 71.0, "power_mean_w": 212.0, "energy_j": energy,
                      "energy_per_output_token_j": 0.35}
        mem["gpu_unavailable_reason"] = None
        return mem

    def _doc(self, spec: Any, windows: list[dict[str, Any]], requests_file: Path) -> dict[str, Any]:
        arm, model = spec.arm, spec.model
        out_tokens = sum(w["output_tokens_actual_total"] for w in windows)
        cuda = self.cfg.device == "cuda"
        return {
            "schema": CELL_SCHEMA, "kind": spec.kind, "status": "ok",
            "cell": {"arm": arm, "framework": spec.server.framework, "model": model, "task": spec.task,
                     "mode": spec.mode},
            "weights": self.cfg.weights, "device": self.cfg.device,
            "spec": json.loads(spec.to_json()), "windows": windows,
            "memory": self._memory(arm, model, out_tokens),
            "server": {"reused": False, "startup_s": round(ARM_STARTUP_S[arm] * self.rng.uniform(0.95, 1.08), 2),
                       "started_at": "2026-01-15T10:00:00Z", "pid": 4242,
                       "command": ["python", "-m", f"{arm}.server"],
                       "log": f"results/logs/{requests_file.parent.name}/{requests_file.stem}.server.log",
                       "server_settings": {"gpu_memory_utilization": 0.85, "prefix_caching": False,
                                           "server_args": list(spec.server.server_args),
                                           "model_server_args": list(spec.server.model_server_args)}},
            "provenance": {
                "servingbench_version": "0.1.0",
                "framework_version": {"transformers": "4.46.3", "tgi": "1.2.0", "vllm": "0.6.3",
                                      "sglang": "0.5.16"}[spec.server.framework],
                "framework_kernels": "sglang-kernel 0.4.5, flashinfer-python 0.6.14" if spec.server.framework == "sglang"
                else None,
                "versions": {"python": "3.10.12", "torch": "2.1.0", "transformers": "4.46.3"},
                "host": "bench-01", "cpu": "Synthetic CPU @ 2.0GHz",
                "device_name": self.gpu_name if cuda else None, "driver": "535.129.03" if cuda else None,
                "cuda": "12.2" if cuda else None, "git_commit": "0123456789abcdef0123456789abcdef01234567",
                "config_hash": config_hash(self.cfg), "image": f"servingbench/{arm}:seed" if cuda else "",
                "profile": "seed", "started_at": "2026-01-15T10:00:00Z", "finished_at": "2026-01-15T10:05:00Z"},
            "requests_file": requests_file.name,
        }

    def _write(self, path: Path, spec: Any, plan: list[tuple[int, int | None, tuple[int, int], int]], n: int) -> None:
        label = spec.cell_id()
        stream = spec.mode == "stream"
        windows, records = [], []
        for i, (conc, target, prompt_range, out_tokens) in enumerate(plan):
            rows = self._records(spec.arm, spec.model, spec.mode, i, conc, n, prompt_range, out_tokens, label)
            windows.append(self._summary(rows, conc, stream, target))
            if spec.trials > 1:  # plan holds each level's trials back to back
                windows[-1]["trial"] = i % spec.trials
            records += rows
        req = requests_path(path)
        atomic_write_jsonl(req, records)
        atomic_write_json(path, self._doc(spec, windows, req))

    def write_failure(self, path: Path, kind: str, arm: str, model: str, task: str, mode: str,
                      category: str = "out_of_memory", reason: str = "CUDA out of memory while loading weights") -> None:
        atomic_write_json(failure_path(path), {
            "schema": FAILURE_SCHEMA, "kind": kind,
            "cell": {"arm": arm, "framework": ARM_FRAMEWORK[arm], "model": model, "task": task, "mode": mode},
            "category": category, "reason": reason, "log": f"results/logs/{arm}/{model}.server.log",
            "at": "2026-01-15T10:06:00Z"})

    # -- the whole folder -----------------------------------------------------------------------
    def run(self, fail: Iterable[str] = (), missing: Iterable[str] = ()) -> Path:
        """Write every expected file; ``fail`` / ``missing`` hold labels like ``vllm/gpt2/chat/stream``
        or ``tgi/gpt2/sweep_concurrency``."""
        cfg, fail, missing = self.cfg, set(fail), set(missing)
        for arm in cfg.frameworks:
            for model in cfg.models:
                jobs = []
                for task, tspec in cfg.tasks.items():
                    for mode in cfg.modes:
                        spec = cell_spec(cfg, arm, model, task, mode)
                        out = cfg.generation[model][task].max_tokens
                        plan = [(c, None, tuple(tspec.input_tokens), out) for c in cfg.run.cell_concurrency
                                for _ in range(cfg.run.trials)]
                        jobs.append((cell_path(self.results, arm, model, task, mode), spec, plan,
                                     cfg.run.requests_per_cell))
                if cfg.sweeps.concurrency is not None:
                    s = cfg.sweeps.concurrency
                    spec = concurrency_sweep_spec(cfg, arm, model)
                    rng = tuple(cfg.tasks[s.task].input_tokens)
                    plan = [(c, None, rng, cfg.generation[model][s.task].max_tokens) for c in s.levels]
                    jobs.append((sweep_path(self.results, arm, model, "concurrency"), spec, plan, s.requests_per_level))
                if cfg.sweeps.context is not None and context_lengths(cfg, model):
                    s = cfg.sweeps.context
                    spec = context_sweep_spec(cfg, arm, model)
                    plan = [(1, n, (n, n), s.output_tokens) for n in context_lengths(cfg, model)]
                    jobs.append((sweep_path(self.results, arm, model, "context"), spec, plan, s.requests_per_length))
                for task in cfg.sweeps.capacity.tasks if cfg.sweeps.capacity is not None else []:
                    jobs.append((capacity_path(self.results, arm, model, task),
                                 capacity_sweep_spec(cfg, arm, model, task), None, 0))
                for path, spec, plan, n in jobs:
                    label = spec.cell_id()
                    if label in missing:
                        continue
                    if label in fail:
                        self.write_failure(path, spec.kind, arm, model, spec.task, spec.mode)
                        continue
                    if spec.kind == "sweep_capacity":
                        self._write_capacity(path, spec)
                    else:
                        self._write(path, spec, plan, n)
        return self.results

    # -- a capacity search ----------------------------------------------------------------------
    def _write_capacity(self, path: Path, spec: Any) -> None:
        """The real search (servingbench.runtime.capacity) against a simulated server: the arm's slots
        (ARM_SLOTS) in FIFO order, each request busy for its prefill plus its decode."""
        cap, arm, model = spec.capacity, spec.arm, spec.model
        device = self.cfg.device
        out = self.cfg.generation[model][spec.task].max_tokens
        lo_hi = tuple(self.cfg.tasks[spec.task].input_tokens)
        tpot = BASE_TPOT_MS[(device, model)] * self.speed[arm]
        probe = self._records(arm, model, "stream", 0, 1, cap.probe_requests, lo_hi, out, "")
        for r in probe:
            r["error"], r["output_tokens"] = None, r["output_tokens"] or out
        windows = [dict(self._summary(probe, 1, True, None), window=0, phase="probe", offered_rate_req_s=None,
                        valid=True, invalid_reason=None)]
        records = list(probe)
        service_s = sum(r["e2e_ms"] for r in probe) / len(probe) / 1000
        state = capmod.SearchState(cap=cap, start_rate=cap.start_rate_factor / service_s)

        async def run_window(rate: float, repeat: bool = False) -> WindowSummary:
            index = len(windows)
            offsets = capmod.window_arrivals(rate, cap, spec.seed)
            free = [0.0] * ARM_SLOTS[arm]
            rows = []
            for i, a in enumerate(offsets):
                prompt = self.rng.randint(*lo_hi)
                prefill = (15 + prompt * PREFILL_MS_PER_TOKEN[device]) * self.speed[arm] / 1000
                decode = [tpot * self.rng.lognormvariate(0, 0.08) for _ in range(out - 1)]
                start = max(a, heapq.heappop(free))
                heapq.heappush(free, start + prefill + sum(decode) / 1000)
                offs = [round((start - a + prefill) * 1000, 3)]
                for g in decode:
                    offs.append(round(offs[-1] + g, 3))
                rows.append({"window": index, "concurrency": cap.max_in_flight, "prompt_id": f"c{index:02d}-{i:04d}",
                             "warmup": False, "dispatch_ns": int((1000 + a) * 1e9), "queue_ms": 0.0,
                             "ttft_ms": offs[0], "e2e_ms": offs[-1], "event_offsets_ms": offs,
                             "output_tokens_requested": out, "output_tokens": out, "output_tokens_source": "server",
                             "prompt_tokens": prompt, "http_status": 200, "error": None, "finish_reason": "length"})
            w = self._summary(rows, cap.max_in_flight, True, None)
            w["window_s"] = max(a + r["e2e_ms"] / 1000 for a, r in zip(offsets, rows))
            w["throughput_req_s"] = len(rows) / w["window_s"]
            w["throughput_output_tok_s"] = len(rows) * out / w["window_s"]
            span = offsets[-1] - offsets[0]
            w.update(window=index, phase="search", offered_rate_req_s=rate, arrival=cap.arrival,
                     burstiness=cap.burstiness, peak_in_flight=ARM_SLOTS[arm], distinct_prompts=len(rows),
                     scheduled_rate_req_s=(len(rows) - 1) / span, achieved_rate_req_s=(len(rows) - 1) / span,
                     dispatched=len(rows), arrival_span_s=span)
            w = from_json(WindowSummary, w)  # the search reads typed windows, as the runtime's
            capmod.judge(w, [from_json(RequestRecord, r) for r in rows], cap, w.window_s, ARM_SLOTS[arm], repeat)
            w.memory = from_json(MemorySummary, self._memory(arm, model, w.output_tokens_actual_total))
            w.elapsed_s = float(index)
            windows.append(w)
            records.extend(rows)
            state.windows.append(w)
            return w

        results = asyncio.run(capmod.search(state, run_window, lambda r: 0.0))
        doc = self._doc(spec, to_json(windows), requests_path(path))
        doc["capacity"] = {
            "slos": [dataclasses.asdict(x) for x in cap.slos], "arrival": cap.arrival, "burstiness": cap.burstiness,
            "gpus_per_server": cap.gpus_per_server, "per": "gpu" if cap.gpus_per_server else "server",
            "service_time_s": service_s, "start_rate_req_s": state.start_rate,
            "search_windows": len(state.windows), "wall_s": 60.0 + len(state.windows) * 10,
            "client_ceiling_req_s": None, "results": results}
        atomic_write_jsonl(requests_path(path), records)
        atomic_write_json(path, to_json(doc))


def write_results(cfg: Config, results_dir: Path, fail: Iterable[str] = (), missing: Iterable[str] = (),
                  **options: Any) -> Path:
    """Write a synthetic results folder for ``cfg`` (see Generator for the options)."""
    return Generator(cfg, results_dir, **options).run(fail=fail, missing=missing)
