"""Bad input fails early and clearly: every malformed config stops Snakemake at parse time
(``snakemake -n`` exits non-zero naming the key, before any job, let alone a server, starts),
and a corrupt or foreign file in ``results/`` stops the aggregate and the report naming the
file, without overwriting what a previous run left (``summary.csv``, ``report/index.html``).

The malformed configs: the 28 key-level cases of tests/test_config.py (on config.yaml, reused
as they are), files that do not parse, and more on the CPU profile (a prompt range beyond the
model's context, timeouts of 0, an unknown device, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingbench.results import cell_path, failure_path, requests_path
from tests.reliability.conftest import ROOT, tiny_config_dict
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


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """`snakemake -n` on every bad config (and, as a control, on a good one), through
    snakemake_forker.py: Snakemake's real command-line entry point, imported once."""
    base = tmp_path_factory.mktemp("bad-configs")
    jobs, dirs = [], {}
    for i, (what, text, _) in enumerate(CASES + [(GOOD, yaml.safe_dump(TINY), "")]):
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


def test_the_dry_run_harness_accepts_a_good_config(dry_runs):
    rc, out, wd = dry_runs[GOOD]
    assert rc == 0 and "Building DAG of jobs" in out and "measure_transformers_naive" in out, out[-2000:]


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
    assert len(BAD) >= 20 and len(CASES) >= 40


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
