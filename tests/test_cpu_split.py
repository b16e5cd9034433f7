"""run.client_cpus: the kit's client on CPUs of its own, the server on the rest (cpu_split).

The end-to-end test runs a real cell through the SGLang adapter against tests/sglang_standin.py
(an OpenAI-compatible stand-in: what it serves is beside the point here) and reads the CPUs the
server process and the client really had from the result, which the kit reads from the kernel
while it measures.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from servingbench.host.config import Run, cell_spec, load_config
from servingbench.runtime.cell import run_cell
from servingbench.runtime.cpu_split import CpuSplit, CpuSplitError, cpu_list, split
from servingbench.runtime.frameworks.sglang import SGLangAdapter
from servingbench.runtime.providers import fresh_server
from servingbench.runtime.spec import CellSpec, GenerationParams, PromptItem
from tests.test_sglang_adapter import _standin_launch, server

REPO = Path(__file__).resolve().parent.parent
ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def test_the_client_keeps_the_last_cpus_and_the_server_the_rest():
    assert split(0, {0, 1, 2, 3}) is None  # the default: they share every CPU
    assert split(1, {0, 1, 2, 3}) == CpuSplit(client=frozenset({3}), server=frozenset({0, 1, 2}))
    # A lane pinned to CPUs 16-31 (scripts/device/start.sh LANE_CPUS) splits within them.
    lane = split(4, set(range(16, 32)))
    assert lane.client == frozenset(range(28, 32)) and lane.server == frozenset(range(16, 28))
    assert cpu_list(lane.server) == "16-27" and cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


def test_a_split_that_leaves_the_server_nothing_is_refused_with_what_would_fit():
    with pytest.raises(CpuSplitError, match=r"4 of the 4 CPUs this job may use \(0-3\) leaves none for the "
                                            r"server; use at most 3"):
        split(4, {0, 1, 2, 3})


def test_the_config_setting_reaches_the_server_spec_and_is_checked():
    cfg = load_config(REPO / "config.yaml")
    assert cell_spec(cfg, "vllm", "gpt2", "chat", "stream").server.client_cpus == 0
    pinned = cfg.model_copy(update={"run": cfg.run.model_copy(update={"client_cpus": 2})})
    spec = cell_spec(pinned, "vllm", "gpt2", "chat", "stream")
    assert spec.server.client_cpus == 2 and CellSpec.from_json(spec.to_json()) == spec
    assert spec.server.key() != cell_spec(cfg, "vllm", "gpt2", "chat", "stream").server.key()  # no reuse across
    with pytest.raises(ValidationError):
        Run(client_cpus=-1)


def _cell(tmp_path: Path, client_cpus: int) -> tuple[CellSpec, Path, Path]:
    items = [PromptItem(id=f"p{i}", prompt=f"prompt {i}", prompt_tokens=3, target_output_tokens=8) for i in range(4)]
    workload = tmp_path / "w.jsonl"
    workload.write_text("".join(json.dumps(dataclasses.asdict(it)) + "\n" for it in items))
    spec = CellSpec(server=server(model_dir=str(tmp_path), client_cpus=client_cpus), task="qa", mode="stream",
                    generation=GenerationParams(0.3, 1.0, 40), requests=4, warmup_requests=1,
                    concurrency_levels=(1, 2), server_start_timeout_s=60, request_timeout_s=30)
    return spec, workload, tmp_path / "results" / "cells" / "sglang" / "m" / "qa" / "stream.json"


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs to split")
def test_a_cell_measures_with_the_client_and_the_server_on_their_own_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr(SGLangAdapter, "launch", _standin_launch("text", 0.2))
    spec, workload, out = _cell(tmp_path, client_cpus=1)
    before = os.sched_getaffinity(0)
    result = run_cell(spec, workload, out, tmp_path / "results", provider=fresh_server, progress_stream=io.StringIO())
    prov = result["provenance"]
    assert prov["client_cpus"] == cpu_list({ALLOWED[-1]}) and prov["server_cpus"] == cpu_list(set(ALLOWED[:-1]))
    assert result["spec"]["server"]["client_cpus"] == 1
    assert result["windows"][0]["completed"] == 4
    assert os.sched_getaffinity(0) == before  # the measuring process has its CPUs back


def test_without_a_split_both_may_use_every_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(SGLangAdapter, "launch", _standin_launch("text", 0.2))
    spec, workload, out = _cell(tmp_path, client_cpus=0)
    result = run_cell(spec, workload, out, tmp_path / "results", provider=fresh_server, progress_stream=io.StringIO())
    assert result["provenance"]["client_cpus"] == result["provenance"]["server_cpus"] == cpu_list(set(ALLOWED))


def test_an_impossible_split_fails_before_any_server_starts(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(SGLangAdapter, "launch", lambda *a: started.append(a))
    spec, workload, out = _cell(tmp_path, client_cpus=len(ALLOWED))
    with pytest.raises(CpuSplitError, match="leaves none for the server"):
        run_cell(spec, workload, out, tmp_path / "results", provider=fresh_server, progress_stream=io.StringIO())
    assert not started and not out.exists()
