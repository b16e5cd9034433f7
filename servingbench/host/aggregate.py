"""Validate every result file a config expects and build the tidy summary table (host side).

One row per cell (or sweep) x window x metric x statistic (x SLO set for goodput and capacity,
x trial with ``run.trials`` > 1). Every expected cell and sweep has
rows: a finished one its figures, a failed one (``.failed.json``) or a missing one a single row
with ``status`` and ``reason``, so nothing is ever silently absent. A corrupt or foreign file
stops the run with an error naming the file; outputs are written only when all files are good.
"""

from __future__ import annotations

import gzip
import io
import lzma
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from servingbench.host import derived
from servingbench.host.config import Config, arm_tasks, context_lengths, sweep_arms
from servingbench.runtime.records import (
    CELL_SCHEMA, FAILURE_SCHEMA, GPU_PREFIX, CapacityResult, CapacitySearch, CellResult, DerivedFigures, FailureRecord, GpuSummary, MemorySummary, ServerInfo,
    RequestRecord, SloVerdict, Stats, WindowSummary, capacity_metrics, from_json, summary_metrics,
)
from servingbench.host.result_files import ResultFileError, current_window, load_result, read_json  # noqa: F401
from servingbench.runtime.results import (atomic_write_bytes, atomic_write_text, capacity_path, cell_path, failure_path,
                                  summary_path, sweep_path)
from servingbench.runtime.typed_json import ShapeError, fields_of, hints
from servingbench.host.workload_table import UNITS as WORKLOAD_UNITS, workload_rows

COLUMNS = ["framework", "model", "task", "mode", "kind", "concurrency", "prompt_tokens_target",
           "metric", "statistic", "value", "unit", "status", "reason", "weights", "device", "source",
           "trial", "slo", "turn"]
# Added after the first summaries were written: a summary without them reads as all-NA.
OPTIONAL_COLUMNS = ("trial", "slo", "turn")
STATS = tuple(f.name for f in fields_of(Stats))
# The summary metrics of the result types (servingbench.runtime.records: fields marked summary=True), in
# declaration order: a window's per-request summaries, then its single figures; memory; GPU.
_WINDOW_SUMMARY = [f for f in fields_of(WindowSummary) if f.metadata["summary"]]
WINDOW_STATS = tuple(f.name for f in _WINDOW_SUMMARY if hints(WindowSummary)[f.name] == Stats | None)
WINDOW_VALUES = tuple(f.name for f in _WINDOW_SUMMARY if f.name not in WINDOW_STATS)
MEMORY_VALUES = tuple(f.name for f in fields_of(MemorySummary) if f.metadata["summary"])
GPU_VALUES = tuple(f.name for f in fields_of(GpuSummary) if f.metadata["summary"])
SERVER_PREFIX = "server_"


def _units() -> dict[str, str]:
    """Summary metric -> unit, from the fields' metadata (GPU and server figures prefixed as in
    summary.csv; a capacity result's measured figures as capacity_<name>)."""
    units = {metric: unit_of_field(cls, name) for cls in (WindowSummary, MemorySummary, DerivedFigures, SloVerdict)
             for metric, name in summary_metrics(cls).items()}
    units.update({GPU_PREFIX + f.name: f.metadata["unit"] for f in fields_of(GpuSummary) if f.metadata["summary"]})
    units.update({SERVER_PREFIX + f.name: f.metadata["unit"] for f in fields_of(ServerInfo)})
    for cls in (CapacityResult, CapacitySearch):
        units.update({metric: unit_of_field(cls, name) for metric, name in capacity_metrics(cls).items()})
    return units


def unit_of_field(cls: type, name: str) -> str:
    return cls.__dataclass_fields__[name].metadata["unit"]


UNITS = _units()
_SUFFIX_UNITS = (("_ms", "ms"), ("_bytes", "bytes"), ("_s", "s"), ("_j", "J"), ("_w", "W"), ("_pct", "%"))


def unit_of(metric: str) -> str:
    """The unit of a summary metric: from the result types' fields, the workload table, or the
    name's suffix."""
    if UNITS.get(metric):
        return UNITS[metric]
    if metric in WORKLOAD_UNITS:
        return WORKLOAD_UNITS[metric]
    for suffix, unit in _SUFFIX_UNITS:
        if metric.endswith(suffix):
            return unit
    return ""


@dataclass
class Entry:
    """One expected cell or sweep and what the results folder holds for it."""

    kind: str  # cell | sweep_concurrency | sweep_context | sweep_capacity
    arm: str
    framework: str  # the framework family of the arm (transformers, tgi, vllm)
    model: str
    task: str
    mode: str
    path: Path  # where the result file is (or would be)
    status: str = "missing"  # ok | failed | missing
    reason: str = ""
    result: CellResult | None = None  # the validated result (status ok)
    failure: FailureRecord | None = None  # the validated failure record (status failed)
    weights: str = ""
    device: str = ""
    stale: str = ""  # keys whose recorded setting differs from the config's (servingbench.host.staleness)

    @property
    def label(self) -> str:
        if self.kind == "cell":
            return f"{self.arm}/{self.model}/{self.task}/{self.mode}"
        if self.kind == "sweep_capacity":
            return f"{self.arm}/{self.model}/capacity-{self.task}"
        return f"{self.arm}/{self.model}/{self.kind}"

    def source(self, results_dir: Path) -> str:
        """The file behind this entry's figures, relative to the results folder."""
        path = failure_path(self.path) if self.status == "failed" else self.path
        try:
            return str(path.relative_to(results_dir))
        except ValueError:
            return str(path)


def expected_entries(cfg: Config, results_dir: str | Path) -> list[Entry]:
    """Every cell and sweep the config asks for, in a stable order (arm, model, cells, sweeps)."""
    results_dir = Path(results_dir)
    out: list[Entry] = []
    for arm, arm_spec in cfg.frameworks.items():
        for model in cfg.models:
            common = dict(arm=arm, framework=arm_spec.framework, model=model,
                          weights=cfg.weights, device=cfg.device)
            for task in arm_tasks(cfg, arm):
                for mode in cfg.modes:
                    out.append(Entry(kind="cell", task=task, mode=mode,
                                     path=cell_path(results_dir, arm, model, task, mode), **common))
            if arm not in sweep_arms(cfg):
                continue
            conc = cfg.sweeps.concurrency
            if conc is not None:
                out.append(Entry(kind="sweep_concurrency", task=conc.task, mode=conc.mode,
                                 path=sweep_path(results_dir, arm, model, "concurrency"), **common))
            ctx = cfg.sweeps.context
            # The workflow skips a context sweep when no prompt length fits the model.
            if ctx is not None and context_lengths(cfg, model):
                out.append(Entry(kind="sweep_context", task="context", mode=ctx.mode,
                                 path=sweep_path(results_dir, arm, model, "context"), **common))
            cap = cfg.sweeps.capacity
            for task in cap.tasks if cap is not None else []:
                out.append(Entry(kind="sweep_capacity", task=task, mode="stream",
                                 path=capacity_path(results_dir, arm, model, task), **common))
    return out


def check_identity(path: Path, kind: str, keys: Any, entry: Entry) -> None:
    """Does the file belong at this path (its kind, arm, model, task and mode)?"""
    if kind != entry.kind:
        raise ResultFileError(f"{path}: foreign file, kind is {kind!r} but this path holds {entry.kind!r} results")
    want = {"arm": entry.arm, "model": entry.model}
    if entry.kind == "cell":
        want.update(task=entry.task, mode=entry.mode)
    elif entry.kind == "sweep_capacity":
        want.update(task=entry.task)
    wrong = {k: getattr(keys, k) for k, v in want.items() if getattr(keys, k) != v}
    if wrong:
        got = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        raise ResultFileError(f"{path}: foreign file, it describes {got} but its path is {entry.label}")


def load_entry(entry: Entry) -> Entry:
    """Fill in status, reason and the validated (typed) result of one expected entry."""
    fail = failure_path(entry.path)
    if entry.path.exists():
        result = load_result(entry.path, CELL_SCHEMA)
        check_identity(entry.path, result.kind, result.cell, entry)
        entry.status, entry.result = "ok", result
        entry.weights, entry.device = result.weights, result.device
    elif fail.exists():
        record = load_result(fail, FAILURE_SCHEMA)
        check_identity(fail, record.kind, record.cell, entry)
        entry.status, entry.failure = "failed", record
        entry.reason = f"{record.category}: {record.reason}"
    else:
        entry.status = "missing"
        entry.reason = f"no result file ({entry.path.name} or {fail.name}): the cell has not run"
    return entry


def load_results(cfg: Config, results_dir: str | Path, allow_stale: bool = False,
                 source: str = "the config") -> list[Entry]:
    """Every expected entry, validated; raises ResultFileError on the first bad file and
    StaleResultsError for results measured under other settings (unless ``allow_stale``:
    then they are kept and marked)."""
    from servingbench.host.staleness import check_stale

    entries = [load_entry(e) for e in expected_entries(cfg, results_dir)]
    check_stale(cfg, entries, source, allow_stale)
    return entries


# A published example may store request records compressed (a capacity search's run to 10-35 MB
# plain): xz where size matters most (every device call carries the tree), gzip as well.
_COMPRESSED = {".xz": lzma.open, ".gz": gzip.open}


def read_requests(entry: Entry) -> list[RequestRecord]:
    """The per-request records of a finished entry ([] when it has none). The file named by the
    result, or the same name with ``.xz`` or ``.gz`` added (compressed by a published example)."""
    if entry.result is None or not entry.result.requests_file:
        return []
    plain = entry.path.parent / entry.result.requests_file
    path = next((p for p in (plain, *(plain.with_name(plain.name + s) for s in _COMPRESSED))
                 if p.exists()), None)
    if path is None:
        return []
    try:
        return _request_rows(path)
    except (EOFError, gzip.BadGzipFile, lzma.LZMAError, UnicodeDecodeError) as exc:  # truncated or foreign
        raise ResultFileError(f"{path}: unreadable request records ({exc})") from None


def _request_rows(path: Path) -> list[RequestRecord]:
    rows = []
    opener = _COMPRESSED.get(path.suffix, open)
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ResultFileError(f"{path}:{lineno}: corrupt request record ({exc.msg})") from None
            if not isinstance(row, dict) or "e2e_ms" not in row or "window" not in row:
                raise ResultFileError(f"{path}:{lineno}: not a request record (needs window, e2e_ms)")
            try:
                rows.append(from_json(RequestRecord, row))
            except (ShapeError, TypeError) as exc:
                raise ResultFileError(f"{path}:{lineno}: not a request record ({exc})") from None
    return rows


def _metric_rows(result: CellResult) -> Iterator[tuple[Any, Any, Any, str, str, Any]]:
    """(concurrency, prompt_tokens_target, trial, metric, statistic, value) of one result.
    A capacity search's windows differ by rate, not concurrency: its rows come from derived."""
    for w in result.windows if result.kind != "sweep_capacity" else []:
        conc, target, trial = w.concurrency, w.prompt_tokens_target, result.trial_of(w)
        for metric in WINDOW_STATS:
            stats = getattr(w, metric)
            if stats is not None:
                for stat in STATS:
                    yield conc, target, trial, metric, stat, getattr(stats, stat)
        for metric in WINDOW_VALUES:
            if getattr(w, metric) is not None:  # e.g. server_ttft_ms_mean exists only where a server reports it
                yield conc, target, trial, metric, "value", getattr(w, metric)
    mem = result.memory
    for metric in MEMORY_VALUES:
        if getattr(mem, metric) is not None:
            yield None, None, None, metric, "value", getattr(mem, metric)
    for metric in GPU_VALUES if mem.gpu is not None else ():
        if getattr(mem.gpu, metric) is not None:
            yield None, None, None, GPU_PREFIX + metric, "value", getattr(mem.gpu, metric)
    server = result.server
    if server.startup_s is not None:  # None when the server was reused
        yield None, None, None, SERVER_PREFIX + "startup_s", "value", server.startup_s
    yield None, None, None, SERVER_PREFIX + "reused", "value", int(bool(server.reused))


def tidy(entries: list[Entry], results_dir: str | Path, cfg: Config | None = None) -> pd.DataFrame:
    """The tidy table of a list of loaded entries (see module docstring), with the rows derived from
    per-request records (servingbench.host.derived: intervals, capacity; with ``cfg``, goodput per SLO set)."""
    results_dir = Path(results_dir)
    rows: list[dict[str, Any]] = []
    for e in entries:
        reason = f"stale: {e.stale}" if e.stale else e.reason
        base = dict(framework=e.arm, model=e.model, task=e.task, mode=e.mode, kind=e.kind,
                    status=e.status, reason=reason, weights=e.weights, device=e.device,
                    source=e.source(results_dir), trial=None, slo=None, turn=None)
        if e.result is None:
            rows.append(dict(base, concurrency=None, prompt_tokens_target=None, turn=None, metric="",
                             statistic="", value=None, unit=""))
            continue
        both = [(c, t, tr, None, m, s, v) for c, t, tr, m, s, v in _metric_rows(e.result)] + list(workload_rows(e.result))
        for conc, target, trial, turn, metric, stat, value in both:
            rows.append(dict(base, concurrency=conc, prompt_tokens_target=target, trial=trial, turn=turn, metric=metric,
                             statistic=stat, value=None if value is None else float(value),
                             unit="count" if stat == "n" else unit_of(metric)))
        records = read_requests(e)
        extra = list(derived.capacity_rows(e.result, records))
        extra += derived.interval_rows(e.result, records, e.arm, e.model, e.task, e.mode)
        if cfg is not None:
            extra += derived.goodput_rows(cfg, e.result, e.task, records)
        for row in extra:
            rows.append({**base, **row, "value": float(row["value"]), "unit": unit_of(row["metric"])})
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("concurrency", "prompt_tokens_target", "trial", "turn"):
        df[col] = df[col].astype("Int64")
    df["value"] = df["value"].astype("float64")
    return df


def aggregate(cfg: Config, results_dir: str | Path, allow_stale: bool = False,
              source: str = "the config") -> pd.DataFrame:
    """Validate every expected result file under ``results_dir`` and return the tidy table."""
    return tidy(load_results(cfg, results_dir, allow_stale, source), results_dir, cfg)


def write_summary(df: pd.DataFrame, results_dir: str | Path) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.parquet``; both are rendered before either is written."""
    results_dir = Path(results_dir)
    csv_text = df.to_csv(index=False)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    csv_path, pq_path = summary_path(results_dir), summary_path(results_dir, "parquet")
    atomic_write_text(csv_path, csv_text)
    atomic_write_bytes(pq_path, buf.getvalue())
    return csv_path, pq_path


def read_summary(path: str | Path) -> pd.DataFrame:
    """Read a summary written by ``write_summary`` (a folder, a .parquet or a .csv file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: does not exist; expected a run folder with a summary "
                                "(summary.parquet or summary.csv)")
    if path.is_dir():
        for name in ("summary.parquet", "summary.csv", "results/summary.parquet", "results/summary.csv"):
            if (path / name).exists():
                return read_summary(path / name)
        raise FileNotFoundError(f"{path}: no summary.parquet or summary.csv (run `servingbench aggregate`)")
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype={"reason": "string", "metric": "string", "statistic": "string",
                                      "unit": "string", "source": "string"}, keep_default_na=False,
                         na_values={"value": [""], "concurrency": [""], "prompt_tokens_target": [""], "trial": [""],
                                    "turn": [""]})
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a servingbench summary (no column {', '.join(missing)})")
    for col in ("concurrency", "prompt_tokens_target", "trial", "turn"):
        df[col] = df[col].astype("Int64")
    df["slo"] = df["slo"].replace("", pd.NA).astype("string")
    return df
