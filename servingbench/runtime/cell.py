"""Run one cell (or sweep) against a real server and write its result file atomically.

Start the server, wait for readiness, then for each measured window: warm up (not counted),
measure with the monitors on, summarise. Stop the server's whole tree whatever happens. A
failed cell leaves no result file: only its server log and a failure record saying why.
Runtime module.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from servingbench.runtime import arrivals, conversations, prefix_cache, provenance
from servingbench.runtime.client import LoadClient, WindowPlan
from servingbench.runtime.cpu_split import affinity_text, client_affinity, split
from servingbench.runtime.errors import UserError
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.frameworks.base import Adapter
from servingbench.runtime.lifecycle import ServerStartError, out_of_memory
from servingbench.runtime.metrics import window_summary
from servingbench.runtime.server_settings import SettingMismatch, fetch_metrics, server_log_text, verify_settings
from servingbench.runtime.monitor import GPU, Monitor
from servingbench.runtime.providers import RunningServer, ServerHandle, ServerProvider
from servingbench.runtime.redaction import redact, redact_argv, redact_data, redact_server, remember
from servingbench.runtime.records import (
    CapacitySearch,
    CellKeys,
    CellResult,
    FailureKeys,
    FailureRecord,
    Provenance,
    RequestCounts,
    RequestRecord,
    ServerInfo,
    WindowSummary,
    from_json,
    to_json,
)
from servingbench.runtime.results import (
    atomic_write_json,
    atomic_write_jsonl,
    check_writable,
    failure_path,
    json_text,
    jsonl_text,
    keep_safe,
    requests_path,
    rescue_roots,
    server_log_path,
)
from servingbench.runtime.spec import CellSpec, PromptItem, read_workload
from servingbench.runtime.workload_metrics import workload_summary


class CellFailed(RuntimeError):
    """A cell could not produce an honest result; the message names the cell and the cause.

    ``requests``: what the measured requests did before the cell failed (total, completed,
    failed, errors by kind), when any ran; the failure record keeps it. ``kept``: the rescue
    folder holding the measured records when the results folder could not take them.
    """

    def __init__(self, cell_id: str, category: str, reason: str,
                 requests: dict[str, Any] | None = None, kept: Path | None = None) -> None:
        reason = redact(reason)
        super().__init__(f"cell {cell_id} failed ({category}): {reason}")
        self.cell_id, self.category, self.reason = cell_id, category, reason
        self.requests, self.kept = requests, kept

    def noting(self, note: str) -> "CellFailed":
        """The same failure with ``note`` (where its failure record went) added to the reason."""
        return CellFailed(self.cell_id, self.category, self.reason + note, self.requests, self.kept) if note else self


def request_counts(windows: list[WindowSummary]) -> dict[str, Any]:
    """Requests, completed, failed and errors by kind, summed over measured windows."""
    errors: dict[str, int] = {}
    for w in windows:
        for kind, n in w.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    return to_json(RequestCounts(requests=sum(w.requests for w in windows),
                                 completed=sum(w.completed for w in windows),
                                 failed=sum(w.failed for w in windows), errors=errors))


def _counts_text(counts: dict[str, Any]) -> str:
    return (f"{counts['failed']} of {counts['requests']} measured requests failed"
            + (f" ({', '.join(f'{k}: {v}' for k, v in counts['errors'].items())})" if counts["errors"] else ""))


class Progress:
    """One progress line per cell on stderr: requests done, errors, ETA.

    ``unit`` names what is counted (requests show their errors too); with ``after_s`` nothing is
    printed until the step has run that long, so short steps (a small warm-up) stay quiet.
    """

    def __init__(self, cell_id: str, total: int, stream: Any = None, unit: str = "requests",
                 after_s: float = 0.0) -> None:
        self.cell_id, self.total, self.done, self.errors = cell_id, total, 0, 0
        self.unit, self.after_s = unit, after_s
        self.out = stream or sys.stderr
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.t0 = time.monotonic()
        self._last = 0.0
        self._printed = False

    def update(self, rec: RequestRecord) -> None:
        self.step(rec.ok)

    def step(self, ok: bool = True) -> None:
        self.done += 1
        self.errors += 0 if ok else 1
        self.show()

    def show(self, note: str = "") -> None:
        """Print the line if it is due (a terminal: always; a log: every 5 s and at the end)."""
        now = time.monotonic()
        if now - self.t0 < self.after_s:
            return
        if self.tty or now - self._last >= 5.0 or self.done == self.total:
            self._last, self._printed = now, True
            rate = self.done / max(now - self.t0, 1e-9)
            eta = f"ETA {(self.total - self.done) / rate:5.0f} s" if rate > 0 else "ETA unknown"
            errors = f", {self.errors} errors" if self.unit == "requests" else ""
            line = f"[{self.cell_id}] {self.done}/{self.total} {self.unit}{errors}{note}, {eta}"
            print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=self.out, flush=True)

    def close(self) -> None:
        if self.tty and self._printed:
            print(file=self.out, flush=True)


class TokenCounter:
    """Tokenizer fallback for output counts, loaded on first use only: every arm reports its
    own counts, and importing transformers costs seconds per cell job. Optional import."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self._tok: Any = None
        self._failed = False

    def __call__(self, text: str) -> int | None:
        if self._tok is None and not self._failed:
            try:
                self._tok = importlib.import_module("transformers").AutoTokenizer.from_pretrained(self.model_dir)
            except Exception:
                self._failed = True
        if self._tok is None:
            return None
        return len(self._tok(text, add_special_tokens=False)["input_ids"])


def _cycle(items: list[PromptItem]) -> Iterator[PromptItem]:
    return itertools.cycle(items)


async def server_timings(client: httpx.AsyncClient, adapter: Adapter) -> dict[str, tuple[float, float]]:
    """One scrape of the server's own timing histograms: figure -> (sum seconds, count)."""
    if not adapter.server_timing_histograms:
        return {}
    text = await prefix_cache.metrics_page(client, adapter.server_metrics_path())
    return adapter.server_side_timings(text) if text is not None else {}


def server_means_ms(before: dict[str, tuple[float, float]],
                    after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """``server_{figure}_ms_mean`` of what the server observed between two scrapes."""
    out = {}
    for figure, (sum_after, n_after) in after.items():
        if figure in before and n_after > before[figure][1]:
            out[f"server_{figure}_ms_mean"] = 1000.0 * (sum_after - before[figure][0]) / (n_after - before[figure][1])
    return out


def plan_windows(spec: CellSpec, items: list[PromptItem]) -> list[tuple[WindowPlan, WindowPlan | None]]:
    """(measured window, its warm-up) pairs. Context sweeps: one window per prompt length."""
    if spec.workload == "multiturn":
        return conversations.plan_windows(spec, items)
    if spec.workload == "trace":
        return arrivals.plan_windows(spec, items)
    stream = spec.mode == "stream"
    plans: list[tuple[WindowPlan, WindowPlan | None]] = []
    if spec.kind == "sweep_context":
        by_len: dict[int, list[PromptItem]] = {}
        for it in items:
            by_len.setdefault(int(it.extra.get("prompt_tokens_target", it.prompt_tokens)), []).append(it)
        for w, (length, group) in enumerate(sorted(by_len.items())):
            warm = WindowPlan(items=group[:spec.warmup_requests], concurrency=1, stream=stream, warmup=True)
            meas = WindowPlan(items=[group[i % len(group)] for i in range(spec.requests)],
                              concurrency=1, stream=stream, window=w, seed=spec.seed + w,
                              prompt_tokens_target=length)
            plans.append((meas, warm if warm.items else None))
        return plans
    source = _cycle(items)
    w = 0
    for level in spec.concurrency_levels:
        # Warm up at the window's own concurrency, at least one full wave: on the H100, vLLM's
        # first batch of 8 stalled 3-7 s (a new batch shape) when warm-up had run one at a time.
        n_warm = max(spec.warmup_requests, level) if spec.warmup_requests else 0
        warm_items = [next(source) for _ in range(n_warm)]
        warm = WindowPlan(items=warm_items, concurrency=level, stream=stream, warmup=True) if warm_items else None
        for trial in range(spec.trials):  # run.trials: repeated windows, back to back, one warm-up
            meas_items = [next(source) for _ in range(spec.requests)]
            meas = WindowPlan(items=meas_items, concurrency=level, stream=stream, window=w,
                              request_rate=spec.request_rate, seed=spec.seed + w, trial=trial)
            plans.append((meas, warm if trial == 0 else None))
            w += 1
    return plans


async def _measure(spec: CellSpec, adapter: Adapter, base_url: str, items: list[PromptItem],
                   progress: Progress, alive: Callable[[], bool]) -> tuple[list[WindowSummary], list[RequestRecord]]:
    windows: list[WindowSummary] = []
    records: list[RequestRecord] = []
    max_conn = max(spec.concurrency_levels)
    async with LoadClient(base_url, adapter, spec.server, spec.generation, spec.output_length_policy,
                          spec.request_timeout_s, max_connections=max_conn,
                          count_tokens=TokenCounter(spec.server.model_dir),
                          keep_text=spec.workload == "multiturn") as client:
        for meas, warm in plan_windows(spec, items):
            if warm is not None:  # a long warm-up (thousands of requests) shows its progress too
                warm_progress = Progress(f"{spec.cell_id()} warm-up", len(warm.items), progress.out, after_s=5.0)
                await client.run_window(warm, on_done=warm_progress.update)
                warm_progress.close()
            before = await server_timings(client.http, adapter)
            cache_before = await prefix_cache.prefix_cache_totals(client.http, adapter)
            recs, window_s = await client.run_window(meas, on_done=progress.update)
            after = await server_timings(client.http, adapter)
            cache_after = await prefix_cache.prefix_cache_totals(client.http, adapter)
            summary = window_summary(recs, window_s, meas.concurrency, meas.stream, meas.prompt_tokens_target)
            summary.update(server_means_ms(before, after))
            summary.update(server_timing_means(adapter, recs, summary.server_ttft_ms_mean))
            if spec.trials > 1:
                summary.trial = meas.trial
            summary.update(workload_summary(recs, cache_before, cache_after))
            windows.append(summary)
            records.extend(recs)
            late = arrivals.behind(summary.arrivals, spec.max_lateness_ms)
            if late is not None:
                raise CellFailed(spec.cell_id(), "client_behind", late, requests=request_counts(windows))
            lost = await server_lost(client.http, adapter, alive) if summary.failed or not alive() else None
            if lost is not None:
                counts = request_counts(windows)
                raise CellFailed(spec.cell_id(), lost[0], f"{lost[1]}; {_counts_text(counts)}", requests=counts)
    return windows, records


def server_timing_means(adapter: Adapter, records: list[RequestRecord],
                        metrics_ttft_ms: float | None) -> dict[str, Any]:
    """Means of the server's own per-request timings over a window's completed requests
    (llama.cpp's ``timings``), with what they are; the /metrics TTFT, where there is one, wins."""
    ok = [r for r in records if r.ok]
    ttft = [v for r in ok if (v := adapter.server_ttft_ms(r.server_timing)) is not None]
    tpot = [v for r in ok if (v := adapter.server_tpot_ms(r.server_timing)) is not None]
    out: dict[str, Any] = {}
    if metrics_ttft_ms is None and ttft:
        out["server_ttft_ms_mean"] = sum(ttft) / len(ttft)
    if tpot:
        out["server_tpot_ms_mean"] = sum(tpot) / len(tpot)
    if out or metrics_ttft_ms is not None:
        out["server_timing_source"] = adapter.server_ttft_source
    return out


def _measure_windows(spec: CellSpec, adapter: Adapter, handle: ServerHandle, items: list[PromptItem],
                     progress_stream: Any) -> tuple[list[WindowSummary], list[RequestRecord]]:
    """The windows of a cell, a concurrency sweep or a context sweep, with a progress line."""
    total = sum(len(m.items) for m, _ in plan_windows(spec, items))
    progress = Progress(spec.cell_id(), total, progress_stream)
    try:
        return asyncio.run(_measure(spec, adapter, handle.proc.base_url, items, progress, handle.proc.alive))
    finally:
        progress.close()


async def _measure_capacity(spec: CellSpec, adapter: Adapter, handle: ServerHandle, items: list[PromptItem],
                            gpu: GPU | None, progress_stream: Any) -> tuple[list[WindowSummary], list[RequestRecord], CapacitySearch]:
    """A capacity search (servingbench.runtime.capacity) against the cell's server."""
    from servingbench.runtime.capacity import ProbeFailed, measure_capacity

    assert spec.capacity is not None
    async with LoadClient(handle.proc.base_url, adapter, spec.server, spec.generation, spec.output_length_policy,
                          spec.request_timeout_s, max_connections=spec.capacity.max_in_flight,
                          count_tokens=TokenCounter(spec.server.model_dir)) as client:
        windows: list[WindowSummary] = []

        async def check_server(window: WindowSummary) -> None:
            windows.append(window)
            alive = handle.proc.alive
            lost = await server_lost(client.http, adapter, alive) if window.failed or not alive() else None
            if lost is not None:
                counts = request_counts(windows)
                raise CellFailed(spec.cell_id(), lost[0], f"{lost[1]}; {_counts_text(counts)}", requests=counts)

        try:
            return await measure_capacity(spec, client, items,
                                          lambda: Monitor(lambda: handle.proc.pid, gpu, spec.monitor_interval_s),
                                          check_server, progress_stream)
        except ProbeFailed as exc:
            counts = request_counts(windows)
            raise CellFailed(spec.cell_id(), "requests_failed", str(exc), requests=counts) from None


async def server_lost(client: httpx.AsyncClient, adapter: Adapter, alive: Callable[[], bool],
                      grace_s: float = 10.0) -> tuple[str, str] | None:
    """After a window with failed requests: (category, reason) if the server is gone, else None.

    A server whose engine died (a GPU fault, a killed worker) may take seconds to exit and
    answers errors meanwhile: wait up to ``grace_s`` for it to be healthy again or to exit, so
    that its death is not recorded as a finished cell with some failed requests.
    """
    deadline = time.monotonic() + grace_s
    detail = ""
    while True:
        if not alive():
            return "server_exited", "the server process died during the measurement"
        try:
            resp = await client.get(adapter.health_path, timeout=5.0)
            if resp.status_code == 200:
                return None
            detail = f"HTTP {resp.status_code}"
        except httpx.TimeoutException:
            return None  # busy, not gone: a loaded server may answer health slowly
        except httpx.HTTPError as exc:
            detail = type(exc).__name__
        if time.monotonic() > deadline:
            return "requests_failed", f"the server stopped answering its health check ({detail}) during the measurement"
        await asyncio.sleep(0.5)


def write_failure(out_path: Path, spec: CellSpec, category: str, reason: str, log: Path | None,
                  requests: dict[str, Any] | None = None, kept: Path | None = None) -> str:
    """Write the failure record beside where the result would be; if that folder cannot take
    it, into the rescue folder. Returns "" when it went to its place, else a note saying where
    it went (for the cell's message). Never raises OSError: the failure it records matters more."""
    path = failure_path(out_path)
    # failed requests are counted, never dropped, even when the cell fails
    record = to_json(FailureRecord(
        kind=spec.kind, cell=from_json(FailureKeys, _cell_keys(spec)), category=category, reason=redact(reason),
        log=str(log) if log else None, at=provenance.now_iso(), requests=from_json(RequestCounts, requests),
        kept=str(kept) if kept is not None else None))
    try:
        atomic_write_json(path, record)
        return ""
    except OSError as exc:
        error = exc.strerror or str(exc)
    try:
        if kept is not None:
            atomic_write_json(kept / path.name, record)
            return f"; failure record in {kept / path.name} ({path.parent}: {error})"
    except OSError:
        pass
    folder = keep_safe(out_path, {path.name: json_text(record)})
    if folder is not None:
        return f"; failure record in {folder / path.name} ({path.parent}: {error})"
    return f"; no failure record could be written ({path.parent}: {error}; tried {', '.join(map(str, rescue_roots()))})"


def _cell_keys(spec: CellSpec) -> dict[str, str]:
    return {"arm": spec.arm, "framework": spec.server.framework, "model": spec.model,
            "task": spec.task, "mode": spec.mode}


def _checked_settings(adapter: Adapter, spec: CellSpec, proc: RunningServer) -> dict[str, Any]:
    """What the server itself reports of the settings the result records; CellFailed if it differs."""
    try:
        return verify_settings(adapter, spec.server, server_log_text(proc.log_path),
                               fetch_metrics(proc.base_url, adapter.server_metrics_path()))
    except SettingMismatch as exc:
        raise CellFailed(spec.cell_id(), "setting_mismatch", f"{exc} (log: {proc.log_path})") from None


def run_cell(spec: CellSpec, workload: str | Path, out_path: str | Path, results_dir: str | Path = "results", *,
             provider: ServerProvider, progress_stream: Any = None) -> dict[str, Any]:
    """Measure one cell or sweep and write ``out_path`` (+ requests file) against the server
    ``provider`` gives (servingbench.runtime.providers, servingbench.runtime.pool). Raises CellFailed; raises
    UserError before any server starts for bad input (an unreadable workload, an output that
    cannot be written)."""
    out_path = Path(out_path)
    log_path = server_log_path(out_path, results_dir)
    remember(dict(spec.server.env), spec.server.server_args)  # masked in all this cell writes
    items = _read_items(workload)  # bad input never starts a server
    check_writable(out_path, log_path, need_bytes=records_bytes(spec))
    failure_path(out_path).unlink(missing_ok=True)
    adapter = get_adapter(spec.server.adapter_name)
    cpus = split(spec.server.client_cpus)  # an impossible split never starts a server
    gpu = GPU() if spec.server.device == "cuda" else None
    started_at = provenance.now_iso()
    handle: ServerHandle | None = None
    try:
        before_load = gpu.used_bytes() if gpu and gpu.available else None
        handle = provider(adapter, spec, log_path)
        after_load = gpu.used_bytes() if gpu and gpu.available else None
        settings = _checked_settings(adapter, spec, handle.proc)
        cache_emptied = _empty_reused_cache(adapter, spec, handle)
        capacity = None
        # The client (this thread, and the monitor it starts) on its CPUs once the server has its own.
        with client_affinity(cpus.client if cpus else None):
            placement = {"client_cpus": affinity_text(0), "server_cpus": affinity_text(handle.proc.pid)}
            monitor = Monitor(lambda: handle.proc.pid, gpu, spec.monitor_interval_s).start()
            try:
                if spec.kind == "sweep_capacity":
                    windows, records, capacity = asyncio.run(_measure_capacity(spec, adapter, handle, items, gpu,
                                                                               progress_stream))
                else:
                    windows, records = _measure_windows(spec, adapter, handle, items, progress_stream)
            finally:
                monitor.stop()
        if not any(w.completed for w in windows):
            counts = request_counts(windows)
            raise CellFailed(spec.cell_id(), "requests_failed", f"no request completed; {_counts_text(counts)}",
                             requests=counts)
        out_tokens = sum(w.output_tokens_actual_total for w in windows)
        result = CellResult(
            kind=spec.kind, cell=from_json(CellKeys, _cell_keys(spec)),
            weights=spec.server.weights, device=spec.server.device,
            spec=_spec_dict(spec), windows=windows,
            memory=monitor.summary(before_load, after_load, out_tokens),
            server=ServerInfo(
                reused=handle.reused, pooled=handle.pooled, startup_s=handle.startup_s,
                started_at=handle.started_at, pid=handle.proc.pid, command=handle.proc.command(), log=str(log_path),
                server_settings={"gpu_memory_utilization": spec.server.gpu_memory_utilization,
                                 "prefix_caching": spec.server.prefix_caching,
                                 "prefix_cache_supported": adapter.prefix_cache_unavailable(
                                     spec.server.server_args) is None,
                                 "prefix_cache_emptied": cache_emptied,
                                 "server_args": redact_argv(spec.server.server_args),
                                 "model_server_args": redact_argv(spec.server.model_server_args), **settings},
            ),
            provenance=from_json(Provenance, {
                **provenance.collect(adapter, gpu.info if gpu else None, spec.config_hash,
                                     spec.server.image, spec.server.profile, dict(spec.server.env)),
                "weights": provenance.weights_info(adapter.served_weights(spec.server)), **placement,
                "started_at": started_at, "finished_at": provenance.now_iso()}),
            requests_file=requests_path(out_path).name,
            capacity=capacity,
        )
        doc = redact_data(to_json(result))
        write_result(spec, out_path, doc, [_record_row(r) for r in records], request_counts(windows))
        return doc
    except CellFailed as exc:
        if exc.category == "server_exited" and handle is not None and out_of_memory(handle.proc.log_tail()):
            exc = CellFailed(exc.cell_id, "out_of_memory", f"server out of memory: {exc.reason}", exc.requests)
        note = write_failure(out_path, spec, exc.category, exc.reason, log_path, exc.requests, exc.kept)
        raise exc.noting(note) from None
    except ServerStartError as exc:
        note = write_failure(out_path, spec, exc.category, str(exc), log_path)
        raise CellFailed(spec.cell_id(), exc.category, f"{exc} (log: {log_path}){note}") from None
    except (KeyboardInterrupt, SystemExit) as exc:
        write_failure(out_path, spec, "interrupted", f"interrupted by {_signal_name(exc)}; no result written",
                      log_path)
        raise
    except Exception as exc:
        note = write_failure(out_path, spec, "error", f"{type(exc).__name__}: {exc}", log_path)
        raise CellFailed(spec.cell_id(), "error", f"{type(exc).__name__}: {exc}{note}") from exc
    finally:
        if handle is not None:
            handle.close()


def _read_items(workload: str | Path) -> list[PromptItem]:
    try:
        return read_workload(str(workload))
    except OSError as exc:
        raise UserError(f"{workload}: cannot read the workload ({exc.strerror or exc}); build it first "
                        "(servingbench build-workload) or pass --workload") from None
    except ValueError as exc:
        raise UserError(f"{exc}; rebuild it (servingbench build-workload)") from None


def records_bytes(spec: CellSpec) -> int:
    """A generous estimate of the bytes a cell's records take (checked free before it starts):
    about 1 KiB per request plus its stream's event times."""
    per_request = 1024 + (16 * spec.generation.max_tokens if spec.mode == "stream" else 0)
    windows = len(spec.concurrency_levels) if spec.kind != "sweep_context" else 8
    return 64 * 1024 + spec.requests * windows * per_request


def _record_row(rec: RequestRecord) -> dict[str, Any]:
    row = rec.to_dict()
    if row["error"]:  # server-supplied text: an echoed header could carry a credential
        row["error"] = redact(row["error"])
    return row


def write_result(spec: CellSpec, out_path: Path, result: dict[str, Any], rows: list[dict[str, Any]],
                 counts: dict[str, Any]) -> None:
    """Write the requests file, then the result (its existence means the cell is complete).
    If either cannot be written, leave neither (no orphan requests file), keep both in a
    rescue folder, and raise CellFailed ("write_failed") saying where they are."""
    req_file = requests_path(out_path)
    try:
        atomic_write_jsonl(req_file, rows)
        atomic_write_json(out_path, result)
        return
    except OSError as exc:
        error = f"cannot write {exc.filename or out_path} ({exc.strerror or exc})"
    try:
        req_file.unlink(missing_ok=True)
    except OSError:
        pass
    kept = keep_safe(out_path, {out_path.name: json_text(result), req_file.name: jsonl_text(rows)})
    where = (f"its {len(rows)} measured request records and its result are kept in {kept}" if kept else
             f"its measured records could not be kept anywhere (tried {', '.join(map(str, rescue_roots()))})")
    raise CellFailed(spec.cell_id(), "write_failed", f"{error}; {where}", requests=counts, kept=kept)


def _empty_reused_cache(adapter: Adapter, spec: CellSpec, handle: ServerHandle) -> bool | None:
    """A reused server with prefix caching on starts the cell with an empty cache (True). A pooled
    server that cannot be emptied fails the cell; an external one (``measure``) is used as it is
    (False, and the report says so). None: caching off or a fresh server, nothing to empty."""
    if not spec.server.prefix_caching or not handle.reused:
        return None

    async def empty() -> str | None:
        async with httpx.AsyncClient(base_url=handle.proc.base_url, trust_env=False) as client:
            return await prefix_cache.empty_prefix_cache(client, adapter, spec.server)

    why = asyncio.run(empty())
    if why is not None and handle.pooled:
        raise CellFailed(spec.cell_id(), "error", f"cannot empty the prefix cache of the reused server: {why}")
    return why is None


def interrupt_signal(exc: BaseException) -> tuple[int, str | None]:
    """(exit code, signal name or None) of a KeyboardInterrupt (130, SIGINT) or of the
    SystemExit(128 + signum) that ``servingbench run-cell`` raises on a signal."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, "SIGINT"
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        return 1, None
    try:
        return code, signal.Signals(code - 128).name
    except ValueError:
        return code, None


def _signal_name(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT (Ctrl-C)"
    return interrupt_signal(exc)[1] or "a signal"


def _spec_dict(spec: CellSpec) -> dict[str, Any]:
    """The spec as the result records it: the server's flags and environment masked."""
    import json

    data = json.loads(spec.to_json())
    data["server"] = redact_server(data["server"])
    return data
