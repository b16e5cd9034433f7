"""servingbench.host.workloads: token ranges with each model's own tokenizer, determinism, context sweep."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from servingbench.host.config import context_lengths, load_config
from servingbench.host.build_workloads import build_workload
from servingbench.runtime.spec import read_workload
from servingbench.host.workloads import (
    WorkloadError,
    build_context_workload,
    context_tolerance,
    workload_size,
)

REPO = Path(__file__).resolve().parent.parent
CPU = load_config(REPO / "configs" / "cpu.yaml")
GPU = load_config(REPO / "config.yaml")  # full-size counts (469 chat prompts) on dummy tokenizers
CASES = [("smollm2-135m", CPU), ("gpt2", GPU), ("llama-2-7b-chat", GPU)]


def _dir(model, smollm2_dir, dummy_dirs) -> Path:
    return smollm2_dir if model == "smollm2-135m" else dummy_dirs[model]


def _fresh_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)  # not the module's cached one


@pytest.mark.parametrize("model,cfg", CASES, ids=[c[0] for c in CASES])
def test_every_prompt_fits_its_task(model, cfg, smollm2_dir, dummy_dirs, tmp_path):
    mdir = _dir(model, smollm2_dir, dummy_dirs)
    tok = _fresh_tokenizer(mdir)
    chat = cfg.models[model].chat_template
    for task, tspec in cfg.tasks.items():
        out = tmp_path / model / f"{task}.jsonl"
        records = build_workload(cfg, model, task, mdir, out)
        assert len(records) == workload_size(cfg, task)
        assert [json.loads(line) for line in out.read_text().splitlines()] == records
        lo, hi = tspec.input_tokens
        olo, ohi = tspec.output_tokens[0], min(tspec.output_tokens[1], cfg.generation[model][task].max_tokens)
        assert len({r["id"] for r in records}) == len({r["prompt"] for r in records}) == len(records)
        for r in records:
            n = len(tok(r["prompt"])["input_ids"])
            assert n == r["prompt_tokens"], r["id"]
            assert lo <= n <= hi, (r["id"], n)
            assert olo <= r["target_output_tokens"] <= ohi
            assert r["sha256"] == hashlib.sha256(r["prompt"].encode()).hexdigest()
            assert r["task"] == task
            if chat:
                assert r["messages"][0]["role"] == "user"
                assert r["prompt"] == tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True)
            else:
                assert r["messages"] is None
        assert len(read_workload(str(out))) == len(records)  # the runtime's reader accepts it


def test_workloads_are_deterministic(smollm2_dir, tmp_path):
    for task in CPU.tasks:
        a = tmp_path / "a" / f"{task}.jsonl"
        b = tmp_path / "b" / f"{task}.jsonl"
        build_workload(CPU, "smollm2-135m", task, smollm2_dir, a)
        build_workload(CPU, "smollm2-135m", task, smollm2_dir, b)
        assert a.read_bytes() == b.read_bytes(), task
    build_context_workload(CPU, "smollm2-135m", smollm2_dir, tmp_path / "a" / "context.jsonl")
    build_context_workload(CPU, "smollm2-135m", smollm2_dir, tmp_path / "b" / "context.jsonl")
    assert (tmp_path / "a" / "context.jsonl").read_bytes() == (tmp_path / "b" / "context.jsonl").read_bytes()


def test_seed_changes_the_prompts(smollm2_dir, tmp_path):
    other = CPU.model_copy(update={"run": CPU.run.model_copy(update={"seed": 99})})
    a = build_workload(CPU, "smollm2-135m", "chat", smollm2_dir, tmp_path / "a.jsonl")
    b = build_workload(other, "smollm2-135m", "chat", smollm2_dir, tmp_path / "b.jsonl")
    assert [r["prompt"] for r in a] != [r["prompt"] for r in b]


@pytest.mark.parametrize("model,cfg", CASES, ids=[c[0] for c in CASES])
def test_context_workload(model, cfg, smollm2_dir, dummy_dirs, tmp_path):
    mdir = _dir(model, smollm2_dir, dummy_dirs)
    tok = _fresh_tokenizer(mdir)
    sweep = cfg.sweeps.context
    records = build_context_workload(cfg, model, mdir, tmp_path / "context.jsonl")
    lengths = context_lengths(cfg, model)
    assert [r["prompt_tokens_target"] for r in records] == [n for n in lengths for _ in range(sweep.requests_per_length)]
    assert len({r["prompt"] for r in records}) == len(records)
    for r in records:
        n = len(tok(r["prompt"])["input_ids"])
        assert n == r["prompt_tokens"]
        assert abs(n - r["prompt_tokens_target"]) <= context_tolerance(r["prompt_tokens_target"])
        assert r["target_output_tokens"] == sweep.output_tokens and r["task"] == "context"
    items = read_workload(str(tmp_path / "context.jsonl"))
    assert items[0].extra["prompt_tokens_target"] == lengths[0]


def test_qa_is_closed_book(smollm2_dir, tmp_path):
    """The asked question's answer never appears among the solved examples."""
    pairs = json.loads((REPO / "servingbench" / "data" / "qa.json").read_text())["pairs"]
    answers = dict(pairs)
    for r in build_workload(CPU, "smollm2-135m", "qa", smollm2_dir, tmp_path / "qa.jsonl"):
        content = r["messages"][0]["content"]
        question = content.rsplit("Q: ", 1)[1].removesuffix("\nA:")
        assert content.endswith("\nA:")
        assert f"A: {answers[question]}\n" not in content


def test_workload_size_rule():
    # config.yaml: cells need (3 warm-up + 50) at c=1 and (8 + 50) at c=8; the chat sweep
    # sum(max(3, c) + 64) over levels 1..64 (warm-up is at least one full wave per window).
    assert workload_size(GPU, "summarization") == (3 + 50) + (8 + 50)
    # chat is also searched for capacity: 3 warm-up + 5 probe + 4 x 200 (min_requests) beats the sweep.
    assert sum(max(3, c) + 64 for c in (1, 2, 4, 8, 16, 32, 64)) < 3 + 5 + 4 * 200
    assert workload_size(GPU, "chat") == 3 + 5 + 4 * 200
    # configs/cpu.yaml: qa has the cells' (1 + 2) only; chat's capacity search, 1 warm-up + 10 probe
    # + 4 x 10 (min_requests), beats chat's concurrency sweep, (1 + 4) + (4 + 4)
    assert workload_size(CPU, "qa") == 1 + 2
    assert (1 + 4) + (4 + 4) < 1 + 10 + 4 * 10
    assert workload_size(CPU, "chat") == 1 + 10 + 4 * 10


def test_unknown_task(smollm2_dir, tmp_path):
    with pytest.raises(WorkloadError, match="unknown task 'poetry'"):
        build_workload(CPU, "smollm2-135m", "poetry", smollm2_dir, tmp_path / "x.jsonl")


def test_building_a_workload_does_not_import_torch(smollm2_dir, tmp_path):
    """The prepared SmolLM2 folder names PreTrainedTokenizerFast: its workloads are built without
    importing torch (AutoTokenizer would: most of a workload job's CPU time); the prompts and
    counts are AutoTokenizer's (test_every_prompt_fits_its_task compares them)."""
    import subprocess
    import sys

    code = ("import sys; from servingbench.host.config import load_config; "
            "from servingbench.host.build_workloads import build_workload; "
            f"build_workload(load_config({str(REPO / 'configs' / 'cpu.yaml')!r}), 'smollm2-135m', 'qa', "
            f"{str(smollm2_dir)!r}, {str(tmp_path / 'qa.jsonl')!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "False"
    assert len(read_workload(str(tmp_path / "qa.jsonl"))) == workload_size(CPU, "qa")
