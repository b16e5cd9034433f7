"""Goodput and the window verdict (servingbench.runtime.slo), and their rows in summary.csv."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from servingbench.host.aggregate import aggregate, read_summary, write_summary
from servingbench.runtime.slo import min_samples, percentile_with_misses, window_verdict
from servingbench.runtime.spec import SLOSpec
from tests.resultsgen import make_config, write_results


def _rec(ttft=None, e2e=None, out=10, error=None):
    return {"ttft_ms": ttft, "e2e_ms": e2e, "output_tokens": out, "error": error}


def test_a_request_meets_an_slo_only_when_every_limit_holds_and_failures_are_misses():
    slo = SLOSpec("s", 50, ttft_ms=100.0, tpot_ms=10.0)
    recs = [
        _rec(50, 50 + 9 * 8, 10),     # TTFT ok, TPOT 8: meets
        _rec(90, 90 + 9 * 10, 10),    # exactly on both limits: meets
        _rec(150, 150 + 9 * 5, 10),   # TTFT over
        _rec(20, 20 + 9 * 12, 10),    # TPOT over
        _rec(30, 30, 1),              # one token: no decode step, meets TPOT
        _rec(error="HTTP 500"),       # failed: a miss
    ]
    v = window_verdict(recs, 2.0, slo, stream=True)
    assert v.met == 3 and v.failed == 1 and v.requests == 6
    assert v.met_share == pytest.approx(0.5)
    assert v.goodput_req_s == pytest.approx(1.5)
    assert v.goodput_output_tok_s == pytest.approx((10 + 10 + 1) / 2.0)
    # p50 over all six, the failed one infinitely slow: TTFT values 20, 30, 50, 90, 150, inf.
    assert v.at_percentile_ms["ttft_ms"] == pytest.approx(70.0)
    assert v.window_met is True and v.bound_by == []
    tight = SLOSpec("t", 50, ttft_ms=60.0)
    v = window_verdict(recs, 2.0, tight, stream=True)
    assert v.window_met is False and v.bound_by == ["ttft_ms"]


def test_a_percentile_among_failed_requests_is_infinite_and_fails_the_window():
    assert percentile_with_misses([10.0, 20.0], 2, 50) == math.inf
    assert percentile_with_misses([10.0, 20.0, 30.0], 1, 50) == pytest.approx(25.0)
    assert percentile_with_misses([10.0, 20.0, 30.0], 0, 50) == pytest.approx(20.0)
    recs = [_rec(10, 100)] * 5 + [_rec(error="timeout")] * 5
    v = window_verdict(recs, 1.0, SLOSpec("s", 90, ttft_ms=1000.0), stream=True)
    assert v.at_percentile_ms["ttft_ms"] is None and v.window_met is False


def test_an_unsupported_percentile_gives_no_verdict():
    assert [min_samples(q) for q in (50, 90, 99, 100)] == [2, 10, 100, 1]
    recs = [_rec(10, 100)] * 9
    v = window_verdict(recs, 1.0, SLOSpec("s", 90, ttft_ms=1000.0), stream=True)
    assert v.supported is False and v.window_met is None
    assert v.met == 9  # goodput itself needs no percentile
    assert window_verdict(recs + [_rec(10, 100)], 1.0, SLOSpec("s", 90, ttft_ms=1000.0), stream=True).window_met


def test_sync_windows_are_judged_only_against_e2e_limits():
    recs = [_rec(None, 100)] * 4
    assert window_verdict(recs, 1.0, SLOSpec("s", 50, ttft_ms=500.0), stream=False) is None
    v = window_verdict(recs, 1.0, SLOSpec("s", 50, e2e_ms=150.0), stream=False)
    assert v.window_met is True and v.met == 4


def _expected(records: list[dict], window_s: float, ttft_limit: float, tpot_limit: float) -> tuple[int, float]:
    """Goodput written out independently of servingbench.runtime.slo: (met, met output tokens / s)."""
    met, tokens = 0, 0
    for r in records:
        if r["error"]:
            continue
        tpot = (r["e2e_ms"] - r["ttft_ms"]) / (r["output_tokens"] - 1)
        if r["ttft_ms"] <= ttft_limit and tpot <= tpot_limit:
            met += 1
            tokens += r["output_tokens"]
    return met, tokens / window_s


def test_summary_has_goodput_per_window_and_slo_set_and_follows_the_config(tmp_path: Path):
    cfg = make_config(device="cpu", arms=("transformers-naive", "vllm"), tasks=("chat", "qa"), requests=12)
    results = write_results(cfg, tmp_path / "results", failed_requests=["vllm/smollm2-135m/chat/stream"])
    df = aggregate(cfg, results)
    rows = df[(df.framework == "vllm") & (df.task == "chat") & (df["mode"] == "stream") & (df.kind == "cell")]
    good = rows[rows.metric == "goodput_req_s"]
    assert set(good["slo"]) == {"interactive", "server"} and (good["unit"] == "req/s").all()
    doc = json.loads((results / good.iloc[0]["source"]).read_text())
    records = [json.loads(x) for x in (results / good.iloc[0]["source"]).with_name("stream.requests.jsonl")
               .read_text().splitlines()]
    window_s = doc["windows"][0]["window_s"]
    for name, (ttft, tpot) in {"interactive": (500, 30), "server": (2000, 100)}.items():
        met, tok_s = _expected(records, window_s, ttft, tpot)
        sel = rows[rows.slo == name].set_index("metric")["value"]
        assert sel["goodput_req_s"] == pytest.approx(met / window_s)
        assert sel["goodput_output_tok_s"] == pytest.approx(tok_s)
        assert sel["slo_met_share"] == pytest.approx(met / len(records))
        assert "slo_window_met" not in sel  # 12 requests cannot support a p99
    assert any(r["error"] for r in records)  # the failed request counted as a miss above
    # Sync cells have no TTFT: no goodput against TTFT/TPOT limits.
    assert not (df[(df["mode"] == "sync") & (df.metric == "goodput_req_s")]).any().any()
    # A different SLO in the config re-judges the same files; the summary round-trips the slo column.
    loose = cfg.model_copy(update={"slo": {"any": cfg.slo["server"].model_copy(update={"ttft_ms": 1e9, "tpot_ms": 1e9,
                                                                                        "percentile": 50})}})
    df2 = aggregate(loose, results)
    met = df2[(df2.framework == "vllm") & (df2.task == "chat") & (df2["mode"] == "stream")
              & (df2.metric == "slo_window_met")]
    assert set(met["slo"]) == {"any"} and (met["value"] == 1).all()
    write_summary(df2, results)
    back = read_summary(results)
    assert set(back["slo"].dropna()) == {"any"}


def test_every_new_field_is_documented_with_its_unit():
    """servingbench/runtime/records.py is the one table of the result fields (the SLO, goodput, capacity and
    interval figures among them): the results format lists each with its unit and meaning, and
    aggregate takes its units from it."""
    from servingbench.runtime import records
    from servingbench.host.aggregate import unit_of
    from servingbench.runtime.typed_json import fields_of

    doc = (Path(__file__).resolve().parent.parent / "docs" / "results-format.md").read_text()
    for cls in (records.WindowSummary, records.SloVerdict, records.CapacityResult, records.CapacitySearch,
                records.DerivedFigures):
        for f in fields_of(cls):
            unit, meaning = f.metadata["unit"], f.metadata["doc"].replace("|", "\\|")
            metric = f" (summary `{f.metadata['metric']}`)" if f.metadata["metric"] else ""
            assert f"| `{f.name}`{metric} | {unit or '—'} | {meaning} |" in doc, f.name
    for metric, name in records.summary_metrics(records.SloVerdict).items():
        assert unit_of(metric) == records.SloVerdict.__dataclass_fields__[name].metadata["unit"], metric
    assert unit_of("slo_met_share") == "share" and unit_of("slo_window_met") == "bool"
    for f in fields_of(records.DerivedFigures):
        assert unit_of(f.name) == f.metadata["unit"]
    for cls in (records.CapacityResult, records.CapacitySearch):
        units = {f.name: f.metadata["unit"] for f in fields_of(cls)}
        for metric, name in records.capacity_metrics(cls).items():
            assert unit_of(metric) == units[name], metric
    assert unit_of("capacity_search_windows") == "windows" and unit_of("capacity_host_rss_peak_bytes") == "bytes"
    for name, (unit, meaning) in records.INTERVAL_STATISTICS.items():
        assert f"| `{name}` | {unit} | {meaning} |" in doc