"""profiles/slurm: `snakemake --profile profiles/slurm` submits each job with sbatch, one GPU per cell.

No SLURM here: stand-ins for the commands snakemake-executor-plugin-slurm calls (sbatch, srun,
sacct, squeue, scontrol, sinfo, sacctmgr, sshare, scancel) record their argv. The stand-in sbatch
runs the submitted `--wrap` command at once, as a node would (so the plugin's job-step executor,
srun, the apptainer command line and the job's shell command all really run, with the stand-in
apptainer and servingbench of test_containers), and sacct then reports the job's state.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _container_tests():
    """tests/test_containers.py, for its stand-ins and helpers (tests/ is not a package)."""
    path = Path(__file__).with_name("test_containers.py")
    spec = importlib.util.spec_from_file_location("servingbench_test_containers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_tc = _container_tests()
ROOT, SENTINEL, docker_urls, records, snakemake = _tc.ROOT, _tc.SENTINEL, _tc.docker_urls, _tc.records, _tc.snakemake
standins = _tc.standins  # the fixture: stand-in apptainer and servingbench on PATH, sentinel tokens

PROFILE = ROOT / "profiles" / "slurm"

pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install snakemake-executor-plugin-slurm")

STAND_IN_SLURM = r'''#!{python}
"""Stand-in for one SLURM command (by the name it is called as); records argv, then acts."""
import json, os, pathlib, subprocess, sys
tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
state = pathlib.Path(os.environ["STANDIN_SLURM_STATE"])
state.mkdir(exist_ok=True)
with open(os.environ["STANDIN_LOG"], "a") as fh:
    fh.write(json.dumps({{"tool": tool, "argv": args, "env_names": sorted(os.environ)}}) + "\n")
if tool == "sbatch":
    jobid = str(1000 + len(list(state.glob("*.state"))))
    wrap = next(a[len("--wrap="):] for a in args if a.startswith("--wrap="))
    workdir = args[args.index("-D") + 1] if "-D" in args else os.getcwd()
    env = dict(os.environ, SLURM_JOB_ID=jobid, SLURM_JOBID=jobid)
    gpus = [a.split("=", 1)[1] for a in args if a.startswith("--gpus=")]
    if gpus:
        env["SLURM_GPUS"] = gpus[0]
    logfile = pathlib.Path(args[args.index("--output") + 1].replace("%j", jobid))
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "w") as out:  # the job, run "on a node"; its output goes to its log
        rc = subprocess.call(["sh", "-c", wrap], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    (state / f"{{jobid}}.state").write_text("COMPLETED" if rc == 0 else "FAILED")
    print(jobid)
elif tool == "srun":
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 1
    sys.exit(subprocess.call(args[i:]))
elif tool == "sacct" and any(a.startswith("--format=JobIdRaw") for a in args):
    for f in sorted(state.glob("*.state")):
        print(f"{{f.stem}}|{{f.read_text()}}")
elif tool in ("sacct", "sacctmgr", "sshare"):
    print("benchacct")
elif tool == "sinfo":
    print("PARTITION\ngpu*")
elif tool == "scontrol" and args[:2] == ["show", "config"]:
    print("MinJobAge               = 300 sec")
'''

# The plugin waits 40 s before its first status check (sacct); the stand-in jobs are done at once.
FAST = ["--slurm-init-seconds-before-status-checks", "1"]
SLURM_TOOLS = ("sbatch", "srun", "sacct", "squeue", "scontrol", "sinfo", "sacctmgr", "sshare", "scancel")


@pytest.fixture
def slurm(standins, tmp_path):
    env, log, work, hf_home = standins
    bindir = Path(env["PATH"].split(os.pathsep, 1)[0])
    body = STAND_IN_SLURM.format(python=sys.executable)
    for tool in SLURM_TOOLS:
        exe = bindir / tool
        exe.write_text(body)
        exe.chmod(0o755)
    env["STANDIN_SLURM_STATE"] = str(tmp_path / "slurm-state")
    return env, log, work


def test_profile_names_the_slurm_executor_apptainer_and_the_gpu():
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["software-deployment-method"] == "apptainer"
    assert profile["apptainer-args"] == "--nv"
    resources = dict(r.split("=", 1) for r in profile["default-resources"])
    assert {"runtime", "mem_mb"} <= set(resources)
    # a GPU model in default-resources would put a GPU on every job (prepare_model included)
    assert "gpu_model" not in resources and "gpu" not in resources
    assert isinstance(profile["jobs"], int) and profile["jobs"] >= 1


def test_submission_asks_one_gpu_per_cell_and_runs_the_cell_in_its_image(slurm):
    env, log, work = slurm
    target = "results/cells/vllm/gpt2/chat/stream.json"
    # targets first: --configfile (like --sdm) takes every word after it
    snakemake([target, "--profile", str(PROFILE), *FAST, "--configfile", str(ROOT / "config.yaml")], env, work)
    assert (work / target).is_file()

    submitted = {}
    for r in records(log, "sbatch"):
        comment = r["argv"][r["argv"].index("--comment") + 1]
        submitted[comment.split("_wildcards")[0].removeprefix("rule_")] = r["argv"]
    assert set(submitted) == {"prepare_model", "build_workload", "measure_vllm_gpt2"}

    cell = submitted["measure_vllm_gpt2"]
    assert "--gpus=1" in cell  # resources: gpu=1 on the measuring rule
    assert "-t" in cell and cell[cell.index("-t") + 1] == "120"
    assert "--mem" in cell and cell[cell.index("--mem") + 1] == "32000"
    assert "--cpus-per-task=4" in cell
    wrap = next(a for a in cell if a.startswith("--wrap="))
    # the job's command: Snakemake's job step for exactly this cell, in apptainer with --nv
    assert "--executor slurm-jobstep" in wrap
    assert re.search(r"--target-jobs\s+'?measure_vllm_gpt2:[^ ]*arm=vllm", wrap)
    assert "--deployment-method apptainer" in wrap
    (nv,) = re.findall(r"--apptainer-args base64//(\S+)", wrap)
    assert base64.b64decode(nv).decode() == "--nv"
    for other in ("prepare_model", "build_workload"):
        assert not [a for a in submitted[other] if a.startswith(("--gpus", "--gres"))], other

    # the job step ran under srun, and the cell ran in vLLM's image with the GPU flag
    assert records(log, "srun")
    execs = [r for r in records(log, "apptainer") if "exec" in r["argv"]]
    (cell_exec,) = [r for r in execs if "run-cell" in r["argv"][-1]]
    assert cell_exec["url"] == docker_urls("seed")["vllm"]
    assert "--nv" in cell_exec["argv"]
    spec = json.loads(shlex.split(cell_exec["argv"][-1].split(";", 1)[1])[3])
    assert spec["server"]["arm"] == "vllm"
    # the token travels in the environment (sbatch --export=ALL), never on a command line
    assert "--export=ALL" in cell
    assert all("HF_TOKEN" in r["env_names"] for r in records(log, "sbatch"))
    assert SENTINEL not in log.read_text()


def test_a_gpu_model_becomes_part_of_the_gpus_request(slurm):
    env, log, work = slurm
    (work / "models" / "gpt2").mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "models/gpt2", "-s", str(ROOT / "Snakefile"), "-d", str(work),
         "--profile", str(PROFILE), *FAST, "--forcerun", "prepare_model", "--set-resources",
         "prepare_model:gpu_model=a100", "--configfile", str(ROOT / "config.yaml")],
        env=env, cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (sub,) = records(log, "sbatch")
    assert "--gpus=a100:1" in sub["argv"]
