"""Where result files live, what they are called, and how they are written (atomically).

Layout under a results folder (default ``results/``)::

    workloads/{model}/{task}.jsonl            prompts (and workloads/{model}/context.jsonl)
    cells/{arm}/{model}/{task}/{mode}.json    a finished cell (schema CELL_SCHEMA)
    cells/{arm}/{model}/{task}/{mode}.requests.jsonl   its per-request records
    cells/{arm}/{model}/{task}/{mode}.failed.json      a failed cell's record (no .json then)
    sweeps/{arm}/{model}/{concurrency,context}.json    sweeps (same schema, kind says which)
    sweeps/{arm}/{model}/capacity-{task}.json          a capacity search (same schema, kind sweep_capacity)
    logs/...                                  server and job logs
    summary.csv, summary.parquet              the tidy table (aggregate)

Runtime module: standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

CELL_SCHEMA = "servingbench/cell-v1"
FAILURE_SCHEMA = "servingbench/failure-v1"
KINDS = ("cell", "sweep_concurrency", "sweep_context", "sweep_capacity")


def cell_path(results: str | Path, arm: str, model: str, task: str, mode: str) -> Path:
    return Path(results) / "cells" / arm / model / task / f"{mode}.json"


def sweep_path(results: str | Path, arm: str, model: str, sweep: str) -> Path:
    return Path(results) / "sweeps" / arm / model / f"{sweep}.json"


def capacity_path(results: str | Path, arm: str, model: str, task: str) -> Path:
    return Path(results) / "sweeps" / arm / model / f"capacity-{task}.json"


def requests_path(result_file: str | Path) -> Path:
    p = Path(result_file)
    return p.with_name(p.stem + ".requests.jsonl")


def failure_path(result_file: str | Path) -> Path:
    p = Path(result_file)
    return p.with_name(p.stem + ".failed.json")


def server_log_path(result_file: str | Path, results: str | Path = "results") -> Path:
    """results/cells/a/m/t/mode.json -> results/logs/cells/a/m/t/mode.server.log"""
    p = Path(result_file)
    try:
        rel = p.relative_to(Path(results))
    except ValueError:
        return p.with_name(p.stem + ".server.log")
    return Path(results) / "logs" / rel.parent / f"{p.stem}.server.log"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A reader (or a rerun after a crash) sees either no file or the whole file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are meant to be read and published
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
