# Shared helpers: validate the config, name the matrix, resolve specs for the measuring rules.
import json
import os
import re
import subprocess
import sys

from servingbench.host import config as sbc
from servingbench.runtime import results as sbr

CONFIG_PATH = workflow.configfiles[-1] if workflow.configfiles else "config.yaml"
# Snakemake's own YAML loading keeps the last of a duplicated key, dropping a block unseen.
# Every value below reaches a shell only quoted ({...:q}); names are checked identifiers too.
for _path in workflow.configfiles:
    sbc.read_yaml(_path)
CFG = sbc.parse_config(config, CONFIG_PATH) if config else sbc.load_config(CONFIG_PATH)
RESULTS = sbr.RESULTS
ARMS, MODELS, TASKS, MODES = list(CFG.frameworks), list(CFG.models), list(CFG.tasks), list(CFG.modes)
SWEEPS = [s for s in ("concurrency", "context") if getattr(CFG.sweeps, s) is not None]
CAPACITY_TASKS = list(CFG.sweeps.capacity.tasks) if CFG.sweeps.capacity is not None else []

# Cells that share a server run back to back: one priority per (arm, model), highest first.
SERVER_ORDER = {(a, m): i for i, (a, m) in enumerate((a, m) for a in ARMS for m in MODELS)}
# Environment, not params: switching reuse on or off must not rerun finished cells.
if CFG.run.server_reuse:
    os.environ["SERVINGBENCH_POOL"] = str(sbr.pool_dir(RESULTS))
    os.environ["SERVINGBENCH_POOL_IDLE_S"] = str(CFG.run.server_idle_timeout_s)
else:
    os.environ.pop("SERVINGBENCH_POOL", None)


def _alt(names):
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    arm=_alt(ARMS),
    model=_alt(MODELS),
    task=_alt(TASKS),
    mode="sync|stream",
    sweep="concurrency|context",


def cell_targets():
    # An arm may run only some tasks (frameworks.ARM.tasks: e.g. a prefix-caching twin of an arm).
    return [str(sbr.cell_path(RESULTS, arm, model, task, mode))
            for arm in ARMS for model in MODELS for task in sbc.arm_tasks(CFG, arm) for mode in MODES]


def sweep_targets():
    arms = sbc.sweep_arms(CFG)
    return [str(sbr.sweep_path(RESULTS, arm, model, sweep)) for arm in arms for model in MODELS for sweep in SWEEPS] + \
        [str(sbr.capacity_path(RESULTS, arm, model, task)) for arm in arms for model in MODELS for task in CAPACITY_TASKS]


def host_targets():
    # The GPU's measured copy bandwidth (the report's bandwidth floor); nothing to measure on CPU.
    return [f"{RESULTS}/gpu-bandwidth.json"] if CFG.device == "cuda" else []


# Models and workloads are cheap: build them all before any server starts, so that the
# measuring jobs of one server are never interleaved with another's while inputs appear.
PREP_PRIORITY = len(SERVER_ORDER) + 1


def get_priority(arm, model):
    return len(SERVER_ORDER) - SERVER_ORDER[(arm, model)]


def get_cell_spec(wildcards):
    return sbc.cell_spec(CFG, wildcards.arm, wildcards.model, wildcards.task, wildcards.mode).to_json()


def get_sweep_spec(wildcards):
    make = {"concurrency": sbc.concurrency_sweep_spec, "context": sbc.context_sweep_spec}[wildcards.sweep]
    return make(CFG, wildcards.arm, wildcards.model).to_json()


def get_capacity_spec(wildcards):
    return sbc.capacity_sweep_spec(CFG, wildcards.arm, wildcards.model, wildcards.task).to_json()


TASK_WORKLOAD = str(sbr.workload_path(RESULTS, "{model}", "{task}"))  # a task's prompts, as a pattern


def get_sweep_workload(wildcards):
    task = "context" if wildcards.sweep == "context" else CFG.sweeps.concurrency.task
    return str(sbr.workload_path(RESULTS, wildcards.model, task))


def get_image(arm):
    image = sbc.image_for(CFG, arm)
    return f"docker://{image}" if image and "://" not in image else (image or None)


def get_served_weights(wildcards):
    """Weights an arm loads besides the model folder (the adapter says: llamacpp's GGUF file)."""
    return sbc.extra_weights(CFG, wildcards.arm, wildcards.model)


def get_model_params(wildcards):
    """What defines a prepared model dir: a change reruns prepare_model (and what follows)."""
    return json.dumps({"model": CFG.models[wildcards.model].model_dump(), "weights": CFG.weights},
                      sort_keys=True)


def get_trace_file(wildcards):
    """A trace task's trace file: an input of its workload, so that editing the trace rebuilds it."""
    task = CFG.tasks.get(wildcards.task)
    return [str(task.trace_path)] if getattr(task, "workload", "") == "trace" else []


def get_workload_params(wildcards):
    """What defines a workload: its task's ranges, generation caps, sizes and seed."""
    task = wildcards.task
    keys = {"seed": CFG.run.seed, "requests": CFG.run.requests_per_cell, "warmup": CFG.run.warmup_requests,
            "levels": CFG.run.cell_concurrency, "sweeps": CFG.sweeps.model_dump()}
    if task != "context":
        keys.update(task=CFG.tasks[task].model_dump(), generation=CFG.generation[wildcards.model][task].model_dump())
    return json.dumps(keys, sort_keys=True)


def stop_pooled_servers():
    subprocess.run([sys.executable, "-m", "servingbench.cli", "stop-servers", "--results", RESULTS], check=False)


def render_partial_report():
    """After a failed run (e.g. --keep-going with failed cells): a report that shows them.

    The table is then moved aside to summary.partial.csv so that the next run still sees
    summary.csv missing and reruns exactly the failed and missing cells, then the report.
    """
    cli = [sys.executable, "-m", "servingbench.cli"]
    subprocess.run(cli + ["aggregate", "--config", CONFIG_PATH, "--results", RESULTS], check=False)
    subprocess.run(cli + ["report", "--config", CONFIG_PATH, "--results", RESULTS, "--out", "report/index.html"],
                   check=False)
    for ext in ("csv", "parquet"):
        if sbr.summary_path(RESULTS, ext).exists():
            os.replace(sbr.summary_path(RESULTS, ext), sbr.summary_path(RESULTS, f"partial.{ext}"))
