"""config.yaml reproduces the users' specification; bad configs fail fast naming the key."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingbench.host.config import ConfigError, expand_cells, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "spec" / "matrix.yaml"
ARMS = ["transformers-naive", "transformers-serve", "tgi", "vllm"]


@pytest.fixture(scope="module")
def seed_yaml() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def spec() -> dict:
    if not SPEC.exists():
        pytest.skip(f"{SPEC} not present (it sits beside the checkout)")
    return yaml.safe_load(SPEC.read_text())


def test_seed_matrix_has_128_cells_with_the_spec_values():
    matrix = spec()
    cells = expand_cells(load_config(ROOT / "config.yaml"))
    assert len(cells) == 4 * 4 * 4 * 2 == 128
    assert {c["framework"] for c in cells} == set(ARMS)
    assert {c["model"] for c in cells} == set(matrix["models"])
    for c in cells:
        task = matrix["tasks"][c["task"]]
        gen = matrix["generation"][c["model"]][c["task"]]
        assert c["input_tokens"] == task["input_tokens"] and c["output_tokens"] == task["output_tokens"]
        assert (c["temperature"], c["top_p"], c["max_tokens"]) == (gen["temperature"], gen["top_p"], gen["max_tokens"])


def test_models_and_hub_ids_match_the_spec():
    matrix = spec()
    cfg = load_config(ROOT / "config.yaml")
    assert {m: cfg.models[m].hf_id for m in cfg.models} == {m: v["hf_id"] for m, v in matrix["models"].items()}
    assert {m: cfg.models[m].params for m in cfg.models} == {m: v["params"] for m, v in matrix["models"].items()}


def test_cli_cells_prints_the_same_matrix():
    out = subprocess.run([sys.executable, "-m", "servingbench.cli", "cells", "--config", str(ROOT / "config.yaml")],
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == expand_cells(load_config(ROOT / "config.yaml"))
    assert set(rows[0]) == {"framework", "model", "task", "mode", "temperature", "top_p", "max_tokens",
                            "input_tokens", "output_tokens"}


def test_cpu_profile_is_valid_and_small():
    cfg = load_config(ROOT / "configs" / "cpu.yaml")
    cells = expand_cells(cfg)
    assert {c["framework"] for c in cells} == {"transformers-naive", "transformers-serve", "vllm", "llamacpp"}
    assert {c["model"] for c in cells} == {"smollm2-135m"} and len(cells) == 32
    assert cfg.device == "cpu"


def test_the_cpu_demo_searches_capacity_for_every_arm_on_windows_that_support_its_slos():
    """Issue 13 on the CPU demo: a capacity search per arm (Snakemake plans one per arm), windows
    and a probe large enough for the SLO sets' percentile (servingbench.runtime.slo.min_samples), so
    that the report's first section can rank every arm."""
    from servingbench.host.config import sweep_arms
    from servingbench.runtime.slo import min_samples

    cfg = load_config(ROOT / "configs" / "cpu.yaml")
    cap = cfg.sweeps.capacity
    assert cap is not None and cap.tasks
    assert sweep_arms(cfg) == list(cfg.frameworks) and len(cfg.frameworks) == 4
    for name in cap.slos or cfg.slo:
        assert cap.min_requests >= min_samples(cfg.slo[name].percentile), name
    assert cap.probe_requests >= cap.min_requests  # the probe is a zero-load window (servingbench.runtime.capacity)
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules",
                          "--configfile", "configs/cpu.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = dict(line.split() for line in res.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit())
    for arm in cfg.frameworks:
        assert jobs.get("capacity_" + arm.replace("-", "_") + "_smollm2_135m") == str(len(cap.tasks)), res.stdout


def _mutate(data: dict, path: str, value) -> dict:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

# (what is wrong, key path to change, new value, text the error must contain)
BAD = [
    ("unknown arm", "frameworks.sglang", {"framework": "vllm"}, "sglang"),
    ("unknown framework family", "frameworks.vllm.framework", "trt", "frameworks.vllm.framework"),
    ("typo'd top-level key", "runn", {}, "runn"),
    ("typo'd run key", "run.request_per_cell", 3, "run.request_per_cell"),
    ("temperature 0", "generation.gpt2.chat.temperature", 0, "generation.gpt2.chat.temperature"),
    ("negative temperature", "generation.phi-2.qa.temperature", -0.5, "generation.phi-2.qa.temperature"),
    ("top_p 0", "generation.gpt2.qa.top_p", 0, "generation.gpt2.qa.top_p"),
    ("top_p above 1", "generation.gpt2.qa.top_p", 1.5, "generation.gpt2.qa.top_p"),
    ("max_tokens 0", "generation.gpt2.code.max_tokens", 0, "generation.gpt2.code.max_tokens"),
    ("missing generation entry", "generation.gpt2.code", _DELETE, "generation.gpt2.code"),
    ("generation for unknown model", "generation.gpt3", {}, "generation.gpt3"),
    ("generation for unknown task", "generation.gpt2.poetry", {"temperature": 1, "top_p": 0.9, "max_tokens": 5},
     "generation.gpt2.poetry"),
    ("input range beyond gpt2's context", "tasks.summarization.input_tokens", [200, 1000], "tasks.summarization"),
    ("inverted range", "tasks.chat.input_tokens", [100, 20], "tasks.chat.input_tokens"),
    ("zero range", "tasks.qa.output_tokens", [0, 30], "tasks.qa.output_tokens"),
    ("range of wrong type", "tasks.code.input_tokens", "10-50", "tasks.code.input_tokens"),
    ("concurrency 0", "run.cell_concurrency", [1, 0], "run.cell_concurrency"),
    ("sweep concurrency 0", "sweeps.concurrency.levels", [0], "sweeps.concurrency.levels"),
    ("unknown sweep task", "sweeps.concurrency.task", "poetry", "sweeps.concurrency.task"),
    ("unknown mode", "modes", ["sync", "batch"], "modes"),
    ("empty matrix", "frameworks", {}, "frameworks"),
    ("no models", "models", {}, "models"),
    ("unknown weights", "weights", "random", "weights"),
    ("unknown output policy", "run.output_length_policy", "exact", "run.output_length_policy"),
    ("requests 0", "run.requests_per_cell", 0, "run.requests_per_cell"),
    ("string where number", "run.request_timeout_s", "fast", "run.request_timeout_s"),
    ("secret in env", "frameworks.vllm.env", {"HF_TOKEN": "hf_x"}, "HF_TOKEN"),
    ("architecture without layers", "models.gpt2.architecture.num_hidden_layers", _DELETE, "models.gpt2.architecture"),
    ("typo'd SLO limit", "slo.interactive.ttft", 100, "slo.interactive.ttft"),
    ("negative SLO limit", "slo.server.tpot_ms", -5, "slo.server.tpot_ms"),
    ("zero SLO limit", "slo.server.ttft_ms", 0, "slo.server.ttft_ms"),
    ("SLO percentile 0", "slo.server.percentile", 0, "slo.server.percentile"),
    ("SLO percentile above 100", "slo.interactive.percentile", 100.5, "slo.interactive.percentile"),
    ("SLO set without a limit", "slo.batch", {"percentile": 90}, "slo.batch"),
    ("SLO override of an unknown task", "slo.interactive.tasks", {"poetry": {"ttft_ms": 900}}, "slo.interactive.tasks.poetry"),
    ("negative SLO override", "slo.interactive.tasks", {"summarization": {"ttft_ms": -1}}, "slo.interactive.tasks.summarization.ttft_ms"),
    ("bad SLO set name", "slo", {"my slo": {"ttft_ms": 5}}, "slo"),
    ("no SLO set", "slo", {}, "slo"),
    ("trials 0", "run.trials", 0, "run.trials"),
    ("gpus 0", "frameworks.vllm.gpus", 0, "frameworks.vllm.gpus"),
    ("capacity task unknown", "sweeps.capacity.tasks", ["poetry"], "sweeps.capacity.tasks"),
    ("capacity SLO set unknown", "sweeps.capacity.slos", ["batch"], "sweeps.capacity.slos"),
    ("capacity too few requests for p99", "sweeps.capacity.min_requests", 20, "sweeps.capacity.min_requests"),
    ("capacity burstiness without gamma", "sweeps.capacity.burstiness", 2.0, "sweeps.capacity"),
    ("capacity negative burstiness", "sweeps.capacity.burstiness", -1, "sweeps.capacity.burstiness"),
    ("capacity precision 0", "sweeps.capacity.precision", 0, "sweeps.capacity.precision"),
    ("capacity growth 1", "sweeps.capacity.growth", 1, "sweeps.capacity.growth"),
    ("capacity stall_s 0", "sweeps.capacity.stall_s", 0, "sweeps.capacity.stall_s"),
]


@pytest.mark.parametrize("what,path,value,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_config_fails_naming_the_key(seed_yaml, what, path, value, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(_mutate(seed_yaml, path, value), "config.yaml")
    assert needle in str(err.value), str(err.value)
    assert str(err.value).startswith("config.yaml:")


@pytest.mark.parametrize("text,needle", [
    ("frameworks: [vllm\n", "not valid YAML"),
    ("", "empty"),
    ("- just\n- a list\n", "not a mapping"),
])
def test_unparseable_config_files(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(f)


def test_cli_reports_config_errors_in_one_line(tmp_path, seed_yaml):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(_mutate(seed_yaml, "generation.gpt2.chat.temperature", 0)))
    res = subprocess.run([sys.executable, "-m", "servingbench.cli", "cells", "--config", str(f)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "generation.gpt2.chat.temperature" in res.stderr and "Traceback" not in res.stderr


def test_snakemake_plans_every_seed_cell():
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    counts = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    measured = sum(n for job, n in counts.items() if job.startswith("measure_"))
    assert measured == 128, res.stdout


def test_snakemake_rejects_a_bad_config_before_running(tmp_path, seed_yaml):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(_mutate(seed_yaml, "generation.gpt2.chat.top_p", 2)))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(f)],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0
    assert "generation.gpt2.chat.top_p" in res.stdout + res.stderr


# -- issue 19: names, duplicate keys, preparation in any arm set, exact dummy vocabulary -------------
@pytest.mark.parametrize("name", ["gpt2", "phi-2", "llama-2-7b-chat", "Qwen2.5-7B", "a", "x_1", "7b", "a" * 64])
def test_ordinary_names_are_identifiers(name):
    from servingbench.host.config import check_name

    assert check_name(name) is None


@pytest.mark.parametrize("name", ["", "..", "a..b", ".x", "-x", "_x", "a/b", "a b", "$(x)", "a" * 65, "é", None, 3])
def test_names_that_are_not_identifiers(name):
    from servingbench.host.config import check_name

    assert "is not allowed" in check_name(name)


def test_duplicate_keys_are_named_with_both_lines(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("device: cpu\nrun:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line 4: duplicate key 'seed' \(first at line 3\)"):
        load_config(f)
    f.write_text("device: cpu\nweights: real\ndevice: cuda\n")
    with pytest.raises(ConfigError, match=r"line 3: duplicate key 'device' \(first at line 1\)"):
        load_config(f)


def test_yaml_merge_keys_are_not_duplicates(tmp_path, seed_yaml):
    """An anchor merged into a mapping and overridden there is YAML's own feature, not a mistake."""
    from servingbench.host.config import read_yaml

    f = tmp_path / "c.yaml"
    f.write_text("base: &b {temperature: 0.5, top_p: 0.9}\nuse: {<<: *b, temperature: 0.7}\n")
    assert read_yaml(f)["use"] == {"temperature": 0.7, "top_p": 0.9}


def test_preparation_image_without_transformers_arms(seed_yaml):
    """The prepare_model and build_workload rules ask for the Transformers image in any arm set
    (it used to be a KeyError when the config had no transformers-naive arm)."""
    from servingbench.host.config import image_for, load_images

    cfg = parse_config({**seed_yaml, "frameworks": {"vllm": {"framework": "vllm"}}}, "config.yaml")
    assert image_for(cfg, "transformers-naive") == load_images()["seed"]["transformers-naive"]


def test_validate_checks_the_dummy_vocabulary_exactly(tmp_path, seed_yaml):
    """phi3's eos id is 32000 in transformers' defaults: a vocabulary of 32000 ids passes the
    quick check at parse time (which cannot import transformers) and is caught by validate."""
    data = copy.deepcopy(seed_yaml)
    data["weights"] = "dummy"
    data["models"]["gpt2"]["architecture"] = {"model_type": "phi3", "num_hidden_layers": 2, "hidden_size": 64,
                                              "num_attention_heads": 4, "vocab_size": 32000,
                                              "max_position_embeddings": 1024}
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(data))
    load_config(f)  # the quick check cannot know phi3's ids
    res = subprocess.run([sys.executable, "-m", "servingbench.cli", "validate", "--config", str(f)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "models.gpt2.architecture.vocab_size: 32000 is too small" in res.stderr and "32001" in res.stderr
    ours = [ln for ln in res.stderr.splitlines() if ln.startswith("servingbench:")]  # transformers warns too
    assert len(ours) == 1 and ours[0].startswith(f"servingbench: {f}: models.gpt2"), res.stderr


def test_slo_sets_default_to_mlperf_and_tasks_override_them(seed_yaml):
    from servingbench.host.config import slo_specs

    data = copy.deepcopy(seed_yaml)
    data.pop("slo")
    cfg = parse_config(data, "config.yaml")
    assert {s.name: (s.ttft_ms, s.tpot_ms, s.e2e_ms, s.percentile) for s in slo_specs(cfg, "chat")} == {
        "interactive": (500, 30, None, 99), "server": (2000, 100, None, 99)}
    data["slo"] = {"interactive": {"ttft_ms": 500, "tpot_ms": 30, "tasks": {"summarization": {"ttft_ms": 1500}}}}
    cfg = parse_config(data, "config.yaml")
    summ, = slo_specs(cfg, "summarization")
    chat, = slo_specs(cfg, "chat")
    assert (summ.ttft_ms, summ.tpot_ms, chat.ttft_ms) == (1500, 30, 500)


def test_stall_s_enters_the_capacity_spec_only_when_set(seed_yaml):
    """A capacity spec written before stall_s existed stays byte-identical at its default (Snakemake
    compares it as a param: no finished search reruns for it); another value is in the spec and
    read back from it."""
    from servingbench.host.config import capacity_sweep_spec
    from servingbench.runtime.spec import CellSpec

    base = capacity_sweep_spec(parse_config(seed_yaml, "config.yaml"), "vllm", "gpt2", "chat")
    assert base.capacity.stall_s == 2.0 and "stall_s" not in base.to_json()
    changed = copy.deepcopy(seed_yaml)
    changed["sweeps"]["capacity"]["stall_s"] = 0.5
    other = capacity_sweep_spec(parse_config(changed, "config.yaml"), "vllm", "gpt2", "chat")
    assert '"stall_s":0.5' in other.to_json()
    assert CellSpec.from_dict(json.loads(other.to_json())).capacity.stall_s == 0.5
    assert CellSpec.from_dict(json.loads(base.to_json())).capacity.stall_s == 2.0


def test_slo_and_capacity_settings_do_not_change_the_cells_hash(seed_yaml):
    """Goodput is judged from stored records: a new SLO reruns no cell (the capacity search
    carries its SLO sets in its own spec, so it alone reruns)."""
    from servingbench.host.config import capacity_sweep_spec, cell_spec

    base = parse_config(seed_yaml, "config.yaml")
    changed = copy.deepcopy(seed_yaml)
    changed["slo"]["interactive"]["ttft_ms"] = 400
    changed["sweeps"]["capacity"]["min_duration_s"] = 30
    other = parse_config(changed, "config.yaml")
    assert cell_spec(base, "vllm", "gpt2", "chat", "stream").to_json() == \
        cell_spec(other, "vllm", "gpt2", "chat", "stream").to_json()
    a, b = capacity_sweep_spec(base, "vllm", "gpt2", "chat"), capacity_sweep_spec(other, "vllm", "gpt2", "chat")
    assert a.to_json() != b.to_json() and b.capacity.slos[0].ttft_ms == 400


def test_run_settings_added_since_leave_older_results_config_hash_at_their_defaults():
    """examples/h200-dummy's lease-7 results were written before run.client_cpus existed: with
    every setting added since at its default (NEW_RUN_DEFAULTS) the example's config still hashes
    as they recorded, so a kit upgrade flags no cell "config edited since"; any other value does."""
    from servingbench.host.config import NEW_RUN_DEFAULTS, config_hash

    root = ROOT / "examples" / "h200-dummy"
    recorded = json.loads((root / "results/sweeps/vllm/gpt2/capacity-chat.json").read_text())
    cfg = load_config(root / "config.yaml")
    assert config_hash(cfg) == recorded["provenance"]["config_hash"]
    for key, default in NEW_RUN_DEFAULTS.items():
        other = cfg.model_copy(update={"run": cfg.run.model_copy(update={key: default + 1})})
        assert config_hash(other) != config_hash(cfg), key
