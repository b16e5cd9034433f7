"""scripts/device/profile_arm.py reads py-spy's raw (collapsed) stacks into per-thread shares: a
recorded-format sample (the shape py-spy 0.4.2 wrote on this machine for a naive server) whose
counts are known, so every share below is exact."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts" / "device"))

import profile_arm  # noqa: E402

RAW = """\
thread (7244): generate_0;_bootstrap (threading.py:1012);generate (transformers/generation/utils.py:2400);forward (transformers/models/gpt2/modeling_gpt2.py:300) 6
thread (7244): generate_0;_bootstrap (threading.py:1012);generate (transformers/generation/utils.py:2400);put (servingbench/runtime/frameworks/servers/transformers_naive_server.py:80) 2
thread (7244): generate_0;_bootstrap (threading.py:1012);generate (transformers/generation/utils.py:2410) 2
thread (7245): handler;get (queue.py:180);wait (threading.py:355) 5
not a sample line
"""


def test_summarise_counts_own_and_inclusive_shares_per_thread() -> None:
    out = profile_arm.summarise(RAW)
    assert list(out) == ['thread (7244): generate_0', 'thread (7245): handler']  # most samples first
    gen = out['thread (7244): generate_0']
    assert gen["samples"] == 10
    assert gen["own"][0] == ["forward (modeling_gpt2.py)", 6, 0.6]
    own = {f: n for f, n, _ in gen["own"]}
    assert own == {"forward (modeling_gpt2.py)": 6, "put (transformers_naive_server.py)": 2, "generate (utils.py)": 2}
    incl = {f: share for f, _, share in gen["inclusive"]}
    assert incl["generate (utils.py)"] == 1.0 and incl["_bootstrap (threading.py)"] == 1.0
    assert out['thread (7245): handler']["own"] == [["wait (threading.py)", 5, 1.0]]


def test_frame_names_drop_lines_and_directories() -> None:
    assert profile_arm.frame_name("run (asyncio/runners.py:118)") == "run (runners.py)"
    assert profile_arm.frame_name("0x7fa8cd8a71f5 (libc.so.6)") == "0x7fa8cd8a71f5 (libc.so.6)"
    assert profile_arm.frame_name("weird frame") == "weird frame"
