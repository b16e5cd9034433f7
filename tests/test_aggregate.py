"""aggregate: every expected cell has rows (ok, failed, missing); bad files stop it with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.resultsgen import make_config, write_results
from servingbench.host.aggregate import (
    COLUMNS, ResultFileError, aggregate, expected_entries, read_summary, unit_of, write_summary,
)
from servingbench.runtime.results import cell_path, failure_path, sweep_path


@pytest.fixture()
def cfg():
    return make_config(device="cpu", arms=("transformers-naive", "tgi", "vllm"), cell_concurrency=(1, 4))


def _expected_keys(cfg, results: Path) -> set[tuple[str, str, str, str, str]]:
    return {(e.arm, e.model, e.task, e.mode, e.kind) for e in expected_entries(cfg, results)}


def _keys(df: pd.DataFrame) -> set[tuple[str, str, str, str, str]]:
    return set(df[["framework", "model", "task", "mode", "kind"]].itertuples(index=False, name=None))


def test_complete_folder(cfg, tmp_path: Path) -> None:
    results = write_results(cfg, tmp_path / "results")
    df = aggregate(cfg, results)
    assert list(df.columns) == COLUMNS
    assert _keys(df) == _expected_keys(cfg, results)
    assert (df["status"] == "ok").all()
    # 3 arms x 1 model x 2 tasks x 2 modes cells + 2 sweeps per arm
    assert len(_keys(df)) == 3 * 2 * 2 + 3 * 2
    # A figure is traceable to its file and equals it.
    row = df[(df.framework == "vllm") & (df.task == "chat") & (df["mode"] == "stream") & (df.kind == "cell")
             & (df.concurrency == 4) & (df.metric == "ttft_ms") & (df.statistic == "p50")]
    assert len(row) == 1 and row.iloc[0]["unit"] == "ms"
    doc = json.loads((results / row.iloc[0]["source"]).read_text())
    window = next(w for w in doc["windows"] if w["concurrency"] == 4)
    assert row.iloc[0]["value"] == pytest.approx(window["ttft_ms"]["p50"])
    # Sync cells have no TTFT rows; units are never blank for a figure.
    sync = df[(df["mode"] == "sync") & (df.kind == "cell")]
    assert not (sync.metric == "ttft_ms").any()
    assert (df[df.metric != ""]["unit"] != "").all()
    ctx = df[(df.kind == "sweep_context") & (df.metric == "e2e_ms")]
    assert set(ctx["prompt_tokens_target"].dropna()) == {128, 512}


def test_units() -> None:
    assert unit_of("throughput_req_s") == "req/s"
    assert unit_of("throughput_output_tok_s") == "tokens/s"
    assert unit_of("host_rss_peak_bytes") == "bytes"
    assert unit_of("server_startup_s") == "s"
    assert unit_of("gpu_energy_j") == "J"


def test_failed_and_missing_cells_have_rows(cfg, tmp_path: Path) -> None:
    results = write_results(cfg, tmp_path / "results", fail=["vllm/smollm2-135m/qa/stream"],
                            missing=["tgi/smollm2-135m/chat/sync", "transformers-naive/smollm2-135m/sweep_context"])
    df = aggregate(cfg, results)
    assert _keys(df) == _expected_keys(cfg, results)
    failed = df[df.status == "failed"]
    assert len(failed) == 1
    f = failed.iloc[0]
    assert (f.framework, f.task, f["mode"]) == ("vllm", "qa", "stream")
    assert f.reason.startswith("out_of_memory: ") and f.source.endswith("stream.failed.json")
    assert pd.isna(f.value) and f.metric == ""
    missing = df[df.status == "missing"]
    assert set(zip(missing.framework, missing.kind)) == {("tgi", "cell"), ("transformers-naive", "sweep_context")}
    assert missing["reason"].str.contains("has not run").all()

    csv, parquet = write_summary(df, results)
    back = read_summary(csv)
    assert _keys(back) == _expected_keys(cfg, results)
    assert set(back.status) == {"ok", "failed", "missing"}
    assert len(read_summary(parquet)) == len(df)


def test_result_wins_over_stale_failure(cfg, tmp_path: Path) -> None:
    results = write_results(cfg, tmp_path / "results")
    path = cell_path(results, "vllm", "smollm2-135m", "chat", "sync")
    failure_path(path).write_text(json.dumps({"schema": "servingbench/failure-v1", "kind": "cell",
                                              "cell": {"arm": "vllm", "model": "smollm2-135m"},
                                              "category": "error", "reason": "old"}))
    df = aggregate(cfg, results)
    assert (df[(df.framework == "vllm") & (df.task == "chat") & (df["mode"] == "sync")].status == "ok").all()


def _assert_nothing_written(results: Path) -> None:
    assert not (results / "summary.csv").exists() and not (results / "summary.parquet").exists()


def test_corrupt_file_is_a_clear_error(cfg, tmp_path: Path) -> None:
    results = write_results(cfg, tmp_path / "results")
    bad = cell_path(results, "tgi", "smollm2-135m", "qa", "sync")
    bad.write_text(bad.read_text()[:200])  # truncated, as by a crash mid-write without the atomic rename
    with pytest.raises(ResultFileError, match="corrupt") as err:
        write_summary(aggregate(cfg, results), results)
    assert str(bad) in str(err.value)
    _assert_nothing_written(results)


def test_corrupt_failure_record(cfg, tmp_path: Path) -> None:
    results = write_results(cfg, tmp_path / "results", fail=["vllm/smollm2-135m/qa/stream"])
    bad = failure_path(cell_path(results, "vllm", "smollm2-135m", "qa", "stream"))
    bad.write_text("{not json")
    with pytest.raises(ResultFileError, match="not valid JSON") as err:
        aggregate(cfg, results)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(schema="someone-else/v3"), "foreign file, schema is 'someone-else/v3'"),
    (lambda d: d.update(kind="sweep_context"), "foreign file, kind is 'sweep_context'"),
    (lambda d: d["cell"].update(task="code"), "foreign file, it describes task='code'"),
    (lambda d: d["windows"][0].pop("throughput_req_s"), "does not match servingbench/cell-v1 at windows/0"),
    (lambda d: d.update(weights="random"), "does not match servingbench/cell-v1 at weights"),
])
def test_foreign_or_invalid_file(cfg, tmp_path: Path, change, match: str) -> None:
    results = write_results(cfg, tmp_path / "results")
    path = cell_path(results, "vllm", "smollm2-135m", "chat", "stream")
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultFileError, match=match) as err:
        aggregate(cfg, results)
    assert str(path) in str(err.value)


def test_failure_record_in_place_of_a_result_is_foreign(cfg, tmp_path: Path) -> None:
    results = write_results(cfg, tmp_path / "results")
    path = sweep_path(results, "tgi", "smollm2-135m", "concurrency")
    path.write_text(json.dumps({"schema": "servingbench/failure-v1", "kind": "sweep_concurrency",
                                "cell": {"arm": "tgi", "model": "smollm2-135m"}, "category": "error",
                                "reason": "x"}))
    with pytest.raises(ResultFileError, match="foreign file") as err:
        aggregate(cfg, results)
    assert str(path) in str(err.value)


def test_existing_summary_is_kept_on_error(cfg, tmp_path: Path) -> None:
    results = write_results(cfg, tmp_path / "results")
    write_summary(aggregate(cfg, results), results)
    before = (results / "summary.csv").read_bytes()
    cell_path(results, "vllm", "smollm2-135m", "chat", "sync").write_text("[]")
    with pytest.raises(ResultFileError, match="foreign file"):
        write_summary(aggregate(cfg, results), results)
    assert (results / "summary.csv").read_bytes() == before


def test_no_results_at_all(cfg, tmp_path: Path) -> None:
    df = aggregate(cfg, tmp_path / "empty")
    assert (df.status == "missing").all()
    assert _keys(df) == _expected_keys(cfg, tmp_path / "empty")


def test_schema_accepts_what_the_runtime_writes(cfg, tmp_path: Path) -> None:
    """The contract: a result assembled from the runtime's own pieces (metrics.window_summary,
    monitor.Monitor.summary, provenance.collect, client.RequestRecord), as cell.run_cell does."""
    import os
    import time

    from servingbench.runtime import provenance
    from servingbench.host.aggregate import load_results, read_requests
    from servingbench.runtime.records import RequestRecord, to_json
    from servingbench.host.config import cell_spec, config_hash
    from servingbench.runtime.frameworks import get_adapter
    from servingbench.runtime.metrics import window_summary
    from servingbench.runtime.monitor import Monitor
    from servingbench.runtime.results import CELL_SCHEMA, atomic_write_json, atomic_write_jsonl, requests_path

    spec = cell_spec(cfg, "vllm", "smollm2-135m", "chat", "stream")
    records = [RequestRecord(prompt_id=f"p{i}", window=0, concurrency=1, dispatch_ns=i, ttft_ms=20.0 + i,
                             e2e_ms=200.0 + i, event_offsets_ms=[20.0 + i, 110.0, 200.0 + i],
                             output_tokens_requested=3, output_tokens=3, output_tokens_source="server",
                             prompt_tokens=40, http_status=200, finish_reason="length") for i in range(4)]
    records.append(RequestRecord(prompt_id="p9", error="HTTP 500: boom", http_status=500, output_tokens_requested=3))
    monitor = Monitor(os.getpid, None, 0.02).start()
    time.sleep(0.1)
    monitor.stop()
    path = cell_path(tmp_path, "vllm", "smollm2-135m", "chat", "stream")
    doc = {
        "schema": CELL_SCHEMA, "kind": spec.kind, "status": "ok",
        "cell": {"arm": "vllm", "framework": "vllm", "model": "smollm2-135m", "task": "chat", "mode": "stream"},
        "weights": "real", "device": "cpu", "spec": json.loads(spec.to_json()),
        "windows": [window_summary(records, 1.5, 1, stream=True)],
        "memory": monitor.summary(None, None, 12),
        "server": {"reused": False, "startup_s": 20.5, "started_at": provenance.now_iso(), "pid": 1,
                   "command": ["python", "-m", "vllm"], "log": "x.log",
                   "server_settings": {"gpu_memory_utilization": 0.85, "prefix_caching": False}},
        "provenance": {**provenance.collect(get_adapter("vllm"), None, config_hash(cfg), "", "seed"),
                       "started_at": provenance.now_iso(), "finished_at": provenance.now_iso()},
        "requests_file": requests_path(path).name,
    }
    atomic_write_jsonl(requests_path(path), [r.to_dict() for r in records])
    atomic_write_json(path, to_json(doc))  # records (the windows, memory) as the runtime writes them
    entry = next(e for e in load_results(cfg, tmp_path) if e.status == "ok")
    assert entry.label == "vllm/smollm2-135m/chat/stream"
    assert len(read_requests(entry)) == 5


@pytest.mark.parametrize("suffix", [".xz", ".gz"])
def test_compressed_request_records_read_as_the_plain_file(cfg, tmp_path: Path, suffix: str) -> None:
    """A published example stores ``*.requests.jsonl`` compressed (xz or gzip): the same records,
    and the same summary table; a truncated file is an error that names it, not a short list."""
    import gzip
    import lzma
    import shutil

    from servingbench.host.aggregate import load_results, read_requests
    from servingbench.runtime.results import requests_path

    compress = {".xz": lzma.compress, ".gz": gzip.compress}[suffix]
    results = write_results(cfg, tmp_path / "results")
    before = aggregate(cfg, results)
    entry = next(e for e in load_results(cfg, results) if e.status == "ok" and e.kind == "cell")
    plain = read_requests(entry)
    assert plain
    zipped = results.parent / "zipped"
    shutil.copytree(results, zipped)
    for f in zipped.rglob("*.requests.jsonl"):
        f.with_name(f.name + suffix).write_bytes(compress(f.read_bytes()))
        f.unlink()
    pd.testing.assert_frame_equal(aggregate(cfg, zipped).drop(columns="source"), before.drop(columns="source"))
    packed_entry = next(e for e in load_results(cfg, zipped) if e.label == entry.label and e.kind == "cell")
    assert read_requests(packed_entry) == plain
    packed = requests_path(packed_entry.path).with_name(requests_path(packed_entry.path).name + suffix)
    packed.write_bytes(packed.read_bytes()[:60])
    with pytest.raises(ResultFileError, match="unreadable request records"):
        read_requests(packed_entry)
