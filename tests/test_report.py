"""The report as a pure function of a results folder (synthetic inputs from tests/resultsgen.py)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from servingbench.host.aggregate import ResultFileError
from servingbench.host.report import render_report
from servingbench.host.report.bandwidth import gpu_bandwidth, parse_params
from servingbench.host.report.render import SECTIONS, build_context
from servingbench.runtime.results import cell_path
from tests.resultsgen import make_config, write_results

REPO = Path(__file__).resolve().parent.parent
PLOT_IDS = ["plot-ttft", "plot-e2e", "plot-throughput", "plot-context", "plot-memory", "plot-output-tps"]


@pytest.fixture()
def cpu_cfg():
    return make_config(device="cpu", arms=("transformers-naive", "tgi", "vllm"))


@pytest.fixture()
def gpu_cfg():
    return make_config(device="cuda", weights="dummy", arms=("transformers-serve", "tgi", "vllm"),
                       cell_concurrency=(1, 4))


def _render(cfg, results: Path) -> str:
    out = render_report(cfg, results, results.parent / "report" / "index.html")
    return out.read_text(encoding="utf-8")


def _section(html: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert m, section_id
    return m.group(1)


def test_complete_report_is_self_contained(cpu_cfg, tmp_path: Path) -> None:
    results = write_results(cpu_cfg, tmp_path / "results")
    html = _render(cpu_cfg, results)
    for section_id, _ in SECTIONS:
        assert f'<section id="{section_id}">' in html
    # Nothing is fetched: no external script, stylesheet, image, font or frame (the markup outside
    # the inlined scripts; the browser test checks the running page).
    assert not re.search(r"<script[^>]*\bsrc=", html)
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.S)
    assert not re.search(r'<(img|iframe|link|source|video|audio|object|embed)\b', markup)
    assert not re.search(r"url\(", markup) and "@import" not in markup
    assert "window.vegaEmbed" in html  # the vega bundle is inlined
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for plot_id in PLOT_IDS:
        m = re.search(rf'<script type="application/json" id="spec-{plot_id}">(.*?)</script>', html, re.S)
        assert m, plot_id
        spec = json.loads(m.group(1))
        assert "datasets" in spec and "url" not in json.dumps(spec.get("data", {}))
    assert len(html) < 3_000_000
    # A CPU run says so, and the bandwidth floor says there is no GPU.
    assert "CPU run." in html
    assert "no GPU memory-bandwidth floor" in _section(html, "bandwidth-floor")
    assert "No client calibration run" in _section(html, "calibration")


def test_report_is_deterministic(cpu_cfg, tmp_path: Path) -> None:
    results = write_results(cpu_cfg, tmp_path / "results")
    first = render_report(cpu_cfg, results, tmp_path / "a.html").read_bytes()
    second = render_report(cpu_cfg, results, tmp_path / "b.html").read_bytes()
    assert first == second


def test_headline_winner_and_margin(cpu_cfg, tmp_path: Path) -> None:
    results = write_results(cpu_cfg, tmp_path / "results", mismatch=())
    ctx = build_context(cpu_cfg, results)
    rankings = {r.label: r for r in ctx["headline"]["smollm2-135m"]}
    assert set(rankings) == {"TTFT p50", "TPOT p50", "Throughput", "Output throughput"}
    for r in rankings.values():
        assert r.winner[0] == "vllm" and r.runner_up[0] == "tgi"  # resultsgen.ARM_SPEED
        assert r.margin > 1
    # TTFT: geometric mean over tasks of each stream cell's p50 at concurrency 1, from the tidy table.
    df = ctx["data"].df
    sel = df[(df.framework == "vllm") & (df["mode"] == "stream") & (df.kind == "cell") & (df.metric == "ttft_ms")
             & (df.statistic == "p50") & (df.concurrency == 1)]
    expect = math.exp(sum(math.log(v) for v in sel.value) / len(sel))
    assert rankings["TTFT p50"].winner[1] == pytest.approx(expect)
    tgi = rankings["TTFT p50"].runner_up[1]
    assert rankings["TTFT p50"].margin == pytest.approx(tgi / expect)
    # Throughput from the concurrency sweep's highest level.
    assert "concurrency 4" in rankings["Throughput"].basis
    assert not any(r.caveats for r in rankings.values())
    html = _render(cpu_cfg, results)
    assert f'{rankings["TTFT p50"].margin:.2f}× lower' in _section(html, "headline")


def test_headline_marks_an_arm_that_did_less_work(cpu_cfg, tmp_path: Path) -> None:
    # TGI stops some requests early: it may "win" throughput by doing less; the page must say so.
    results = write_results(cpu_cfg, tmp_path / "results", mismatch=("tgi",), speed={"tgi": 0.9})
    ctx = build_context(cpu_cfg, results)
    for r in ctx["headline"]["smollm2-135m"]:
        assert "another output length" in r.caveats["tgi"]
        assert "vllm" not in r.caveats
    assert "⚠ unequal" in _section(_render(cpu_cfg, results), "headline")


def test_failed_and_missing_cells_are_flagged(cpu_cfg, tmp_path: Path) -> None:
    results = write_results(cpu_cfg, tmp_path / "results", fail=["vllm/smollm2-135m/qa/stream"],
                            missing=["tgi/smollm2-135m/sweep_concurrency", "tgi/smollm2-135m/chat/sync"])
    ctx = build_context(cpu_cfg, results)
    flags = {(f.what, tuple(f.cells)) for f in ctx["flags"]}
    assert ("failed (out_of_memory)", ("vllm/smollm2-135m/qa/stream",)) in flags
    assert ("missing", ("tgi/smollm2-135m/sweep_concurrency",)) in flags
    assert ("missing", ("tgi/smollm2-135m/chat/sync",)) in flags
    assert any(f.what == "unequal work" and f.cells == ["tgi/smollm2-135m/qa/stream"] for f in ctx["flags"])
    assert any(f.what == "ran on CPU" for f in ctx["flags"])
    # vLLM lost a stream cell: it is not ranked on TTFT, and the page says why.
    ttft = ctx["headline"]["smollm2-135m"][0]
    assert "vllm" not in [a for a, _ in ttft.ranked]
    assert any(a == "vllm" and "qa/stream (failed)" in why for a, why in ttft.unranked)
    html = _render(cpu_cfg, results)
    assert "Incomplete run" in html
    tasks = _section(html, "tasks")
    assert re.search(r'data-arm="vllm" data-mode="stream" data-status="failed"', tasks)
    assert re.search(r'data-arm="tgi" data-mode="sync" data-status="missing"', tasks)
    assert "CUDA out of memory while loading weights" in _section(html, "flags")


def test_gpu_report_bandwidth_floor_and_dummy_flag(gpu_cfg, tmp_path: Path) -> None:
    results = write_results(gpu_cfg, tmp_path / "results", speed={"vllm": 0.5})  # vLLM 7B TPOT 6.3 ms < 8.6 ms floor
    ctx = build_context(gpu_cfg, results)
    floor = ctx["floor"]
    assert floor and {r.gpu for r in floor} == {"A100 40GB (NVIDIA A100-SXM4-40GB)"}
    llama = next(r for r in floor if r.model == "llama-2-7b-chat")
    assert llama.floor_ms == pytest.approx(6.7e9 * 2 / 1555e9 * 1000)
    below = {(r.arm, r.model) for r in floor if r.below_floor}
    assert below == {("vllm", "llama-2-7b-chat")}
    assert any(f.what == "faster than the bandwidth floor" for f in ctx["flags"])
    assert any(f.what == "dummy weights" for f in ctx["flags"])
    html = _render(gpu_cfg, results)
    bw = _section(html, "bandwidth-floor")
    assert "Faster than physics" in bw and "faster than the floor" in bw
    prov = _section(html, "provenance")
    for text in ("NVIDIA A100-SXM4-40GB", "535.129.03", "12.2", "servingbench/vllm:seed",
                 "0123456789abcdef0123456789abcdef01234567", "bench-01"):
        assert text in prov
    assert "GPU used peak (MiB)" in html and "Dummy weights." in html


def test_sync_cells_get_e2e_per_output_token_against_the_floor(gpu_cfg, tmp_path: Path) -> None:
    results = write_results(gpu_cfg, tmp_path / "results", speed={"vllm": 0.3})
    floor = build_context(gpu_cfg, results)["floor"]
    sync = [r for r in floor if r.mode == "sync"]
    stream = {(r.arm, r.model, r.task, r.concurrency) for r in floor if r.mode == "stream"}
    assert sync and {(r.arm, r.model, r.task, r.concurrency) for r in sync} == stream
    row = next(r for r in sync if r.arm == "transformers-serve" and r.concurrency == 4)
    reqs_file = cell_path(results, row.arm, row.model, row.task, "sync").with_suffix(".requests.jsonl")
    reqs = [json.loads(line) for line in reqs_file.read_text().splitlines()]
    done = [r for r in reqs if r["concurrency"] == 4 and r["e2e_ms"] is not None]
    assert row.per_token_ms == pytest.approx(sum(r["e2e_ms"] for r in done) / sum(r["output_tokens"] for r in done))
    assert row.metric == "E2E per output token" and row.per_token_min_ms is None
    # vLLM at 0.3x: its 7B sync cells come in under the floor too, and are flagged as such.
    assert any(r.below_floor for r in sync if r.arm == "vllm" and r.model == "llama-2-7b-chat")
    bw = _section(_render(gpu_cfg, results), "bandwidth-floor")
    assert "E2E per output token against the floor, per sync cell" in bw


def test_measured_bandwidth_sets_the_floor_on_its_own_gpu_only(gpu_cfg, tmp_path: Path) -> None:
    """results/gpu-bandwidth.json (servingbench gpu-bandwidth) replaces the data sheet's figure for
    the GPU it was measured on, and the page says which figure each floor used."""
    results = write_results(gpu_cfg, tmp_path / "results")
    from servingbench.runtime.records import GpuBandwidth, to_json

    measured = to_json(GpuBandwidth(device_name="NVIDIA A100-SXM4-40GB", copy_gb_s=1300.0, copy_gb_s_min=1290.0,
                                    copy_gb_s_max=1310.0, bytes_per_copy=2**30, repeats=30, method="copy",
                                    torch="2.11.0", measured_at="2026-11-30T00:00:00+00:00"))
    (results / "gpu-bandwidth.json").write_text(json.dumps(measured))
    llama = next(r for r in build_context(gpu_cfg, results)["floor"] if r.model == "llama-2-7b-chat")
    assert (llama.bandwidth_source, llama.bandwidth_gb_s, llama.datasheet_gb_s) == ("measured", 1300.0, 1555.0)
    assert llama.floor_ms == pytest.approx(6.7e9 * 2 / 1300e9 * 1000)
    assert "measured" in _section(_render(gpu_cfg, results), "bandwidth-floor")
    (results / "gpu-bandwidth.json").write_text(json.dumps({**measured, "device_name": "NVIDIA H200"}))
    llama = next(r for r in build_context(gpu_cfg, results)["floor"] if r.model == "llama-2-7b-chat")
    assert (llama.bandwidth_source, llama.bandwidth_gb_s) == ("data sheet", 1555.0)


def test_unknown_gpu_gets_no_floor(gpu_cfg, tmp_path: Path) -> None:
    results = write_results(gpu_cfg, tmp_path / "results", gpu_name="NVIDIA H100 NVL")
    ctx = build_context(gpu_cfg, results)
    assert ctx["floor"] == []
    assert any("NVIDIA H100 NVL" in n for n in ctx["floor_notes"])


@pytest.mark.parametrize("name, label", [
    ("NVIDIA A100-SXM4-40GB", "A100 40GB"), ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB"), ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H200", "H200"),
    ("NVIDIA L4", "L4"), ("NVIDIA A10G", "A10G"), ("NVIDIA L40S", None), ("NVIDIA H100 NVL", None), (None, None),
])
def test_gpu_bandwidth_table(name, label) -> None:
    got = gpu_bandwidth(name)
    assert (got[0] if got else None) == label


def test_parse_params() -> None:
    assert parse_params("6.7B") == pytest.approx(6.7e9)
    assert parse_params("124M") == pytest.approx(124e6)
    assert parse_params("lots") is None


def test_calibration_shown_when_present(cpu_cfg, tmp_path: Path) -> None:
    results = write_results(cpu_cfg, tmp_path / "results")
    (results / "calibration.json").write_text(json.dumps({"client_overhead_ms": {"p50": 0.41}}))
    cal = _section(_render(cpu_cfg, results), "calibration")
    assert "client_overhead_ms" in cal and "0.41" in cal and "No client calibration run" not in cal


def test_client_ttft_shown_beside_the_servers_own(cpu_cfg, tmp_path: Path) -> None:
    results = write_results(cpu_cfg, tmp_path / "results")
    path = cell_path(results, "vllm", "smollm2-135m", "chat", "stream")
    doc = json.loads(path.read_text())
    client = doc["windows"][0]["ttft_ms"]["mean"]
    doc["windows"][0]["server_ttft_ms_mean"] = client - 2.0
    path.write_text(json.dumps(doc))
    rows = build_context(cpu_cfg, results)["server_view"]
    assert [(r.arm, r.task, r.concurrency) for r in rows] == [("vllm", "chat", doc["windows"][0]["concurrency"])]
    assert rows[0].gap_ms == pytest.approx(2.0)
    cal = _section(_render(cpu_cfg, results), "calibration")
    assert "server TTFT mean" in cal and f"{client - 2.0:.1f}" in cal


def test_corrupt_file_writes_no_report(cpu_cfg, tmp_path: Path) -> None:
    results = write_results(cpu_cfg, tmp_path / "results")
    bad = cell_path(results, "vllm", "smollm2-135m", "chat", "stream")
    bad.write_text("{")
    out = tmp_path / "report" / "index.html"
    with pytest.raises(ResultFileError, match=re.escape(str(bad))):
        render_report(cpu_cfg, results, out)
    assert not out.exists()


def test_corrupt_requests_file_names_the_line(cpu_cfg, tmp_path: Path) -> None:
    results = write_results(cpu_cfg, tmp_path / "results")
    req = cell_path(results, "tgi", "smollm2-135m", "qa", "stream").with_name("stream.requests.jsonl")
    req.write_text(req.read_text() + "{oops\n")
    with pytest.raises(ResultFileError, match=re.escape(str(req)) + r":\d+: corrupt request record"):
        render_report(cpu_cfg, results, tmp_path / "index.html")


def test_empty_results_still_render(cpu_cfg, tmp_path: Path) -> None:
    html = _render(cpu_cfg, tmp_path / "results")
    assert html.count("Nothing to draw") == len(PLOT_IDS)
    assert "no arm has this figure" in _section(html, "headline")


def test_framework_table_matches_the_users_matrix(cpu_cfg, tmp_path: Path) -> None:
    shipped = yaml.safe_load((REPO / "servingbench" / "data" / "frameworks.yaml").read_text())["frameworks"]
    spec = REPO.parent / "shared" / "spec" / "matrix.yaml"
    if spec.exists():
        assert shipped == yaml.safe_load(spec.read_text())["frameworks"]
    results = write_results(cpu_cfg, tmp_path / "results")
    table = build_context(cpu_cfg, results)["frameworks"]
    assert table["names"] == ["transformers", "tgi", "vllm"]
    rows = dict(table["rows"])
    assert rows["batching"][0] == shipped["transformers"]["batching"]
    assert rows["arms in this run"] == ["transformers-naive", "tgi", "vllm"]
    assert rows["version measured"] == ["4.46.3", "1.2.0", "0.6.3"]


# -- SGLang as a first-class arm; per-token ITL and event gaps (issues 16, 19) -------------------
@pytest.fixture()
def sglang_cfg():
    return make_config(device="cuda", weights="dummy", profile="current", models=("gpt2",),
                       arms=("vllm", "sglang", "transformers-serve"), cell_concurrency=(1, 4),
                       arm_settings={"sglang": {"model_server_args": {"gpt2": ["--disable-cuda-graph"]}}})


def test_sglang_is_ranked_plotted_and_described_like_any_arm(sglang_cfg, tmp_path: Path) -> None:
    results = write_results(sglang_cfg, tmp_path / "results", speed={"sglang": 0.9})
    ctx = build_context(sglang_cfg, results)
    tpot = next(r for r in ctx["headline"]["gpt2"] if r.label == "TPOT p50")
    assert tpot.winner[0] == "sglang"  # the synthetic sglang decodes fastest
    assert "sglang" in ctx["arm_colors"] and [s.arm for s in ctx["startup"]].count("sglang") == 1
    facts = {a["arm"]: a for a in ctx["arm_facts"]}
    assert facts["sglang"]["version"] == "0.5.16 (kernels: sglang-kernel 0.4.5, flashinfer-python 0.6.14)"
    assert "gpt2 only: --disable-cuda-graph" in facts["sglang"]["server_args"]
    table = ctx["frameworks"]
    assert table["names"] == ["transformers", "tgi", "vllm", "sglang"]  # the users' three, then the kit's
    rows = dict(table["rows"])
    assert rows["in the users' comparison"] == ["yes", "yes", "yes", "no: the kit's description"]
    assert rows["version measured"][3] == "0.5.16" and rows["arms in this run"][3] == "sglang"
    html = _render(sglang_cfg, results)
    for plot_id in ("plot-ttft", "plot-throughput", "plot-memory"):
        spec = re.search(rf'id="spec-{plot_id}">(.*?)</script>', html, re.S).group(1)
        assert '"sglang"' in spec, plot_id


def test_cells_served_with_per_model_arguments_are_flagged(sglang_cfg, tmp_path: Path) -> None:
    results = write_results(sglang_cfg, tmp_path / "results")
    flags = [f for f in build_context(sglang_cfg, results)["flags"] if f.what == "server set up for this model only"]
    assert len(flags) == 1 and flags[0].severity == "warn"
    assert all(c.startswith("sglang/gpt2/") for c in flags[0].cells) and len(flags[0].cells) == 2 * 2 + 2
    assert "--disable-cuda-graph" in flags[0].detail


def test_itl_unknown_is_said_and_the_event_gap_shown_instead(sglang_cfg, tmp_path: Path) -> None:
    results = write_results(sglang_cfg, tmp_path / "results")
    path = cell_path(results, "transformers-serve", "gpt2", "chat", "stream")
    doc = json.loads(path.read_text())
    for w in doc["windows"]:  # a stream that never said its tokens per event
        w.update(itl_ms=None, tokens_per_event=None, itl_unknown_requests=w["completed"])
    path.write_text(json.dumps(doc))
    ctx = build_context(sglang_cfg, results)
    flag = next(f for f in ctx["flags"] if f.what == "ITL per token not known")
    assert flag.cells == ["transformers-serve/gpt2/chat/stream"]
    row = next(r for r in ctx["tasks"]["chat"] if r.arm == "transformers-serve" and r.mode == "stream")
    assert row.stats["itl_ms"]["p50"] is None and row.stats["event_gap_ms"]["p50"] > 0
    assert "Event gap" in _section(_render(sglang_cfg, results), "tasks")


def test_old_results_show_their_event_gaps_as_event_gaps(sglang_cfg, tmp_path: Path) -> None:
    results = write_results(sglang_cfg, tmp_path / "results")
    path = cell_path(results, "vllm", "gpt2", "chat", "stream")
    doc = json.loads(path.read_text())
    gaps = doc["windows"][0]["event_gap_ms"]
    for w in doc["windows"]:  # as written before per-token ITL: itl_ms held the event gaps
        for key in ("event_gap_ms", "tokens_per_event", "itl_unknown_requests", "server_itl_ms_mean"):
            w.pop(key)
    path.write_text(json.dumps(doc))
    ctx = build_context(sglang_cfg, results)
    row = next(r for r in ctx["tasks"]["chat"] if r.arm == "vllm" and r.mode == "stream" and r.concurrency == 1)
    assert row.stats["itl_ms"]["p50"] is None and row.stats["event_gap_ms"]["p50"] == pytest.approx(gaps["p50"])
    assert "vllm/gpt2/chat/stream" in next(f for f in ctx["flags"] if f.what == "ITL per token not known").cells


def test_server_itl_shown_beside_the_clients(sglang_cfg, tmp_path: Path) -> None:
    results = write_results(sglang_cfg, tmp_path / "results")
    path = cell_path(results, "sglang", "gpt2", "qa", "stream")
    doc = json.loads(path.read_text())
    doc["windows"][0].update(server_ttft_ms_mean=17.7, server_itl_ms_mean=6.25)
    path.write_text(json.dumps(doc))
    rows = build_context(sglang_cfg, results)["server_view"]
    assert [(r.arm, r.task, r.server_itl_ms) for r in rows] == [("sglang", "qa", 6.25)]
    assert rows[0].client_itl_ms == pytest.approx(doc["windows"][0]["itl_ms"]["mean"])
    cal = _section(_render(sglang_cfg, results), "calibration")
    assert "sglang:inter_token_latency_seconds" in cal and "6.25" in cal and "17.7" in cal


def test_a_percentile_its_window_cannot_support_is_not_printed(cpu_cfg, tmp_path: Path) -> None:
    """Six requests a window: p50 and mean are shown, p90 (needs 10) and p99 (needs 100) are not,
    though summary.csv keeps them."""
    results = write_results(cpu_cfg, tmp_path / "results")
    row = next(r for r in build_context(cpu_cfg, results)["tasks"]["chat"] if r.status == "ok")
    for metric in ("e2e_ms", "queue_ms"):
        hidden = row.hidden[metric]
        assert hidden["p50"] is None and hidden["mean"] is None, metric
        assert hidden["p90"] and hidden["p99"], metric  # the reason, shown as "n/a" with its count
    from servingbench.host.report.data import ReportData

    df = ReportData.load(cpu_cfg, results).df
    assert ((df["metric"] == "e2e_ms") & (df["statistic"] == "p90") & df["value"].notna()).any()


def _plot_rows(spec: dict) -> list[dict]:
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


def test_plots_draw_a_percentile_only_where_its_window_supports_it(tmp_path: Path) -> None:
    """Like the tables: cells of 3 requests get a p50 mark (needs 2), no p90 (10) or p99 (100), in
    the distribution plot and the tokens/s tooltip; a context sweep of 3 requests a length has its
    p50 and no p90/p99; with one request a length its p50 is unsupported and the plot is empty."""
    from servingbench.runtime.records import WINDOW as W
    from servingbench.host.report import plots
    from servingbench.host.report.data import ReportData

    cfg = make_config(device="cpu", arms=("transformers-naive", "vllm"), requests=3)
    data = ReportData.load(cfg, write_results(cfg, tmp_path / "three"))
    marks = {r["what"] for r in _plot_rows(plots.distribution(data, W.e2e_ms, "E2E", ("sync", "stream")))}
    assert marks == {"request", "p50"}
    tps = _plot_rows(plots.output_tokens_per_s(data))
    assert tps and all(r["p90"] is None and r["n"] == 3 for r in tps)
    context = _plot_rows(plots.latency_vs_prompt(data))
    assert context and all(r["n"] == 3 and r["p90"] is None and r["p99"] is None for r in context)
    one = cfg.model_copy(update={"sweeps": cfg.sweeps.model_copy(
        update={"context": cfg.sweeps.context.model_copy(update={"requests_per_length": 1})})})
    assert plots.latency_vs_prompt(ReportData.load(one, write_results(one, tmp_path / "one"))) is None
