"""Where result files live, what they are called, and how they are written (atomically).

Layout under a results folder (default ``results/``)::

    workloads/{model}/{task}.jsonl            prompts (and workloads/{model}/context.jsonl)
    cells/{arm}/{model}/{task}/{mode}.json    a finished cell (schema CELL_SCHEMA)
    cells/{arm}/{model}/{task}/{mode}.requests.jsonl   its per-request records
    cells/{arm}/{model}/{task}/{mode}.failed.json      a failed cell's record (no .json then)
    sweeps/{arm}/{model}/{concurrency,context}.json    sweeps (same schema, kind says which)
    sweeps/{arm}/{model}/capacity-{task}.json          a capacity search (same schema, kind sweep_capacity)
    logs/...                                  server and job logs (logs/ + the result's path)
    servers/                                  pooled servers' state (servingbench.runtime.pool)
    summary.csv, summary.parquet              the tidy table (aggregate)

When a cell's files cannot be written at its end (a full disk, a folder made read-only),
its measured records go to a rescue folder instead (``keep_safe``) and the failure record
says where. Runtime module: standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from servingbench.runtime.errors import UserError

CELL_SCHEMA = "servingbench/cell-v1"
FAILURE_SCHEMA = "servingbench/failure-v1"
GPU_BANDWIDTH_SCHEMA = "servingbench/gpu-bandwidth-v1"
KINDS = ("cell", "sweep_concurrency", "sweep_context", "sweep_capacity")


RESULTS = "results"  # the results folder the CLI and the rules use unless told otherwise


def workload_path(results: str | Path, model: str, task: str) -> Path:
    """A model's prompt set for a task (``context``: the context-length sweep's)."""
    return Path(results) / "workloads" / model / f"{task}.jsonl"


def summary_path(results: str | Path, ext: str = "csv") -> Path:
    """The tidy table: ``summary.csv`` or ``summary.parquet``."""
    return Path(results) / f"summary.{ext}"


def pool_dir(results: str | Path) -> Path:
    """The state folder of the pooled servers of a results folder."""
    return Path(results) / "servers"


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


def log_path(result_file: str | Path, results: str | Path = RESULTS, suffix: str = ".log") -> Path:
    """results/cells/a/m/t/mode.json -> results/logs/cells/a/m/t/mode{suffix}: the job's log
    (``.log``); a file outside ``results`` keeps its log beside it."""
    p = Path(result_file)
    try:
        rel = p.relative_to(Path(results))
    except ValueError:
        return p.with_name(p.stem + suffix)
    return Path(results) / "logs" / rel.parent / f"{p.stem}{suffix}"


def server_log_path(result_file: str | Path, results: str | Path = RESULTS) -> Path:
    """results/cells/a/m/t/mode.json -> results/logs/cells/a/m/t/mode.server.log"""
    return log_path(result_file, results, ".server.log")


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file beside ``path`` to write (for a writer that wants a file name);
    on success it is fsynced and renamed over ``path``, on failure removed.

    A reader (or a rerun after a crash) sees either no file or the whole file; a failed write
    (a full disk, a read-only folder) leaves no temporary file behind and raises the OSError.
    The file is 0644: results are meant to be read and published (mkstemp makes 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_file``)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json_text(data))


def atomic_write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, jsonl_text(rows))


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` to fill; on success it replaces ``out`` in one
    rename (a reader never sees a half-written folder), on failure it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- when results/ cannot take them --------------------------------------------------------------
class NotWritable(UserError):
    """A cell's output cannot be written: found before anything starts."""


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def check_writable(out_path: str | Path, *others: str | Path, need_bytes: int = 0) -> None:
    """Fail fast, before a server starts, if a cell could not write its files: ``out_path``
    is a folder, or a folder it (or ``others``, e.g. its server log) goes in cannot be created
    or written, or has less than ``need_bytes`` free. Raises NotWritable."""
    out = Path(out_path)
    if out.is_dir():
        raise NotWritable(f"--out {out}: is a folder; give the result file to write there, "
                          f"e.g. {out / 'stream.json'}")
    for folder in dict.fromkeys(Path(p).parent for p in (out, *others)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".servingbench-probe.", dir=folder)
            try:
                os.write(fd, b"probe")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
            free = shutil.disk_usage(folder).free
        except OSError as exc:
            raise NotWritable(f"{folder}: cannot write there ({exc.strerror or exc}); nothing was started: "
                              "make it writable or choose another --results/--out") from None
        if free < need_bytes:
            raise NotWritable(f"{folder}: only {_mib(free)} free, and this cell's records need about "
                              f"{_mib(need_bytes)}; nothing was started: free some space or choose another --results")


def rescue_roots() -> list[Path]:
    """Where measured records go when their results folder cannot take them, in order:
    ``$XDG_STATE_HOME`` (default ``~/.local/state``), then the system's temporary folder."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return [Path(state) / "servingbench" / "rescued", Path(tempfile.gettempdir()) / "servingbench-rescued"]


def keep_safe(out_path: str | Path, files: dict[str, str]) -> Path | None:
    """Write ``files`` (name -> text) into a new folder under the first rescue root that takes
    them all; return that folder, or None if none could (each is tried in turn)."""
    out = Path(out_path)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(out.with_suffix("").parts[-5:]))
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for root in rescue_roots():
        folder = root / f"{stamp}-{os.getpid()}-{slug}"
        try:
            for name, text in files.items():
                atomic_write_text(folder / name, text)
            atomic_write_text(folder / "WHERE", f"{out}\n")  # where these files belong
            return folder
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
    return None
