"""Reading result files: one loader that gives typed records (servingbench.runtime.records).

A file is parsed, recognised by its ``schema`` id, brought to today's shape by the migrations
below (each one explicit, named and tested), checked against the JSON Schema generated from the
types, and rebuilt as a ``CellResult`` or ``FailureRecord``. A file of a schema version this kit
does not read, or one that is corrupt or foreign, is a ResultFileError naming the file (and the
version). Host side (jsonschema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from servingbench.host.package_data import package_path
from servingbench.runtime.records import (
    CELL_SCHEMA, FAILURE_SCHEMA, GPU_BANDWIDTH_SCHEMA, CellResult, FailureRecord, GpuBandwidth, from_json,
)

SCHEMA_DIR = package_path("schemas")  # schemas/, shipped in the package
TYPES: dict[str, type] = {CELL_SCHEMA: CellResult, FAILURE_SCHEMA: FailureRecord, GPU_BANDWIDTH_SCHEMA: GpuBandwidth}


class ResultFileError(ValueError):
    """A result file that is not what its path says (corrupt, foreign or invalid); names the file."""


@dataclass(frozen=True)
class Migration:
    """One change of shape within a schema version: ``applies`` spots a file written before it,
    ``apply`` rewrites it (a new dict) to the shape after it."""

    schema: str
    name: str
    applies: Callable[[dict[str, Any]], bool]
    apply: Callable[[dict[str, Any]], dict[str, Any]]


def _before_event_gaps(w: dict[str, Any]) -> bool:
    return "event_gap_ms" not in w and w.get("itl_ms") is not None


def current_window(w: dict[str, Any]) -> dict[str, Any]:
    """A window with today's names. Results written before per-token ITL (no ``event_gap_ms``)
    called the gaps between stream events ``itl_ms``: they are event gaps, and per-token ITL is
    unknown for every request of that window."""
    if not _before_event_gaps(w):
        return w
    return {**w, "event_gap_ms": w["itl_ms"], "itl_ms": None, "itl_unknown_requests": w.get("completed")}


MIGRATIONS = (
    Migration(CELL_SCHEMA, "itl_ms held event gaps (written before per-token ITL)",
              lambda d: any(_before_event_gaps(w) for w in d.get("windows") or [] if isinstance(w, dict)),
              lambda d: {**d, "windows": [current_window(w) if isinstance(w, dict) else w for w in d["windows"]]}),
)


def migrate(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``data`` in today's shape of its schema, and the names of the migrations applied."""
    applied = []
    for m in MIGRATIONS:
        if data.get("schema") == m.schema and m.applies(data):
            data = m.apply(data)
            applied.append(m.name)
    return data, applied


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object; a corrupt file is a ResultFileError naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: corrupt result file, not valid JSON "
                              f"(line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise ResultFileError(f"{path}: corrupt result file, not UTF-8 text ({exc.reason})") from None
    if not isinstance(data, dict):
        raise ResultFileError(f"{path}: foreign file, a JSON {type(data).__name__} instead of a result object")
    return data


@lru_cache(maxsize=None)
def validator(schema_id: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMA_DIR / f"{schema_id.split('/', 1)[1]}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def check_schema_id(path: Path, data: dict[str, Any], expected: str | None) -> str:
    """The file's schema id, if this kit reads it (and it is ``expected``, when given)."""
    found = data.get("schema")
    family = (expected or "").rsplit("-v", 1)[0]
    if isinstance(found, str) and found not in TYPES and family and found.startswith(family + "-v"):
        raise ResultFileError(f"{path}: written with schema version {found!r}, which this servingbench "
                              f"does not read (it reads {expected!r}); rerun the cell, or read it with the "
                              "servingbench version that wrote it")
    if expected is not None and found != expected:
        raise ResultFileError(f"{path}: foreign file, schema is {found!r} but {expected!r} belongs here")
    if found not in TYPES:
        raise ResultFileError(f"{path}: foreign file, schema is {found!r} (this servingbench reads "
                              f"{', '.join(TYPES)})")
    return found


def load_result(path: str | Path, expected: str | None = None) -> Any:
    """The typed record in the result or failure file at ``path`` (migrated and validated)."""
    path = Path(path)
    data = read_json(path)
    schema_id = check_schema_id(path, data, expected)
    data, _ = migrate(data)
    import jsonschema

    err = jsonschema.exceptions.best_match(validator(schema_id).iter_errors(data))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ResultFileError(f"{path}: does not match {schema_id} at {where}: {err.message}")
    return from_json(TYPES[schema_id], data)
