"""compare (two runs, cell by cell) and publish (folder or .tar.gz with a MANIFEST)."""

from __future__ import annotations

import hashlib
import re
import io
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from servingbench.host.aggregate import aggregate, write_summary
from servingbench.host.compare import compare, compare_main
from servingbench.host.publish import publish, verify
from servingbench.host.report import render_report
from tests.resultsgen import make_config, write_results


@pytest.fixture()
def cfg():
    return make_config(device="cpu", arms=("transformers-naive", "tgi", "vllm"), cell_concurrency=(1, 4))


@pytest.fixture()
def two_runs(cfg, tmp_path: Path) -> tuple[Path, Path]:
    a = write_results(cfg, tmp_path / "a", fail=["vllm/smollm2-135m/qa/sync"])
    b = write_results(cfg, tmp_path / "b", speed={"vllm": 0.5}, missing=["tgi/smollm2-135m/sweep_context"])
    for run in (a, b):
        write_summary(aggregate(cfg, run), run)
    return a, b


def _one(df: pd.DataFrame, **where) -> pd.Series:
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, where
    return sel.iloc[0]


def test_compare_ratios(two_runs) -> None:
    a, b = two_runs
    df = compare(a, b)
    row = _one(df, framework="vllm", task="chat", mode="stream", kind="cell", concurrency=1, metric="tpot_ms")
    assert row.ratio_b_over_a == pytest.approx(row.b / row.a)
    assert 0.4 < row.ratio_b_over_a < 0.6  # B's vLLM decodes twice as fast (resultsgen speed 0.5)
    assert row.better == "lower" and row.unit == "ms"
    tput = _one(df, framework="vllm", task="chat", mode="stream", kind="cell", concurrency=4,
                metric="throughput_req_s")
    assert tput.ratio_b_over_a > 1.5 and tput.better == "higher"
    mem = df[(df.metric == "host_rss_peak_bytes") & (df.framework == "tgi") & (df.kind != "sweep_context")]
    assert mem["concurrency"].isna().all() and mem["ratio_b_over_a"].notna().all()
    # Unchanged arms stay near 1 (seeded noise only).
    naive = df[(df.framework == "transformers-naive") & (df.metric == "tpot_ms")]["ratio_b_over_a"]
    assert ((naive > 0.8) & (naive < 1.25)).all()


def test_compare_keeps_failed_and_missing_cells(two_runs) -> None:
    a, b = two_runs
    df = compare(a, b)
    failed = df[(df.framework == "vllm") & (df.task == "qa") & (df["mode"] == "sync") & (df.kind == "cell")]
    assert set(failed.status_a) == {"failed"} and set(failed.status_b) == {"ok"}
    assert failed["a"].isna().all() and failed["ratio_b_over_a"].isna().all()
    missing = df[(df.framework == "tgi") & (df.kind == "sweep_context")]
    assert len(missing) and set(missing.status_b) == {"missing"}
    text = compare_main(a, b)
    assert "## Cells not comparable" in text
    assert "| vllm/smollm2-135m/qa/sync | failed | ok |" in text
    assert "| tgi/smollm2-135m/sweep_context | ok | missing |" in text
    assert "| TPOT p50 (ms) | lower |" in text
    assert "| vllm/smollm2-135m/chat/stream | 1 |" in text


def test_compare_same_run_is_all_ones(two_runs) -> None:
    a, _ = two_runs
    df = compare(a, a)
    ratios = df["ratio_b_over_a"].dropna()
    assert len(ratios) and (ratios == 1.0).all()


def test_compare_reads_csv_only_folders(two_runs, tmp_path: Path) -> None:
    a, b = two_runs
    from_parquet = compare(a, b)
    (a / "summary.parquet").unlink()
    (b / "summary.parquet").unlink()
    from_csv = compare(a, b)
    assert len(from_csv) == len(from_parquet)
    assert list(from_csv["metric"]) == list(from_parquet["metric"])
    pd.testing.assert_series_equal(from_csv["ratio_b_over_a"], from_parquet["ratio_b_over_a"], rtol=1e-12)


def test_compare_needs_a_summary(tmp_path: Path, two_runs) -> None:
    with pytest.raises(FileNotFoundError, match="expected a run folder with a summary"):
        compare(two_runs[0], tmp_path / "nothing")


@pytest.fixture()
def rendered(cfg, two_runs, tmp_path: Path) -> tuple[Path, Path, Path]:
    a, _ = two_runs
    html = render_report(cfg, a, tmp_path / "report" / "index.html")
    config = tmp_path / "cpu.yaml"
    config.write_text("device: cpu\n")
    return a, html, config


def test_publish_folder(rendered, tmp_path: Path) -> None:
    results, html, config = rendered
    out = publish(results, html, config, tmp_path / "pub")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["MANIFEST", "cpu.yaml", "index.html", "summary.csv", "summary.parquet"]
    assert verify(out) == []
    manifest = dict(reversed(line.split("  ")) for line in (out / "MANIFEST").read_text().splitlines())
    assert manifest["index.html"] == hashlib.sha256(html.read_bytes()).hexdigest()
    assert (out / "index.html").stat().st_mode & 0o777 == 0o644
    (out / "summary.csv").write_text("tampered")
    assert verify(out) == ["summary.csv"]
    with pytest.raises(FileExistsError):
        publish(results, html, config, out)
    publish(results, html, config, out, overwrite=True)
    assert verify(out) == []


def test_publish_tarball_is_reproducible(rendered, tmp_path: Path) -> None:
    results, html, config = rendered
    first = publish(results, html, config, tmp_path / "one" / "run.tar.gz").read_bytes()
    second = publish(results, html, config, tmp_path / "two" / "run.tar.gz").read_bytes()
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
        assert sorted(names) == sorted(f"run/{n}" for n in
                                       ("index.html", "summary.csv", "summary.parquet", "cpu.yaml", "MANIFEST"))
        data = tar.extractfile("run/summary.csv").read()
    assert data == (results / "summary.csv").read_bytes()


def test_publish_needs_the_summary(cfg, tmp_path: Path) -> None:
    results = write_results(cfg, tmp_path / "results")
    html = render_report(cfg, results, tmp_path / "index.html")
    config = tmp_path / "c.yaml"
    config.write_text("x: 1\n")
    with pytest.raises(FileNotFoundError, match="summary.csv: not found"):
        publish(results, html, config, tmp_path / "pub")
    assert not (tmp_path / "pub").exists()


def _runs(tmp_path: Path, cfg, **b_options) -> tuple[Path, Path]:
    a = write_results(cfg, tmp_path / "a", seed=7)
    b = write_results(cfg, tmp_path / "b", **b_options)
    for run in (a, b):
        write_summary(aggregate(cfg, run), run)
    return a, b


@pytest.fixture()
def wide_cfg():
    return make_config(device="cuda", arms=("tgi", "vllm"), models=["gpt2"], tasks=("chat", "qa"), modes=("stream",),
                       requests=30, sweeps=False, capacity=["chat"])


def test_compare_marks_a_clear_difference_significant(wide_cfg, tmp_path: Path) -> None:
    a, b = _runs(tmp_path, wide_cfg, seed=8, speed={"vllm": 0.5})  # B's vLLM twice as fast
    df = compare(a, b)
    vllm = df[(df.framework == "vllm") & (df.kind == "cell") & df.metric.isin(["ttft_ms", "tpot_ms"])]
    assert len(vllm) == 4 and (vllm["significant"] == True).all()  # noqa: E712
    assert ((vllm["ratio_b_over_a"] > 0.4) & (vllm["ratio_b_over_a"] < 0.6)).all()
    cap = df[(df.framework == "vllm") & (df.metric == "capacity_req_s_per_gpu")]
    assert set(cap["slo"]) == {"interactive", "server"} and (cap["ratio_b_over_a"] > 1.3).all()
    text = compare_main(a, b)
    assert re.search(r"\| vllm/gpt2/chat/stream \| 1 \| 0\.\d+× \(significant\) \|", text)
    assert "capacity-chat at SLO set interactive" in text


def test_compare_says_no_significant_difference_for_the_same_distribution(wide_cfg, tmp_path: Path) -> None:
    a, b = _runs(tmp_path, wide_cfg, seed=8)  # same servers, other random draws
    df = compare(a, b)
    judged = df[df["significant"].notna()]
    assert len(judged) >= 10
    assert (judged["significant"] == False).mean() >= 0.9  # noqa: E712: 95% intervals of one distribution
    ratios = judged["ratio_b_over_a"]
    assert ((ratios > 0.8) & (ratios < 1.25)).all()
    text = compare_main(a, b)
    assert "| vllm/gpt2/chat/stream | 1 | no significant difference |" in text
    # Memory has no interval: its ratio stays, marked as such.
    assert "(no interval)" in text
