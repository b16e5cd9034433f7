"""Validate every result file a config expects and build the tidy summary table (host side).

One row per cell (or sweep) x window x metric x statistic (x SLO set for goodput and capacity,
x trial with ``run.trials`` > 1). Every expected cell and sweep has
rows: a finished one its figures, a failed one (``.failed.json``) or a missing one a single row
with ``status`` and ``reason``, so nothing is ever silently absent. A corrupt or foreign file
stops the run with an error naming the file; outputs are written only when all files are good.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from servingbench import derived, fields
from servingbench.config import REPO_ROOT, Config, arm_tasks, context_lengths, sweep_arms
from servingbench.results import (
    CELL_SCHEMA, FAILURE_SCHEMA, atomic_write_bytes, atomic_write_text, capacity_path, cell_path, failure_path,
    sweep_path,
)
from servingbench.workload_table import UNITS as WORKLOAD_UNITS, workload_rows

SCHEMA_DIR = REPO_ROOT / "schemas"
COLUMNS = ["framework", "model", "task", "mode", "kind", "concurrency", "prompt_tokens_target",
           "metric", "statistic", "value", "unit", "status", "reason", "weights", "device", "source",
           "trial", "slo", "turn"]
# Added after the first summaries were written: a summary without them reads as all-NA.
OPTIONAL_COLUMNS = ("trial", "slo", "turn")
STATS = ("mean", "p50", "p90", "p99", "min", "max", "n")
# Window entries summarised per request (stats objects) and single figures, in display order.
WINDOW_STATS = ("ttft_ms", "tpot_ms", "itl_ms", "event_gap_ms", "tokens_per_event", "e2e_ms", "output_tok_s",
                "queue_ms", "prompt_tokens")
WINDOW_VALUES = ("throughput_req_s", "throughput_output_tok_s", "requests", "completed", "failed",
                 "window_s", "output_tokens_requested_total", "output_tokens_actual_total",
                 "output_tokens_mismatched", "itl_unknown_requests", "server_ttft_ms_mean", "server_itl_ms_mean")
GPU_VALUES = ("device_used_before_load_bytes", "device_used_after_load_bytes", "device_used_peak_bytes",
              "device_total_bytes", "utilization_mean_pct", "power_mean_w", "energy_j",
              "energy_per_output_token_j", "memory_bandwidth_bytes_s")
# Units that a name's suffix does not say (or says wrongly: throughput_req_s is not seconds).
_UNITS = {
    "throughput_req_s": "req/s", "throughput_output_tok_s": "tokens/s", "output_tok_s": "tokens/s",
    "prompt_tokens": "tokens", "output_tokens_requested_total": "tokens",
    "output_tokens_actual_total": "tokens", "output_tokens_mismatched": "requests",
    "requests": "requests", "completed": "requests", "failed": "requests",
    "host_processes_max": "processes", "server_reused": "bool", "gpu_memory_bandwidth_bytes_s": "bytes/s",
    "gpu_energy_per_output_token_j": "J/token", "server_ttft_ms_mean": "ms", "server_itl_ms_mean": "ms",
    "tokens_per_event": "tokens", "itl_unknown_requests": "requests",
}
_SUFFIX_UNITS = (("_ms", "ms"), ("_bytes", "bytes"), ("_s", "s"), ("_j", "J"), ("_w", "W"), ("_pct", "%"))


class ResultFileError(ValueError):
    """A result file that is not what its path says (corrupt, foreign or invalid); names the file."""


def unit_of(metric: str) -> str:
    """The unit of a summary metric, from servingbench.fields, the table above or the name's suffix."""
    if fields.unit(metric) is not None:
        return fields.unit(metric)
    if metric in _UNITS:
        return _UNITS[metric]
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
    doc: dict[str, Any] | None = None  # the validated result (status ok)
    failure: dict[str, Any] | None = None  # the validated failure record (status failed)
    weights: str = ""
    device: str = ""
    stale: str = ""  # keys whose recorded setting differs from the config's (servingbench.staleness)

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


@lru_cache(maxsize=None)
def _validator(name: str) -> Any:
    import jsonschema  # host-side only; imported late so the module loads without it for `unit_of`

    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object; a corrupt file is a ResultFileError naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: corrupt result file, not valid JSON "
                              f"(line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise ResultFileError(f"{path}: corrupt result file, not UTF-8 text ({exc.reason})") from None
    if not isinstance(data, dict):
        raise ResultFileError(f"{path}: foreign file, a JSON {type(data).__name__} instead of a result object")
    return data


def validate(path: Path, data: dict[str, Any], schema_id: str, entry: Entry) -> None:
    """Check schema id, kind, identity (does it belong at this path?) and the JSON Schema."""
    found = data.get("schema")
    if found != schema_id:
        raise ResultFileError(f"{path}: foreign file, schema is {found!r} but {schema_id!r} belongs here")
    if data.get("kind") != entry.kind:
        raise ResultFileError(f"{path}: foreign file, kind is {data.get('kind')!r} but this path holds "
                              f"{entry.kind!r} results")
    import jsonschema

    validator = _validator(schema_id.split("/", 1)[1])
    err = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ResultFileError(f"{path}: does not match {schema_id} at {where}: {err.message}")
    cell = data["cell"]
    want = {"arm": entry.arm, "model": entry.model}
    if entry.kind == "cell":
        want.update(task=entry.task, mode=entry.mode)
    elif entry.kind == "sweep_capacity":
        want.update(task=entry.task)
    wrong = {k: cell.get(k) for k, v in want.items() if cell.get(k) != v}
    if wrong:
        got = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        raise ResultFileError(f"{path}: foreign file, it describes {got} but its path is {entry.label}")


def current_window(w: dict[str, Any]) -> dict[str, Any]:
    """A window with today's names. Results written before per-token ITL (no ``event_gap_ms``)
    called the gaps between stream events ``itl_ms``: they are event gaps, and per-token ITL is
    unknown for every request of that window."""
    if "event_gap_ms" in w or w.get("itl_ms") is None:
        return w
    return {**w, "event_gap_ms": w["itl_ms"], "itl_ms": None, "itl_unknown_requests": w.get("completed")}


def load_entry(entry: Entry) -> Entry:
    """Fill in status, reason and the validated document of one expected entry."""
    fail = failure_path(entry.path)
    if entry.path.exists():
        doc = read_json(entry.path)
        validate(entry.path, doc, CELL_SCHEMA, entry)
        doc["windows"] = [current_window(w) for w in doc["windows"]]
        entry.status, entry.doc = "ok", doc
        entry.weights, entry.device = doc["weights"], doc["device"]
    elif fail.exists():
        doc = read_json(fail)
        validate(fail, doc, FAILURE_SCHEMA, entry)
        entry.status, entry.failure = "failed", doc
        entry.reason = f"{doc['category']}: {doc['reason']}"
    else:
        entry.status = "missing"
        entry.reason = f"no result file ({entry.path.name} or {fail.name}): the cell has not run"
    return entry


def load_results(cfg: Config, results_dir: str | Path, allow_stale: bool = False,
                 source: str = "the config") -> list[Entry]:
    """Every expected entry, validated; raises ResultFileError on the first bad file and
    StaleResultsError for results measured under other settings (unless ``allow_stale``:
    then they are kept and marked)."""
    from servingbench.staleness import check_stale

    entries = [load_entry(e) for e in expected_entries(cfg, results_dir)]
    check_stale(cfg, entries, source, allow_stale)
    return entries


def read_requests(entry: Entry) -> list[dict[str, Any]]:
    """The per-request records of a finished entry ([] when it has none)."""
    if entry.doc is None or not entry.doc.get("requests_file"):
        return []
    path = entry.path.parent / entry.doc["requests_file"]
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ResultFileError(f"{path}:{lineno}: corrupt request record ({exc.msg})") from None
            if not isinstance(row, dict) or "e2e_ms" not in row or "window" not in row:
                raise ResultFileError(f"{path}:{lineno}: not a request record (needs window, e2e_ms)")
            rows.append(row)
    return rows


def _metric_rows(doc: dict[str, Any]) -> Iterator[tuple[Any, Any, Any, str, str, Any]]:
    """(concurrency, prompt_tokens_target, trial, metric, statistic, value) of one result document.
    A capacity search's windows differ by rate, not concurrency: its rows come from derived."""
    for w in doc["windows"] if doc["kind"] != "sweep_capacity" else []:
        conc, target, trial = w["concurrency"], w.get("prompt_tokens_target"), derived.trial_of(doc, w)
        for metric in WINDOW_STATS:
            stats = w.get(metric)
            if isinstance(stats, dict):
                for stat in STATS:
                    yield conc, target, trial, metric, stat, stats.get(stat)
        for metric in WINDOW_VALUES:
            if w.get(metric) is not None:  # e.g. server_ttft_ms_mean exists only where a server reports it
                yield conc, target, trial, metric, "value", w[metric]
    mem = doc["memory"]
    for metric in ("host_rss_peak_bytes", "host_rss_mean_bytes", "host_processes_max"):
        if mem.get(metric) is not None:
            yield None, None, None, metric, "value", mem[metric]
    for metric in GPU_VALUES:
        if (mem.get("gpu") or {}).get(metric) is not None:
            yield None, None, None, f"gpu_{metric}", "value", mem["gpu"][metric]
    server = doc["server"]
    if server.get("startup_s") is not None:  # None when the server was reused
        yield None, None, None, "server_startup_s", "value", server["startup_s"]
    yield None, None, None, "server_reused", "value", int(bool(server.get("reused")))


def tidy(entries: list[Entry], results_dir: str | Path, cfg: Config | None = None) -> pd.DataFrame:
    """The tidy table of a list of loaded entries (see module docstring), with the rows derived from
    per-request records (servingbench.derived: intervals, capacity; with ``cfg``, goodput per SLO set)."""
    results_dir = Path(results_dir)
    rows: list[dict[str, Any]] = []
    for e in entries:
        reason = f"stale: {e.stale}" if e.stale else e.reason
        base = dict(framework=e.arm, model=e.model, task=e.task, mode=e.mode, kind=e.kind,
                    status=e.status, reason=reason, weights=e.weights, device=e.device,
                    source=e.source(results_dir), trial=None, slo=None, turn=None)
        if e.doc is None:
            rows.append(dict(base, concurrency=None, prompt_tokens_target=None, turn=None, metric="",
                             statistic="", value=None, unit=""))
            continue
        both = [(c, t, tr, None, m, s, v) for c, t, tr, m, s, v in _metric_rows(e.doc)] + list(workload_rows(e.doc))
        for conc, target, trial, turn, metric, stat, value in both:
            rows.append(dict(base, concurrency=conc, prompt_tokens_target=target, trial=trial, turn=turn, metric=metric,
                             statistic=stat, value=None if value is None else float(value),
                             unit="count" if stat == "n" else unit_of(metric)))
        records = read_requests(e)
        extra = list(derived.capacity_rows(e.doc, records))
        extra += derived.interval_rows(e.kind, e.arm, e.model, e.task, e.mode, e.doc, records)
        if cfg is not None:
            extra += derived.goodput_rows(cfg, e.kind, e.task, e.doc, records)
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
    csv_path, pq_path = results_dir / "summary.csv", results_dir / "summary.parquet"
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
