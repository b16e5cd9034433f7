#!/usr/bin/env bash
# On the GPU machine, after scripts/device/install.sh: copy the kit to /tmp/sb and start Snakemake
# on $CONFIG (default configs/h200-dummy.yaml) in the background (its own session, so it outlives
# this call; the machine and everything on it goes back at the end of the lease).
#   bash scripts/device/start.sh [ARM[:MODEL,MODEL...] | results/PATH ...]
# An ARM names its cells and sweeps (all models, or the listed ones); a results/ path is taken as
# is. With ORDER=model, arms are taken model by model instead (every arm of the first model, then
# of the next), so that a lease that ends early leaves whole models compared across arms; an ARM
# alone is then every model; models go in the order the ARM:MODEL,... lists first name them. Targets whose file is already in $DONE (default
# examples/h200-dummy/results) are skipped (a lease resumes what the last one left), except those
# named as paths (a rerun). Models and workloads are prepared first on 8 cores (each job imports
# transformers: ~9 min one by one); then the measuring jobs run one at a time, as users run them,
# one Snakemake run per group in the order given (the lease may end before the last).
# TASKS=chat,qa (optional) keeps only those tasks' cells; SWEEPS=0 leaves the sweeps out.
# On a machine of several GPUs, LANE=N runs this start on GPU N alone (CUDA_VISIBLE_DEVICES=N, the
# kit in /tmp/sb-laneN, its own results and servers; LANE_CPUS=16-31 pins the lane's processes to
# those CPUs with taskset): lanes run side by side, each cell alone on its GPU, and
# `LANES="0 1" bash scripts/device/wait.sh` waits for them all. BEFORE="cmd" runs cmd in the kit's
# copy after the preparation and before the first measuring group (a probe, a benchmark).
set -euo pipefail
CONFIG=${CONFIG:-configs/h200-dummy.yaml}
done_dir=$(pwd)/${DONE:-examples/h200-dummy/results}
SB=/tmp/sb${LANE:+-lane$LANE}
[ -d /tmp/site-kit ] || { echo "start: /tmp/site-kit missing: run scripts/device/install.sh first" >&2; exit 2; }
rm -rf "$SB" && mkdir -p "$SB" && # containers/: servingbench/data/images.yaml is a link into it.
cp -r Snakefile rules configs config.yaml servingbench containers benchmarks scripts "$SB"/
mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 -m servingbench.cli "$@"\n' > /tmp/bin/servingbench && chmod +x /tmp/bin/servingbench
cat > "$SB"/env.sh <<ENV
export PYTHONPATH=$SB:/tmp/site:/tmp/site-kit
export PATH=/tmp/bin:/tmp/site-kit/bin:\$PATH
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1 VLLM_HOST_IP=127.0.0.1 HF_HUB_DISABLE_UPDATE_CHECK=1 PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
ENV
echo "CONFIG=$CONFIG" >> "$SB"/env.sh
# NVML numbers GPUs by PCI bus: CUDA must too, so the monitor measures the lane's own GPU.
[ -z "${LANE:-}" ] || echo "export CUDA_VISIBLE_DEVICES=$LANE CUDA_DEVICE_ORDER=PCI_BUS_ID" >> "$SB"/env.sh
. "$SB"/env.sh
cd "$SB"
nvidia-smi ${LANE:+--id=$LANE} --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv,noheader | tee gpu.txt
python3 -m servingbench.cli cells --config "$CONFIG" > cells.jsonl
CONFIG="$CONFIG" ORDER=${ORDER:-arm} TASKS=${TASKS:-} SWEEPS=${SWEEPS:-1} python3 - "$done_dir" "$@" > picks.txt <<'PY'
import json, os, sys
from pathlib import Path
from servingbench.host.config import load_config, sweep_arms
done, picks = Path(sys.argv[1]), sys.argv[2:]
cells = [json.loads(line) for line in open("cells.jsonl")]
sweepers = set(sweep_arms(load_config(os.environ["CONFIG"])))  # an arm with a task list has no sweeps
models = list(dict.fromkeys(c["model"] for c in cells))
groups = []  # (arm, models) or a results/ path, in run order
for pick in picks:
    if pick.startswith("results/"):
        groups.append(pick)
        continue
    arm, _, only = pick.partition(":")
    groups.append((arm, only.split(",") if only else models))
if os.environ.get("ORDER") == "model":  # whole models first: every arm of a model, then the next
    arms = [g for g in groups if not isinstance(g, str)]
    order = list(dict.fromkeys(m for _, wanted in arms for m in wanted))  # as first listed
    groups = [g for g in groups if isinstance(g, str)] + [
        (arm, [m]) for m in order for arm, wanted in arms if m in wanted]
out = {}
for i, group in enumerate(groups):
    if isinstance(group, str):
        out.setdefault(group, i)
        continue
    arm, wanted = group
    tasks = os.environ.get("TASKS")
    for c in cells:
        if c["framework"] == arm and c["model"] in wanted and (not tasks or c["task"] in tasks.split(",")):
            out.setdefault(f"results/cells/{arm}/{c['model']}/{c['task']}/{c['mode']}.json", i)
    for m in wanted if arm in sweepers and os.environ.get("SWEEPS", "1") != "0" else ():
        out.setdefault(f"results/sweeps/{arm}/{m}/concurrency.json", i)
        out.setdefault(f"results/sweeps/{arm}/{m}/context.json", i)
for t, i in out.items():
    if t in picks or not (done / t.removeprefix("results/")).exists():
        print(i, t)
PY
# Nothing left to measure: say so. (results/summary.csv as a target would pull in every cell of
# the config, the new workloads' too, and start measuring them all.)
[ -s picks.txt ] || { echo "start: every target asked for is already in $done_dir: nothing to run"; exit 0; }
cut -d' ' -f2 picks.txt > targets.txt
# The models and workloads those targets need (rules/sweeps.smk: concurrency uses chat's;
# capacity-TASK uses TASK's).
python3 - > prep.txt <<'PY'
import re
models, tasks = set(), {}
for t in open("targets.txt").read().split():
    m = re.match(r"results/(cells|sweeps)/[^/]+/([^/]+)/([^/.]+)", t)
    if m:
        models.add(m[2])
        kind = m[3].removeprefix("capacity-")  # a capacity search reads its task's workload
        tasks.setdefault(m[2], set()).add({"concurrency": "chat"}.get(kind, kind))
for m in sorted(models):
    print(f"models/{m}")
    for task in sorted(tasks[m]):
        print(f"results/workloads/{m}/{task}.jsonl")
PY
echo "$(wc -l < targets.txt) targets in $(cut -d' ' -f1 picks.txt | uniq | wc -l) groups, $(wc -l < prep.txt) preparation outputs"
printf '%s\n' "${BEFORE:-}" > before.sh
cat > run.sh <<RUN
. $SB/env.sh
RUN
cat >> run.sh <<'RUN'
sm="python3 -m snakemake --configfile $CONFIG --keep-going --rerun-incomplete"
echo "== prepare $(date -u +%T)"
$sm --cores 8 $(cat prep.txt)
if grep -q '[^[:space:]]' before.sh; then echo "== before $(date -u +%T): $(cat before.sh)"; bash before.sh || echo "== before failed: $?"; fi
for i in $(cut -d' ' -f1 picks.txt | uniq); do
  echo "== measure $i $(date -u +%T)"
  $sm --cores 1 $(awk -v i="$i" '$1 == i {print $2}' picks.txt)
done
echo "== end $(date -u +%T)"
RUN
pin=()
if [ -n "${LANE_CPUS:-}" ]; then
  if command -v taskset >/dev/null; then pin=(taskset -c "$LANE_CPUS"); else echo "start: no taskset here: LANE_CPUS ignored" >&2; fi
fi
setsid nohup "${pin[@]}" bash run.sh > snakemake.log 2>&1 < /dev/null &
echo $! > snakemake.pid
sleep 5; tail -5 snakemake.log
