"""Traces: servingbench's format, the Mooncake converter on a hand-written excerpt, the shipped
traces, and the prompts a trace task builds (real SmolLM2 tokenizer)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingbench.host.config import parse_config
from servingbench.host.trace import (
    TraceError, convert_mooncake, mooncake_sample, read_trace, synthetic_trace,
)
from servingbench.host.build_workloads import build_workload
from servingbench.host.workloads import WorkloadError, _Renderer

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "servingbench" / "data" / "traces"
# Written by hand in the published format (github.com/kvcache-ai/Mooncake, FAST'25 traces):
# ms timestamps (absolute here, so the converter must subtract the first), 512-token blocks.
MOONCAKE = """\
{"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59]}
{"timestamp": 27482, "input_length": 1024, "output_length": 8, "hash_ids": [46, 47]}
{"timestamp": 30535, "input_length": 655, "output_length": 26, "hash_ids": [60, 61]}

{"timestamp": 31000, "input_length": 300, "output_length": 5}
"""


def test_mooncake_converter_on_a_hand_written_excerpt(tmp_path):
    src, dst = tmp_path / "mooncake.jsonl", tmp_path / "ours.jsonl"
    src.write_text(MOONCAKE)
    assert convert_mooncake(src, dst) == 4
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert rows == [
        {"offset_ms": 0.0, "input_tokens": 6955, "output_tokens": 52,
         "hash_ids": [46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59], "block_tokens": 512},
        {"offset_ms": 0.0, "input_tokens": 1024, "output_tokens": 8, "hash_ids": [46, 47], "block_tokens": 512},
        {"offset_ms": 3053.0, "input_tokens": 655, "output_tokens": 26, "hash_ids": [60, 61], "block_tokens": 512},
        {"offset_ms": 3518.0, "input_tokens": 300, "output_tokens": 5},
    ]
    recs = read_trace(dst)
    direct = read_trace(src, fmt="mooncake")  # reading Mooncake directly is the same, line numbers its own
    assert [r.line for r in direct] == [1, 2, 3, 5]
    assert [dataclasses.replace(r, line=0) for r in recs] == [dataclasses.replace(r, line=0) for r in direct]
    # Blocks: equal leading ids share text keys; the last block holds the remainder of the input.
    a, b, c = recs[0], recs[1], recs[2]
    assert a.segments[:2] == b.segments and a.segments[13][1] == 6955 - 13 * 512
    assert not set(a.segments) & set(c.segments) and recs[3].segments == ()
    assert read_trace(dst, max_requests=2) == recs[:2]


@pytest.mark.parametrize("line,needle", [
    ('{"offset_ms": 1, "input_tokens": 10}', ":1: output_tokens: must be an integer >= 1 (got None)"),
    ('{"offset_ms": "soon", "input_tokens": 10, "output_tokens": 2}', ":1: offset_ms: must be a number >= 0"),
    ('{"offset_ms": 1, "input_tokens": 10, "output_tokens": 2, "prefix_hash": "a"}', ":1: prefix_tokens: must be"),
    ('{"offset_ms": 1, "input_tokens": 10, "output_tokens": 2, "prefix_hash": "a", "prefix_tokens": 11}',
     ":1: prefix_tokens: 11 is more than input_tokens 10"),
    ('{"offset_ms": 1, "input_tokens": 600, "output_tokens": 2, "hash_ids": [1, 2, 3], "block_tokens": 512}',
     ":1: hash_ids: 3 blocks of 512 tokens are more than input_tokens 600"),
    ('{"offset_ms": 1, "input_tokens": 10, "output_tokens": 2, "prompt": "hi"}', ":1: prompt: unknown key"),
    ('[1, 2]', ":1: not a JSON object"),
    ('{"offset_ms": 1,', ":1: not valid JSON"),
])
def test_a_bad_trace_line_is_named_with_its_key(tmp_path, line, needle):
    path = tmp_path / "t.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TraceError) as exc:
        read_trace(path)
    assert str(exc.value).startswith(str(path)) and needle in str(exc.value), exc.value


def test_the_shipped_traces_are_what_their_generators_write():
    for name, rows in (("synthetic.jsonl", synthetic_trace()), ("mooncake-sample.jsonl", mooncake_sample())):
        lines = (TRACES / name).read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows, name
    moon = read_trace(TRACES / "mooncake-sample.jsonl", fmt="mooncake")
    assert max(r.input_tokens + r.output_tokens for r in moon) <= 1024  # fits every model of the GPU profile
    synth = read_trace(TRACES / "synthetic.jsonl")
    assert len({r.session_id for r in synth}) < len(synth) and {r.prefix_key for r in synth} > {None}


def test_cli_converts_a_mooncake_trace(tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_text(MOONCAKE)
    res = subprocess.run([sys.executable, "-m", "servingbench.cli", "convert-trace", str(src), "--out",
                          str(tmp_path / "o.jsonl"), "--max-requests", "2"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.strip().endswith(": 2 requests")
    src.write_text('{"timestamp": 5, "input_length": 0, "output_length": 1}\n')
    res = subprocess.run([sys.executable, "-m", "servingbench.cli", "convert-trace", str(src), "--out",
                          str(tmp_path / "o.jsonl")], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and f"{src}:1: input_length: must be an integer >= 1 (got 0)" in res.stderr
    assert "Traceback" not in res.stderr


def _trace_cfg(trace: Path, **task) -> object:
    data = yaml.safe_load((ROOT / "configs" / "cpu-workloads.yaml").read_text())
    data["tasks"] = {"t": {"workload": "trace", "trace": str(trace), "input_tokens": [1, 2000],
                           "output_tokens": [1, 100], **task}}
    data["generation"] = {"smollm2-135m": {"t": {"temperature": 0.9, "top_p": 0.95, "max_tokens": 100}}}
    data["run"]["warmup_requests"] = 2
    return parse_config(data, "cfg")


def test_trace_prompts_have_the_traces_lengths_and_share_what_it_shares(smollm2_dir, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(r) for r in [
        {"offset_ms": 0, "input_tokens": 300, "output_tokens": 20, "session_id": "a", "prefix_hash": "sys", "prefix_tokens": 120},
        {"offset_ms": 250, "input_tokens": 180, "output_tokens": 10, "session_id": "b", "prefix_hash": "sys", "prefix_tokens": 120},
        {"offset_ms": 250, "input_tokens": 900, "output_tokens": 30, "hash_ids": [1, 2], "block_tokens": 512},
        {"offset_ms": 900, "input_tokens": 700, "output_tokens": 30, "hash_ids": [1, 3], "block_tokens": 512},
        {"offset_ms": 1200, "input_tokens": 64, "output_tokens": 5},
    ]) + "\n")
    cfg = _trace_cfg(trace, time_scale=0.5)
    records = build_workload(cfg, "smollm2-135m", "t", smollm2_dir, tmp_path / "w.jsonl")
    tok = _Renderer(smollm2_dir, False).tok
    warm, meas = records[:2], records[2:]
    assert all(r["warmup"] for r in warm) and not any(r.get("warmup") for r in meas)
    assert [r["offset_ms"] for r in meas] == [0.0, 125.0, 125.0, 450.0, 600.0]  # time_scale 0.5
    for r, want in zip(meas, (300, 180, 900, 700, 64)):
        assert r["prompt_tokens"] == len(tok(r["prompt"])["input_ids"])
        assert abs(r["prompt_tokens"] - want) <= 4 and r["input_tokens_trace"] == want
        assert r["messages"] is None  # plain text: the server sees the trace's own length
    sys_a, sys_b, blk2, blk3, alone = meas
    assert (sys_a["session"], sys_b["session"]) == ("a", "b")
    assert sys_a["prefix_group"] == sys_b["prefix_group"] and [sys_a["prefix_seen"], sys_b["prefix_seen"]] == [False, True]
    head = sys_a["prompt"][:200]
    assert sys_b["prompt"].startswith(head) and not blk2["prompt"].startswith(head[:40])
    first_block = blk2["prompt"][: len(blk2["prompt"]) // 2]
    assert blk3["prompt"].startswith(first_block[:1000]) and blk3["prefix_seen"] and not blk2["prefix_seen"]
    assert "prefix_group" not in alone and len({r["prompt"] for r in records}) == len(records)


def test_a_block_that_recurs_as_a_partial_block_is_a_prefix_of_its_full_text(smollm2_dir, tmp_path):
    """Mooncake's last block of a prompt may be partial, and its id may recur as a full block
    elsewhere (the shipped sample's line 5: block 0, 344 tokens, after lines that hold all 512 of
    it): the partial one is the first tokens of the same text, not the full block's 512 again."""
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(r) for r in [
        {"offset_ms": 0, "input_tokens": 838, "output_tokens": 20, "hash_ids": [0, 1], "block_tokens": 512},
        {"offset_ms": 10, "input_tokens": 344, "output_tokens": 20, "hash_ids": [0], "block_tokens": 512},
    ]) + "\n")
    records = build_workload(_trace_cfg(trace), "smollm2-135m", "t", smollm2_dir, tmp_path / "w.jsonl")
    full, partial = records[2:]
    assert abs(partial["prompt_tokens"] - 344) <= 5 and abs(full["prompt_tokens"] - 838) <= 6
    assert full["prompt"].startswith(partial["prompt"])  # the shared block's first tokens, reusable by a cache


def test_the_shipped_mooncake_sample_builds_to_its_lengths(smollm2_dir, tmp_path):
    cfg = _trace_cfg(TRACES / "mooncake-sample.jsonl", format="mooncake", output_tokens=[1, 128])
    cfg.generation["smollm2-135m"]["t"] = cfg.generation["smollm2-135m"]["t"].model_copy(update={"max_tokens": 128})
    records = build_workload(cfg, "smollm2-135m", "t", smollm2_dir, tmp_path / "w.jsonl")
    rows = [json.loads(x) for x in (TRACES / "mooncake-sample.jsonl").read_text().splitlines()]
    assert [r["input_tokens_trace"] for r in records[2:]] == [r["input_length"] for r in rows]


def test_a_trace_length_outside_the_tasks_bounds_fails_naming_the_line(smollm2_dir, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"offset_ms": 0, "input_tokens": 50, "output_tokens": 5}\n'
                     '{"offset_ms": 1, "input_tokens": 2500, "output_tokens": 5}\n')
    cfg = _trace_cfg(trace)
    with pytest.raises(WorkloadError, match=rf"{trace}:2: input_tokens 2500 is outside tasks\.t\.input_tokens"):
        build_workload(cfg, "smollm2-135m", "t", smollm2_dir, tmp_path / "w.jsonl")
