"""The result contract: schemas/ (and the package's copy) and the docs' field tables are
generated from servingbench.runtime.records (a drift fails here), every example result file loads
as typed records and validates, an older file's shape is migrated explicitly, and a file of another
schema version is refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from servingbench.host import schema_gen
from servingbench.cli import main
from servingbench.runtime.metrics import window_summary
from servingbench.runtime.records import CellResult, RequestRecord, WindowSummary, to_json
from servingbench.host.result_files import ResultFileError, load_result, migrate, validator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for sub in ("cells", "sweeps") for p in ROOT.glob(f"examples/*/results/{sub}/**/*.json"))


def test_committed_schemas_and_doc_tables_are_the_generated_ones():
    assert schema_gen.drifted() == [], "run `servingbench schemas --write` and commit the result"


def test_a_drifted_schema_or_doc_is_found_and_rewritten(tmp_path, capsys):
    package, schemas, doc = tmp_path / "pkg" / "schemas", tmp_path / "schemas", tmp_path / "results-format.md"
    shutil.copytree(ROOT / "schemas", schemas)
    shutil.copytree(ROOT / "servingbench" / "schemas", package)
    shutil.copy(schema_gen.DOC, doc)
    dirs = (package, schemas)
    assert schema_gen.drifted(dirs, doc) == []
    cell = schemas / "cell-v1.schema.json"
    cell.write_text(cell.read_text().replace('"minItems": 1', '"minItems": 2'))
    failure = package / "failure-v1.schema.json"
    failure.write_text(failure.read_text().replace('"reason"\n  ]', '"reason",\n    "detail"\n  ]', 1))
    doc.write_text(doc.read_text().replace("| `ttft_ms` | ms |", "| `ttft_ms` | s |"))
    assert set(schema_gen.drifted(dirs, doc)) == {cell, failure, doc}
    assert set(schema_gen.write(dirs, doc)) == {cell, failure, doc}
    assert schema_gen.drifted(dirs, doc) == []
    assert main(["schemas"]) == 0  # the repository's own files: in step


def test_the_package_holds_real_schema_files_and_a_link_is_replaced(tmp_path):
    """The package's schemas are files (a link to schemas/ breaks where links do not survive:
    a Windows checkout, some archives); `--write` turns an old checkout's link into files."""
    assert not (ROOT / "servingbench" / "schemas").is_symlink()
    schemas, doc = tmp_path / "schemas", tmp_path / "results-format.md"
    shutil.copytree(ROOT / "schemas", schemas)
    shutil.copy(schema_gen.DOC, doc)
    (tmp_path / "pkg").mkdir()
    link = tmp_path / "pkg" / "schemas"
    link.symlink_to(schemas)
    dirs = (link, schemas)
    assert set(schema_gen.drifted(dirs, doc)) == {link / name for name in schema_gen.schema_texts()}
    schema_gen.write(dirs, doc)
    assert not link.is_symlink() and schema_gen.drifted(dirs, doc) == []


def test_every_field_is_in_the_schema_with_its_unit():
    schema = json.loads((ROOT / "schemas" / "cell-v1.schema.json").read_text())
    ttft = schema["$defs"]["WindowSummary"]["properties"]["ttft_ms"]
    assert ttft["description"].endswith("[ms]") and ttft["oneOf"][1] == {"$ref": "#/$defs/Stats"}
    energy = schema["$defs"]["GpuSummary"]["properties"]["energy_per_output_token_j"]
    assert energy["description"].endswith("[J/token]")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_results_load_typed_and_lose_nothing(path):
    result = load_result(path)
    assert isinstance(result, CellResult) and all(isinstance(w, WindowSummary) for w in result.windows)
    migrated, _ = migrate(json.loads(path.read_text()))
    written = to_json(result)
    _assert_contains(written, migrated, str(path))
    assert not list(validator(result.schema).iter_errors(written))


def _assert_contains(big, small, where):
    """Every key and value of ``small`` is in ``big`` (big may add keys that small left out)."""
    if isinstance(small, dict):
        for k, v in small.items():
            assert k in big, f"{where}/{k}"
            _assert_contains(big[k], v, f"{where}/{k}")
    elif isinstance(small, list):
        assert len(big) == len(small), where
        for i, (a, b) in enumerate(zip(big, small)):
            _assert_contains(a, b, f"{where}/{i}")
    else:
        assert big == small, where


def test_a_result_from_before_per_token_itl_is_migrated():
    """Those files' itl_ms held the gaps between stream events: they load as event gaps, with
    per-token ITL unknown for every completed request."""
    old = next(p for p in EXAMPLES if "stream" in p.name and "event_gap_ms" not in p.read_text())
    raw = json.loads(old.read_text())
    _, applied = migrate(raw)
    assert applied == ["itl_ms held event gaps (written before per-token ITL)"]
    w, raw_w = load_result(old).windows[0], raw["windows"][0]
    assert w.itl_ms is None and w.itl_unknown_requests == raw_w["completed"]
    assert w.event_gap_ms.p50 == raw_w["itl_ms"]["p50"]


@pytest.mark.parametrize("version", ["servingbench/cell-v0", "servingbench/cell-v2"])
def test_a_result_of_another_schema_version_is_refused_by_name(tmp_path, version):
    data = json.loads(EXAMPLES[0].read_text())
    data["schema"] = version
    path = tmp_path / "stream.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultFileError) as err:
        load_result(path, "servingbench/cell-v1")
    assert str(path) in str(err.value) and repr(version) in str(err.value)
    assert "does not read" in str(err.value)


def test_a_window_written_by_the_runtime_matches_the_schema_and_reads_back():
    rec = RequestRecord(prompt_id="p", ttft_ms=10.0, e2e_ms=50.0, event_offsets_ms=[10.0, 30.0, 50.0],
                        event_tokens=[1, 1, 1], output_tokens=3, output_tokens_requested=3, prompt_tokens=7)
    summary = window_summary([rec], 1.0, 1, True)
    summary.update({"server_ttft_ms_mean": 9.0, "from_a_newer_kit": {"x": 1}})
    data = to_json(summary)
    assert data["from_a_newer_kit"] == {"x": 1} and "trial" not in data  # omitted where it does not apply
    assert data["itl_ms"]["p50"] == 20.0 and data["server_ttft_ms_mean"] == 9.0
    schema = json.loads((ROOT / "schemas" / "cell-v1.schema.json").read_text())
    from jsonschema import Draft202012Validator

    window_schema = {**schema, "$ref": "#/$defs/WindowSummary"}
    for key in ("required", "properties", "if", "then", "type"):
        window_schema.pop(key, None)
    assert not list(Draft202012Validator(window_schema).iter_errors(data))
    from servingbench.runtime.records import from_json

    assert to_json(from_json(WindowSummary, data)) == data


def test_the_examples_gpu_bandwidth_loads_typed():
    """results/gpu-bandwidth.json (servingbench gpu-bandwidth, measured on the H200) has its own
    generated schema and loads as its record type."""
    from servingbench.runtime.records import GpuBandwidth

    got = load_result(ROOT / "examples" / "h200-dummy" / "results" / "gpu-bandwidth.json")
    assert isinstance(got, GpuBandwidth) and got.device_name == "NVIDIA H200"
    assert got.copy_gb_s_min <= got.copy_gb_s <= got.copy_gb_s_max
