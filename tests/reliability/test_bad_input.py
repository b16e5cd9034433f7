"""Bad input fails early and clearly: every malformed config stops Snakemake at parse time
(``snakemake -n`` exits non-zero naming the key, before any job, let alone a server, starts),
and a corrupt or foreign file in ``results/`` stops the aggregate and the report naming the
file, without overwriting what a previous run left (``summary.csv``, ``report/index.html``).

The malformed configs: the 28 key-level cases of tests/test_config.py (on config.yaml, reused
as they are), files that do not parse, and more on the CPU profile (a prompt range beyond the
model's context, timeouts of 0, an unknown device, ...).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingbench.runtime.results import cell_path, failure_path, requests_path
from tests.reliability.conftest import MODEL, ROOT, tiny_config_dict
from tests.resultsgen import make_config, write_results
from tests.test_config import BAD, _mutate

SEED = yaml.safe_load((ROOT / "config.yaml").read_text())
TINY = tiny_config_dict()

# (what is wrong, YAML text, text Snakemake's output must contain)
CASES: list[tuple[str, str, str]] = [
    (f"config.yaml: {what}", yaml.safe_dump(_mutate(SEED, path, value)), needle) for what, path, value, needle in BAD
]
# Files that do not parse: Snakemake reads --configfile itself, before the workflow's own
# checks, and says only this much (`servingbench validate --config F` names the line).
CASES += [
    ("YAML syntax error", "frameworks: [vllm\n", "Config file is not valid JSON or YAML"),
    ("YAML with a tab in the indentation", "run:\n\trequests_per_cell: 3\n", "Config file is not valid JSON or YAML"),
    ("empty file", "", "Config file must be given as JSON or YAML with keys at top level"),
    ("a list, not a mapping", "- vllm\n- tgi\n", "Config file must be given as JSON or YAML with keys at top level"),
]
# More, on the CPU profile (configs/cpu.yaml cut down): (what, key path, value, needle).
MORE = [
    ("prompt range beyond the model's context", "tasks.chat.input_tokens", [20, 5000], "tasks.chat.input_tokens"),
    ("max_model_len below a task's need", "run.max_model_len", 64, "tasks.chat.input_tokens"),
    ("concurrency level 0 only", "run.cell_concurrency", [0], "run.cell_concurrency"),
    ("no concurrency levels", "run.cell_concurrency", [], "run.cell_concurrency"),
    ("server start timeout 0", "run.server_start_timeout_s", 0, "run.server_start_timeout_s"),
    ("request timeout negative", "run.request_timeout_s", -5, "run.request_timeout_s"),
    ("gpu_memory_utilization above 1", "run.gpu_memory_utilization", 1.5, "run.gpu_memory_utilization"),
    ("unknown device", "device", "tpu", "device"),
    ("unknown profile", "profile", "nightly", "profile"),
    ("no modes", "modes", [], "modes"),
    ("unknown dtype", "run.dtype", "int4", "run.dtype"),
    ("negative request rate", "run.request_rate", -1, "run.request_rate"),
    ("inverted output range", "tasks.chat.output_tokens", [12, 8], "tasks.chat.output_tokens"),
    ("context sweep prompt length 0", "sweeps.context", {"prompt_tokens": [0]}, "sweeps.context.prompt_tokens"),
    ("a secret-looking env key", "frameworks.transformers-naive.env", {"MY_SECRET": "x"}, "MY_SECRET"),
    ("an API key in server_args", "frameworks.transformers-naive.server_args", ["--api-key", "abc12345"],
     "frameworks.transformers-naive.server_args[1]: the value of --api-key is a credential"),
    ("a token-shaped env value", "frameworks.transformers-naive.env", {"EXTRA": "hf_" + "t" * 34},
     "frameworks.transformers-naive.env.EXTRA: looks like a credential"),
    ("frameworks as a list", "frameworks", ["transformers-naive"], "frameworks"),
    ("no tasks", "tasks", {}, "tasks"),
]
CASES += [(f"cpu profile: {what}", yaml.safe_dump(_mutate(TINY, path, value)), needle)
          for what, path, value, needle in MORE]

# Names of arms, models and tasks are identifiers (issue 19, class 2): each of these would reach
# a path (results/cells/ARM/MODEL/TASK, models/MODEL) or a shell line. SENTINEL is what the
# command substitutions would create, in the job's folder; no run may make it.
BAD_NAMES = ["$(touch SENTINEL)", "`touch SENTINEL`", "x;touch SENTINEL", "x && touch SENTINEL", "x|tee SENTINEL",
             ">SENTINEL", "../escape", "../../results", "a/b", "/abs", "a b", "tab\there", "line\nbreak", "..",
             "x..y", ".hidden", "-rf", "_leading", "x'y", 'x"y', "*", "x?", "x$HOME", "{a,b}", "é", "x" * 65, "",
             "x\\y", "#comment", "~user"]


def _renamed(section: str, new: str) -> dict:
    """TINY with its one arm, model or task renamed (and every reference to it)."""
    data = copy.deepcopy(TINY)
    old = next(iter(data[section]))
    data[section] = {new: data[section][old]}
    if section == "models":
        data["generation"] = {new: data["generation"][old]}
    elif section == "tasks":
        data["generation"] = {m: {new: g[old]} for m, g in data["generation"].items()}
    return data


NAME_SECTIONS = {"models": BAD_NAMES, "tasks": BAD_NAMES[:12] + ["context"], "frameworks": BAD_NAMES[:12]}
CASES += [(f"{section} name {name!r}", yaml.safe_dump(_renamed(section, name)), f"{section}: name")
          for section, names in NAME_SECTIONS.items() for name in names]

# Unbounded or impossible settings, and values that would make a recorded setting untrue
# (issue 19, classes 1 and 7): (what, key path, value, needle).
IMPOSSIBLE = [
    ("concurrency 10^6", "run.cell_concurrency", [1, 10**6], "run.cell_concurrency"),
    ("concurrency 4097", "run.cell_concurrency", [4097], "run.cell_concurrency"),
    ("sweep concurrency 10^6", "sweeps.concurrency", {"task": "chat", "levels": [1, 10**6]}, "sweeps.concurrency.levels"),
    ("a million requests per cell", "run.requests_per_cell", 10**6, "run.requests_per_cell"),
    ("a million warm-up requests", "run.warmup_requests", 10**6, "run.warmup_requests"),
    ("a million requests per sweep level", "sweeps.concurrency", {"task": "chat", "requests_per_level": 10**6},
     "sweeps.concurrency.requests_per_level"),
    ("a million requests per context length", "sweeps.context", {"prompt_tokens": [128], "requests_per_length": 10**6},
     "sweeps.context.requests_per_length"),
    ("workload beyond 100000 distinct prompts", "run", {**TINY["run"], "requests_per_cell": 60000,
                                                         "cell_concurrency": [1, 2]}, "the chat workload would need"),
    ("request rate 10^6/s", "run.request_rate", 1e6, "run.request_rate"),
    ("max_model_len 10^9", "run.max_model_len", 10**9, "run.max_model_len"),
    ("request timeout of ten years", "run.request_timeout_s", 3.2e8, "run.request_timeout_s"),
    ("start timeout of ten years", "run.server_start_timeout_s", 3.2e8, "run.server_start_timeout_s"),
    ("monitor interval 0.1 ms", "run.monitor_interval_s", 0.0001, "run.monitor_interval_s"),
    ("idle timeout infinite", "run.server_idle_timeout_s", float("inf"), "run.server_idle_timeout_s"),
    ("context sweep all beyond the context", "sweeps.context", {"prompt_tokens": [9000, 20000]},
     "sweeps.context.prompt_tokens"),
    ("context sweep one token beyond the context", "sweeps.context", {"prompt_tokens": [4096 - 15], "output_tokens": 16},
     "sweeps.context.prompt_tokens"),
    ("context sweep length 10^9", "sweeps.context", {"prompt_tokens": [10**9]}, "sweeps.context.prompt_tokens"),
    ("context sweep output 10^9 tokens", "sweeps.context", {"prompt_tokens": [128], "output_tokens": 10**9},
     "sweeps.context.output_tokens"),
    ("hidden size not divisible by heads", "models.smollm2-135m.architecture.hidden_size", 577,
     "architecture: hidden_size"),
    ("kv heads not dividing heads", "models.smollm2-135m.architecture.num_key_value_heads", 4,
     "architecture: num_key_value_heads"),
    ("zero layers", "models.smollm2-135m.architecture.num_hidden_layers", 0, "architecture: num_hidden_layers"),
    ("layers as text", "models.smollm2-135m.architecture.num_hidden_layers", "thirty", "architecture: num_hidden_layers"),
    ("context of 10^9 positions", "models.smollm2-135m.architecture.max_position_embeddings", 10**9,
     "architecture: max_position_embeddings"),
    ("model dtype int3", "models.smollm2-135m.dtype", "int3", "models.smollm2-135m.dtype"),
    ("hf_id with a shell substitution", "models.smollm2-135m.hf_id", "x/$(touch SENTINEL)", "models.smollm2-135m.hf_id"),
    ("hf_id leaving its folder", "models.smollm2-135m.hf_id", "../../etc", "models.smollm2-135m.hf_id"),
    ("hf_id with a space", "models.smollm2-135m.hf_id", "Hugging Face/SmolLM2", "models.smollm2-135m.hf_id"),
    ("image with a shell substitution", "frameworks.transformers-naive.image", "x$(touch SENTINEL)",
     "frameworks.transformers-naive.image"),
    ("image with a space", "frameworks.transformers-naive.image", "docker://a b", "frameworks.transformers-naive.image"),
    ("env name with '='", "frameworks.transformers-naive.env", {"A=B": "1"}, "frameworks.transformers-naive.env"),
    ("env name with a space", "frameworks.transformers-naive.env", {"MY VAR": "1"}, "frameworks.transformers-naive.env"),
]
DUMMY = {**TINY, "weights": "dummy"}
IMPOSSIBLE_DUMMY = [  # a dummy tokenizer needs 256 byte tokens + its specials, and every special id below vocab_size
    ("dummy vocab 100", "models.smollm2-135m.architecture.vocab_size", 100, "architecture.vocab_size"),
    ("dummy vocab 258 (llama ids 1, 2 need 259)", "models.smollm2-135m.architecture",
     {**TINY["models"]["smollm2-135m"]["architecture"], "vocab_size": 258, "bos_token_id": 1, "eos_token_id": 2},
     "architecture.vocab_size"),
    ("dummy gpt2 vocab below its <|endoftext|> id 50256", "models.smollm2-135m.architecture",
     {**TINY["models"]["smollm2-135m"]["architecture"], "model_type": "gpt2", "vocab_size": 50000},
     "architecture.vocab_size"),
    ("dummy eos id beyond the vocabulary", "models.smollm2-135m.architecture",
     {**TINY["models"]["smollm2-135m"]["architecture"], "eos_token_id": 60000}, "architecture.vocab_size"),
]
VLLM_TINY = tiny_config_dict(arms=("vllm",))
OWNED_ARGS = [  # flags the kit sets and records itself (class 1): a server_args copy would make the record untrue
    ("prefix caching forced on in server_args", ["--enable-prefix-caching"], "run.prefix_caching"),
    ("prefix caching forced off in server_args", ["--no-enable-prefix-caching"], "run.prefix_caching"),
    ("dtype in server_args", ["--dtype", "float32"], "run.dtype"),
    ("max-model-len= in server_args", ["--max-model-len=512"], "run.max_model_len"),
    ("port in server_args", ["--port", "8000"], "--port"),
]
CASES += [(f"cpu profile: {what}", yaml.safe_dump(_mutate(TINY, path, value)), needle)
          for what, path, value, needle in IMPOSSIBLE]
CASES += [(f"dummy weights: {what}", yaml.safe_dump(_mutate(DUMMY, path, value)), needle)
          for what, path, value, needle in IMPOSSIBLE_DUMMY]
CASES += [(f"vllm arm: {what}", yaml.safe_dump(_mutate(VLLM_TINY, "frameworks.vllm.server_args", args)), needle)
          for what, args, needle in OWNED_ARGS]
# A duplicated key silently dropped its first block before (PyYAML keeps the last one).
_TINY_TEXT = yaml.safe_dump(TINY, sort_keys=False)
CASES += [
    ("duplicated top-level key", _TINY_TEXT + "run:\n  seed: 7\n", "duplicate key 'run'"),
    ("duplicated models block", _TINY_TEXT + yaml.safe_dump({"models": TINY["models"]}), "duplicate key 'models'"),
    ("duplicated nested key", _TINY_TEXT.replace("  seed: 1234\n", "  seed: 1234\n  seed: 99\n"), "duplicate key 'seed'"),
    ("duplicated key in a flow mapping", yaml.safe_dump({k: v for k, v in TINY.items() if k != "generation"})
     + "generation:\n  smollm2-135m:\n    chat: {temperature: 0.9, top_p: 0.95, max_tokens: 12, temperature: 0.5}\n",
     "duplicate key 'temperature'"),
]


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """`snakemake -n` on every bad config (and, as a control, on a good one), through
    snakemake_forker.py: Snakemake's real command-line entry point, imported once."""
    base = tmp_path_factory.mktemp("bad-configs")
    jobs, dirs = [], {}
    controls = [(GOOD, yaml.safe_dump(TINY), ""), (GOOD_VLLM_ONLY, yaml.safe_dump(VLLM_TINY), "")]
    for i, (what, text, _) in enumerate(CASES + controls):
        wd = dirs[what] = base / f"case{i:02d}"
        wd.mkdir()
        (wd / "bad.yaml").write_text(text)
        jobs.append({"argv": ["-n", "--cores", "1", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(wd),
                              "--configfile", str(wd / "bad.yaml")], "out": str(wd / "snakemake.out")})
    (base / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run([sys.executable, str(Path(__file__).with_name("snakemake_forker.py")), str(base / "jobs.json")],
                         capture_output=True, text=True, env=env, timeout=600, cwd=base)
    assert res.returncode == 0, res.stderr[-3000:]
    codes = json.loads(res.stdout.strip().splitlines()[-1])
    return {what: (code, (wd / "snakemake.out").read_text(), wd) for (what, wd), code in zip(dirs.items(), codes)}


GOOD = "control: the same CPU profile, unbroken"
GOOD_VLLM_ONLY = "control: an arm set without the Transformers arms"


def test_the_dry_run_harness_accepts_a_good_config(dry_runs):
    rc, out, wd = dry_runs[GOOD]
    assert rc == 0 and "Building DAG of jobs" in out and "measure_transformers_naive" in out, out[-2000:]


def test_an_arm_set_without_transformers_plans_its_jobs(dry_runs):
    """It used to pass validation and crash Snakemake with KeyError 'transformers-naive' (the image of
    the preparation jobs); preparation runs in the Transformers image whatever arms are measured."""
    rc, out, wd = dry_runs[GOOD_VLLM_ONLY]
    assert rc == 0 and "KeyError" not in out, out[-2000:]
    assert "prepare_model" in out and "build_workload" in out and "measure_vllm" in out, out[-2000:]


def test_no_shell_substitution_ran(dry_runs):
    """Names and values with `$(touch SENTINEL)` and friends were refused before any shell saw them."""
    made = [p for wd in {w for _, _, w in dry_runs.values()} | {ROOT} for p in wd.rglob("SENTINEL*")]
    assert not made, made


@pytest.mark.bad_config
@pytest.mark.parametrize("what,needle", [(w, n) for w, _, n in CASES], ids=[c[0] for c in CASES])
def test_bad_config_stops_snakemake_before_anything_runs(dry_runs, what, needle):
    rc, out, wd = dry_runs[what]
    assert rc != 0, f"accepted: {out[-2000:]}"
    assert needle in out, out[-2000:]
    assert "Building DAG of jobs" not in out, "it got as far as planning jobs"
    assert not (wd / "results").exists() and not (wd / "models").exists(), "something ran"


def test_bad_config_counts():
    """The suite's own claim: at least 20 malformed configs, here and in tests/test_config.py."""
    assert len(BAD) >= 20 and len(CASES) >= 140


NEW_CASES = CASES[len(BAD) + 4 + len(MORE):]  # issue 19's: each names its key in one line


@pytest.mark.parametrize("what,text,needle", NEW_CASES, ids=[c[0] for c in NEW_CASES])
def test_validate_names_the_key_in_one_line(tmp_path, capsys, what, text, needle):
    """`servingbench validate` (in-process: the same code path, without 100 interpreter starts)."""
    from servingbench.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text(text)
    rc = main(["validate", "--config", str(f)])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"servingbench: {f}"), err


# -- corrupt or foreign files in results/ ------------------------------------------------------------
@pytest.fixture(scope="module")
def good_template(tmp_path_factory) -> Path:
    """A previous good run: a synthetic results folder (tests/resultsgen.py), with the
    summary.csv and the report that the workflow's commands made from it."""
    root = tmp_path_factory.mktemp("good-run")
    cfg = make_config(device="cpu", arms=("transformers-naive", "vllm"), tasks=("chat",), sweeps=False, requests=3)
    write_results(cfg, root / "results")
    (root / "cfg.yaml").write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    run = Commands(root)
    for cmd in ("aggregate", "report"):
        rc, out = run(cmd)
        assert rc == 0, out
    return root


@pytest.fixture
def good_run(good_template, tmp_path) -> "Commands":
    shutil.copytree(good_template, tmp_path / "run")
    return Commands(tmp_path / "run")


class Commands:
    """The workflow's aggregate and report commands on one run folder."""

    def __init__(self, root: Path) -> None:
        self.cfg, self.results, self.report = root / "cfg.yaml", root / "results", root / "report" / "index.html"

    def __call__(self, cmd: str) -> tuple[int, str]:
        argv = [sys.executable, "-m", "servingbench.cli", cmd, "--config", str(self.cfg), "--results", str(self.results)]
        if cmd == "report":
            argv += ["--out", str(self.report)]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        return res.returncode, res.stdout + res.stderr

    def kept(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (self.results / "summary.csv", self.results / "summary.parquet",
                                                 self.report)}


def _cell(run: Commands, arm: str = "vllm", mode: str = "stream") -> Path:
    return cell_path(run.results, arm, "smollm2-135m", "chat", mode)


CORRUPT = {
    "truncated result (a crash without the atomic rename)": lambda run: (
        _cell(run), _cell(run).read_bytes()[:300], "corrupt result file, not valid JSON"),
    "binary garbage": lambda run: (_cell(run), os.urandom(64) + b"\xff\xfe", "corrupt result file"),
    "a JSON list": lambda run: (_cell(run), b"[1, 2, 3]", "foreign file, a JSON list"),
    "another tool's JSON": lambda run: (_cell(run), json.dumps({"schema": "mlperf/v4", "kind": "cell"}).encode(),
                                        "foreign file, schema is 'mlperf/v4'"),
    "another cell's result at this path": lambda run: (
        _cell(run), _cell(run, mode="sync").read_bytes(), "foreign file, it describes mode='sync'"),
    "a failure record with an unknown category": lambda run: (
        failure_path(_cell(run, arm="transformers-naive")),
        json.dumps({"schema": "servingbench/failure-v1", "kind": "cell", "category": "gremlins", "reason": "x",
                    "cell": {"arm": "transformers-naive", "model": "smollm2-135m", "task": "chat",
                             "mode": "stream"}}).encode(), "does not match servingbench/failure-v1 at category"),
}


@pytest.mark.fault
@pytest.mark.parametrize("what", list(CORRUPT))
def test_corrupt_or_foreign_result_file_is_refused_by_name(good_run, what):
    before = good_run.kept()
    path, data, needle = CORRUPT[what](good_run)
    if path.name.endswith(".failed.json"):  # a failure record stands where no result is
        _cell(good_run, arm="transformers-naive").unlink()
    path.write_bytes(data)
    for cmd in ("aggregate", "report"):
        rc, out = good_run(cmd)
        assert rc != 0, f"{cmd} accepted it"
        assert str(path) in out and needle in out, out[-2000:]
        assert "Traceback" not in out, out[-3000:]
    assert good_run.kept() == before, "a good summary or report from before was overwritten"


@pytest.mark.fault
def test_corrupt_requests_file_is_refused_by_the_report(good_run):
    before = good_run.kept()
    req = requests_path(_cell(good_run))
    req.write_text(req.read_text() + "{truncated\n")
    rc, out = good_run("report")
    assert rc != 0 and f"{req}:" in out and "corrupt request record" in out, out[-2000:]
    assert "Traceback" not in out
    assert good_run.kept() == before


@pytest.mark.fault
def test_stray_files_beside_the_results_are_ignored(good_run):
    """Files at paths no cell owns (an editor's backup, a note) are not read, so not refused."""
    (_cell(good_run).parent / "stream.json~").write_text("{oops")
    (good_run.results / "cells" / "NOTES.txt").write_text("ran on Tuesday")
    rc, out = good_run("aggregate")
    assert rc == 0, out[-2000:]


# -- a real Snakemake run: hostile names never reach a shell ------------------------------------------
def _snakemake(wd: Path, config: Path, *targets: str) -> tuple[int, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--cores", "1", "--snakefile",
                          str(ROOT / "Snakefile"), "--directory", str(wd), "--configfile", str(config)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=wd)
    return res.returncode, res.stdout + res.stderr


def _sentinels(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("SENTINEL*")]


@pytest.mark.bad_config
@pytest.mark.parametrize("name", ["$(touch SENTINEL)", "../SENTINEL", "a b;touch SENTINEL"])
def test_a_real_run_refuses_a_hostile_model_name_before_any_job(tmp_path, name):
    """Not a dry run: Snakemake is asked to build models/NAME (the prepare_model job, whose shell
    line carries the name) and the whole workflow; both stop at the config, naming the key."""
    wd = tmp_path / "run"
    wd.mkdir()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(_renamed("models", name)))
    for targets in ([f"models/{name}"], []):
        rc, out = _snakemake(wd, cfg, *targets)
        assert rc != 0 and "models: name" in out, out[-2000:]
        assert "Building DAG of jobs" not in out, "it got as far as planning jobs"
    assert not _sentinels(tmp_path, ROOT) and sorted(p.name for p in wd.iterdir()) in ([], [".snakemake"])


def test_a_config_path_with_shell_characters_reaches_its_job_quoted(tmp_path):
    """A real job (prepare_model, dummy weights) whose shell line carries the config's path: a
    folder named with command substitutions and a space. Quoted ({...:q}), it is one argument
    and nothing in it runs; unquoted, `$(touch ...)` would create the sentinel and the space
    would split the path."""
    folder = tmp_path / "cfg $(touch SENTINEL1) `touch SENTINEL2`;touch SENTINEL3"
    folder.mkdir()
    data = copy.deepcopy(TINY)
    data["weights"] = "dummy"
    data["models"] = {"tiny": {"hf_id": "example/tiny", "params": "1M", "architecture": {
        "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 2048}}}
    data["generation"] = {"tiny": TINY["generation"][MODEL]}
    cfg = folder / "my config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    wd = tmp_path / "run"
    wd.mkdir()
    rc, out = _snakemake(wd, cfg, "models/tiny")
    assert rc == 0, out[-3000:]
    assert (wd / "models" / "tiny" / "config.json").exists() and (wd / "models" / "tiny" / "tokenizer.json").exists()
    assert not _sentinels(tmp_path, ROOT, Path.cwd())


# -- stale results: measured under other settings than the config ----------------------------------------
# (what, key path in the config, new value, the result's key that must be named, arms whose files differ)
STALE = [
    ("temperature changed", f"generation.{MODEL}.chat.temperature", 0.5, "generation.temperature", None),
    ("top_p changed", f"generation.{MODEL}.chat.top_p", 0.5, "generation.top_p", None),
    ("max_tokens changed", f"generation.{MODEL}.chat.max_tokens", 50, "generation.max_tokens", None),
    ("model id changed", f"models.{MODEL}.hf_id", "other/model", "server.hf_id", None),
    ("model dtype changed", f"models.{MODEL}.dtype", "float32", "server.dtype", None),
    ("run dtype changed", "run.dtype", "bfloat16", "server.dtype", None),
    ("requests changed", "run.requests_per_cell", 5, "requests", None),
    ("warm-up changed", "run.warmup_requests", 2, "warmup_requests", None),
    ("concurrency changed", "run.cell_concurrency", [1, 2], "concurrency_levels", None),
    ("seed changed", "run.seed", 7, "seed", None),
    ("output policy natural", "run.output_length_policy", "natural", "output_length_policy", None),
    ("request rate set", "run.request_rate", 2.0, "request_rate", None),
    ("request timeout changed", "run.request_timeout_s", 30, "request_timeout_s", None),
    ("prefix caching on", "run.prefix_caching", True, "server.prefix_caching", None),
    ("gpu memory share changed", "run.gpu_memory_utilization", 0.5, "server.gpu_memory_utilization", None),
    ("max_model_len changed", "run.max_model_len", 2048, "server.context_length", None),
    ("profile changed", "profile", "current", "server.profile", None),
    ("weights changed", "weights", "dummy", "server.weights", None),
    ("device changed", "device", "cuda", "server.device", None),
    ("one arm's image changed", "frameworks.vllm.image", "registry.example/vllm:other", "server.image", ("vllm",)),
    ("one arm's server_args changed", "frameworks.vllm.server_args", ["--enforce-eager"], "server.server_args",
     ("vllm",)),
    ("one arm's env changed", "frameworks.vllm.env", {"VLLM_CPU_KVCACHE_SPACE": "2"}, "server.env", ("vllm",)),
]


def _cli(capsys, *argv: str) -> tuple[int, str]:
    from servingbench.cli import main

    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def _changed_config(run: "Commands", path: str, value) -> None:
    run.cfg.write_text(yaml.safe_dump(_mutate(yaml.safe_load(run.cfg.read_text()), path, value)))


@pytest.mark.bad_config
@pytest.mark.parametrize("what,path,value,key,arms", STALE, ids=[s[0] for s in STALE])
def test_stale_results_are_refused_naming_files_and_keys(good_run, capsys, what, path, value, key, arms):
    """aggregate and report refuse results measured under other settings (exit 2), naming every
    such file and the key that differs; the summary and report from before stay as they were."""
    before = good_run.kept()
    _changed_config(good_run, path, value)
    stale = [_cell(good_run, arm, mode) for arm in (arms or ("transformers-naive", "vllm")) for mode in ("sync", "stream")]
    fresh = [_cell(good_run, arm, mode) for arm in {"transformers-naive", "vllm"} - set(arms or ()) if arms
             for mode in ("sync", "stream")]
    for cmd in ("aggregate", "report"):
        argv = [cmd, "--config", str(good_run.cfg), "--results", str(good_run.results)]
        rc, out = _cli(capsys, *argv + (["--out", str(good_run.report)] if cmd == "report" else []))
        assert rc == 2, f"{cmd} accepted stale results: {out[-2000:]}"
        assert f"{len(stale)} result file(s) were measured under other settings than {good_run.cfg}" in out, out
        for f in stale:
            assert f"{f}: " in out and f"{key}: " in out, out
        for f in fresh:
            assert f"{f}: " not in out, out
        assert "--allow-stale" in out and "Traceback" not in out
    assert good_run.kept() == before, "a good summary or report from before was overwritten"


def test_allow_stale_includes_them_marked(good_run, capsys):
    _changed_config(good_run, f"generation.{MODEL}.chat.temperature", 0.5)
    rc, out = _cli(capsys, "aggregate", "--config", str(good_run.cfg), "--results", str(good_run.results),
                   "--allow-stale")
    assert rc == 0, out
    import pandas as pd

    df = pd.read_csv(good_run.results / "summary.csv", keep_default_na=False)
    ok = df[df.status == "ok"]
    assert len(ok) and ok.reason.str.startswith("stale: generation.temperature: 0.7 in the file, 0.5 in the config").all()
    from servingbench.host.config import load_config
    from servingbench.host.report.render import build_context

    ctx = build_context(load_config(good_run.cfg), good_run.results, allow_stale=True)
    stale = [f for f in ctx["flags"] if f.what == "different config"]
    assert len(stale) == 4 and all("generation.temperature" in f.detail and f.severity == "warn" for f in stale)


def test_an_edit_that_leaves_a_cells_settings_alone_is_not_stale(good_run, capsys):
    """Another field of the config (here the model's parameter count, shown in the report only)
    changes the config hash but not what any cell measured: accepted, with an info flag."""
    _changed_config(good_run, f"models.{MODEL}.params", "0.135B")
    for cmd in ("aggregate", "report"):
        argv = [cmd, "--config", str(good_run.cfg), "--results", str(good_run.results)]
        rc, out = _cli(capsys, *argv + (["--out", str(good_run.report)] if cmd == "report" else []))
        assert rc == 0, out
    from servingbench.host.config import load_config
    from servingbench.host.report.render import build_context

    flags = build_context(load_config(good_run.cfg), good_run.results)["flags"]
    assert not [f for f in flags if f.what == "different config"]
    edited = [f for f in flags if f.what == "config edited since"]
    assert len(edited) == 4 and all(f.severity == "info" for f in edited)
