"""The new task kinds and the prefix-caching setting in the config: bad settings fail naming the
key, the seed's cells are unchanged, an arm's task list shapes the matrix."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingbench.host.aggregate import expected_entries
from servingbench.host.config import ConfigError, arm_tasks, cell_spec, expand_cells, load_config, parse_config, sweep_arms

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "configs" / "cpu-workloads.yaml"


@pytest.fixture()
def data() -> dict:
    return yaml.safe_load(WORKLOADS.read_text())


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "cfg.yaml")
    return str(exc.value)


def test_the_workloads_profile_is_valid_and_runs_every_task_on_every_arm():
    cfg = load_config(WORKLOADS)
    cells = expand_cells(cfg)
    assert {(c["framework"], c["task"]) for c in cells} == {
        (a, t) for a in ("transformers-naive", "transformers-serve", "transformers-serve-prefix-cache", "vllm",
                         "vllm-prefix-cache", "llamacpp", "llamacpp-prefix-cache")
        for t in ("chat-multiturn", "shared-prefix", "trace-replay")}
    on = cell_spec(cfg, "vllm-prefix-cache", "smollm2-135m", "shared-prefix", "stream")
    off = cell_spec(cfg, "vllm", "smollm2-135m", "shared-prefix", "stream")
    assert on.server.prefix_caching and not off.server.prefix_caching
    assert on.server.adapter == "vllm" and on.server.adapter_name == "vllm" and off.server.adapter_name == "vllm"
    assert on.workload == "shared_prefix" and cell_spec(cfg, "vllm", "smollm2-135m", "chat-multiturn", "stream").workload == "multiturn"
    trace = cell_spec(cfg, "vllm", "smollm2-135m", "trace-replay", "stream")
    shipped = (ROOT / "servingbench" / "data" / "traces" / "synthetic.jsonl").read_text().splitlines()
    assert (trace.workload, trace.requests, trace.concurrency_levels, trace.max_lateness_ms) == ("trace", len(shipped), (256,), 40.0)
    assert json.loads(trace.to_json())["workload"] == "trace"


def test_the_seeds_cells_keep_their_specs():
    """No new key in a seed cell's spec (nor the Snakemake params made of it): nothing reruns."""
    for path in ("config.yaml", "configs/cpu.yaml"):
        cfg = load_config(ROOT / path)
        for arm in cfg.frameworks:
            spec = json.loads(cell_spec(cfg, arm, next(iter(cfg.models)), "chat", "stream").to_json())
            assert not {"workload", "max_lateness_ms"} & set(spec) and "adapter" not in spec["server"]
            assert spec["server"]["prefix_caching"] is False


def test_the_gpu_profile_has_the_new_tasks_with_caching_on_and_off():
    cfg = load_config(ROOT / "configs" / "h100-dummy.yaml")
    kinds = {t: getattr(s, "workload", "prompts") for t, s in cfg.tasks.items()}
    assert {"multiturn", "shared_prefix", "trace"} <= set(kinds.values())
    twins = [a for a, s in cfg.frameworks.items() if s.prefix_caching]
    assert sorted(twins) == ["transformers-serve-prefix-cache", "vllm-prefix-cache"]
    for twin in twins:
        assert set(arm_tasks(cfg, twin)) == {t for t, k in kinds.items() if k != "prompts"}
        assert twin not in sweep_arms(cfg)
    seed_cells = [c for c in expand_cells(cfg) if kinds[c["task"]] == "prompts"]
    assert {c["framework"] for c in seed_cells}.isdisjoint(twins)  # the seed's cells keep caching off


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["tasks"]["chat-multiturn"].update(workload="multi_turn"),
     "cfg.yaml: tasks.chat-multiturn: workload: unknown kind; allowed: prompts, multiturn, shared_prefix, trace"),
    (lambda d: d["tasks"]["chat-multiturn"].update(turns=1), "cfg.yaml: tasks.chat-multiturn.turns: "),
    (lambda d: d["tasks"]["chat-multiturn"].update(think_time_s=[0.5, 0.1]), "tasks.chat-multiturn.think_time_s: must be"),
    (lambda d: d["tasks"]["chat-multiturn"].update(turn=3), "tasks.chat-multiturn.turn: unknown key (typo?)"),
    (lambda d: d["tasks"]["chat-multiturn"].update(turns=60), "tasks.chat-multiturn.turns: up to"),
    (lambda d: d["tasks"]["shared-prefix"].update(groups=7), "tasks.shared-prefix.groups: 7 groups need"),
    (lambda d: d["tasks"]["shared-prefix"].update(prefix_hit_rate=0.9), "tasks.shared-prefix.prefix_hit_rate: 0.9 is out of reach"),
    (lambda d: d["tasks"]["shared-prefix"].update(prefix_tokens=8), "tasks.shared-prefix.prefix_tokens: "),
    (lambda d: d["tasks"]["trace-replay"].update(trace="nope.jsonl"), "tasks.trace-replay.trace: no such trace file 'nope.jsonl'"),
    (lambda d: d["tasks"]["trace-replay"].update(format="burstgpt"), "tasks.trace-replay.format: "),
    (lambda d: d["frameworks"]["transformers-naive"].update(prefix_caching=True),
     "cfg.yaml: frameworks.transformers-naive.prefix_caching: transformers-naive has no prefix cache"),
    (lambda d: d["frameworks"]["transformers-serve-prefix-cache"].update(server_args=[]),
     "frameworks.transformers-serve-prefix-cache.prefix_caching: transformers-serve has a prefix cache only with "
     "--continuous-batching"),
    (lambda d: d["frameworks"]["vllm"].update(tasks=["chat"]), "frameworks.vllm.tasks: unknown task 'chat'"),
    (lambda d: d.update(sweeps={"concurrency": {"task": "chat-multiturn"}, "context": None}),
     "sweeps.concurrency.task: 'chat-multiturn' is a multiturn task"),
])
def test_bad_settings_fail_naming_the_key(data, edit, needle):
    edit(data)
    msg = _error(data)
    assert needle in msg, msg


def test_a_bad_trace_line_fails_the_config_naming_file_line_and_key(data, tmp_path):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"offset_ms": 0, "input_tokens": 100, "output_tokens": 10}\n'
                   '{"offset_ms": -5, "input_tokens": 100, "output_tokens": 10}\n')
    data["tasks"]["trace-replay"]["trace"] = str(bad)
    assert f"{bad}:2: offset_ms: must be a number >= 0 (got -5)" in _error(data)


def test_an_arm_task_list_limits_its_cells_and_leaves_out_its_sweeps(tmp_path):
    data = yaml.safe_load((ROOT / "configs" / "cpu.yaml").read_text())
    data["frameworks"]["vllm-prefix-cache"] = {**copy.deepcopy(data["frameworks"]["vllm"]), "adapter": "vllm",
                                               "prefix_caching": True, "tasks": ["qa"]}
    cfg = parse_config(data, "cfg")
    assert {c["task"] for c in expand_cells(cfg) if c["framework"] == "vllm-prefix-cache"} == {"qa"}
    assert "vllm-prefix-cache" not in sweep_arms(cfg)
    entries = [e for e in expected_entries(cfg, tmp_path) if e.arm == "vllm-prefix-cache"]
    assert [(e.kind, e.task) for e in entries] == [("cell", "qa"), ("cell", "qa")]
    with pytest.raises(ConfigError, match="does not run task 'chat'"):
        cell_spec(cfg, "vllm-prefix-cache", "smollm2-135m", "chat", "stream")


def test_cli_names_the_key_in_one_line(tmp_path, data):
    data["tasks"]["shared-prefix"]["groups"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    res = subprocess.run([sys.executable, "-m", "servingbench.cli", "validate", "--config", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith(f"servingbench: {path}: tasks.shared-prefix.groups: ")


def test_transformers_serve_is_started_with_its_prefix_sharing_set(data):
    """Transformers 5 shares prefix blocks by default; the arm's setting decides it instead."""
    pytest.importorskip("transformers")
    from transformers import ContinuousBatchingConfig

    from servingbench.runtime.frameworks import get_adapter
    from servingbench.runtime.frameworks.servers.transformers_serve_cb import set_block_sharing

    cfg = parse_config(data, "cfg")
    for arm, on in (("transformers-serve", False), ("transformers-serve-prefix-cache", True)):
        server = cell_spec(cfg, arm, "smollm2-135m", "shared-prefix", "stream").server
        launch = get_adapter(server.adapter_name).launch(server, "127.0.0.1", 8000)
        assert launch.argv[1:4] == ["-m", "servingbench.runtime.frameworks.servers.transformers_serve_cb", "serve"]
        assert launch.env["SERVINGBENCH_PREFIX_CACHING"] == ("1" if on else "0")
    default = ContinuousBatchingConfig.__init__
    try:
        assert ContinuousBatchingConfig().allow_block_sharing is True  # what `transformers serve` gets alone
        assert set_block_sharing(False)
        assert ContinuousBatchingConfig(num_blocks=8).allow_block_sharing is False
        assert ContinuousBatchingConfig(allow_block_sharing=True).allow_block_sharing is True
    finally:
        ContinuousBatchingConfig.__init__ = default
