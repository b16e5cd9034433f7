"""``servingbench schemas``: the JSON Schemas and the field tables of docs/results-format.md,
generated from the types of servingbench.runtime.records. The schemas are written twice: into
the package (``servingbench/schemas/``, what a result file is validated against, installed
with the package) and into the repository's ``schemas/``, where readers and other tools find them.

``--write`` rewrites them; ``--check`` (and tests/test_schemas.py) fails when a committed file
differs from what the types say, so the schema, the doc and the code cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from servingbench.runtime import records
from servingbench.runtime.results import atomic_write_text
from servingbench.runtime.typed_json import fields_of, first_line, record_schema

ROOT = Path(__file__).resolve().parents[2]
# The package's copy first: the one the kit reads (servingbench.host.result_files).
SCHEMA_DIRS = (ROOT / "servingbench" / "schemas", ROOT / "schemas")
DOC = ROOT / "docs" / "results-format.md"
BEGIN = "<!-- BEGIN generated field tables: `servingbench schemas --write` rewrites this block -->"
END = "<!-- END generated field tables -->"
# (schema file, type, title) of every schema the kit writes.
SCHEMAS = (
    ("cell-v1.schema.json", records.CellResult, "servingbench cell or sweep result (docs/results-format.md)"),
    ("failure-v1.schema.json", records.FailureRecord, "servingbench failure record (docs/results-format.md)"),
    ("gpu-bandwidth-v1.schema.json", records.GpuBandwidth, "servingbench GPU copy bandwidth (docs/results-format.md)"),
)
# The types whose fields the doc tables list, in the doc's order, with where they live.
DOC_TABLES = (
    (records.WindowSummary, "`windows[]`"), (records.Stats, "`windows[].ttft_ms` and every other summary"),
    (records.GroupLatency, "`windows[].per_turn[]`, `windows[].prefix.seen` and `.first`"),
    (records.PrefixSummary, "`windows[].prefix`"), (records.ArrivalSummary, "`windows[].arrivals`"),
    (records.PrefixCacheCounters, "`windows[].server_prefix_cache`"),
    (records.SloVerdict, "`windows[].slo.{slo}` (capacity windows); summary.csv goodput rows of every window"),
    (records.MemorySummary, "`memory` (and a capacity window's `memory`)"), (records.GpuSummary, "`memory.gpu`"),
    (records.ServerInfo, "`server`"), (records.Provenance, "`provenance`"),
    (records.CapacitySearch, "`capacity`"), (records.CapacityResult, "`capacity.results.{slo}`"),
    (records.RequestRecord, "`{mode}.requests.jsonl`, one a line"),
    (records.DerivedFigures, "summary.csv metrics derived from the request records"),
    (records.GpuBandwidth, "`results/gpu-bandwidth.json` (GPU runs)"),
)


def schema_document(cls: type, schema_id: str, title: str) -> dict[str, Any]:
    """The JSON Schema of a top-level record type."""
    defs: dict[str, Any] = {}
    body = record_schema(cls, defs)
    defs.pop(cls.__name__, None)
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id, "title": title, **body}
    if defs:
        doc["$defs"] = dict(sorted(defs.items()))
    return doc


def schema_texts() -> dict[str, str]:
    """file name under schemas/ -> its text."""
    out = {}
    for name, cls, title in SCHEMAS:
        schema_id = "servingbench/" + name.removesuffix(".schema.json")
        out[name] = json.dumps(schema_document(cls, schema_id, title), indent=2) + "\n"
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def field_tables() -> str:
    """The markdown tables of every result field: name, unit, meaning."""
    parts = []
    for cls, where in DOC_TABLES:
        parts.append(f"**{cls.__name__}**: {where}. {first_line(cls.__doc__)}\n")
        parts.append("| field | unit | meaning |\n| --- | --- | --- |")
        for f in fields_of(cls):
            name = f"`{f.name}`" + (f" (summary `{f.metadata['metric']}`)" if f.metadata.get("metric") else "")
            parts.append(f"| {name} | {f.metadata['unit'] or '—'} | {_cell(f.metadata['doc'])} |")
        parts.append("")
    parts.append("**Interval statistics** (summary.csv `statistic`, beside a figure's own)\n")
    parts.append("| statistic | unit | meaning |\n| --- | --- | --- |")
    for name, (unit, doc) in records.INTERVAL_STATISTICS.items():
        parts.append(f"| `{name}` | {unit} | {_cell(doc)} |")
    return "\n".join(parts) + "\n"


def doc_text(current: str) -> str:
    """``current`` (the doc's text) with its generated block replaced."""
    if BEGIN not in current or END not in current:
        raise ValueError(f"{DOC}: no generated block ({BEGIN} ... {END})")
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{field_tables()}\n{END}{tail}"


def expected_files(schema_dirs: tuple[Path, ...] = SCHEMA_DIRS, doc: Path = DOC) -> dict[Path, str]:
    files = {d / name: text for d in schema_dirs for name, text in schema_texts().items()}
    files[doc] = doc_text(doc.read_text(encoding="utf-8"))
    return files


def drifted(schema_dirs: tuple[Path, ...] = SCHEMA_DIRS, doc: Path = DOC) -> list[Path]:
    """The generated files whose committed text differs from the types' (a link counts as
    differing: the package holds real files, so that every install and checkout has them)."""
    return [p for p, text in expected_files(schema_dirs, doc).items()
            if p.is_symlink() or p.parent.is_symlink() or not p.exists() or p.read_text(encoding="utf-8") != text]


def write(schema_dirs: tuple[Path, ...] = SCHEMA_DIRS, doc: Path = DOC) -> list[Path]:
    """Rewrite the generated files that differ; returns them."""
    changed = drifted(schema_dirs, doc)
    for path, text in expected_files(schema_dirs, doc).items():
        if path in changed:
            if path.parent.is_symlink():  # a checkout from before the package held its own copy
                path.parent.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
    return changed

