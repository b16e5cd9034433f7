#!/usr/bin/env bash
# On the GPU machine: install the kit's wheels, copy the kit to /tmp/sb, and start Snakemake on
# configs/h100-dummy.yaml in the background (its own session, so it outlives this call; the
# machine and everything on it goes back at the end of the lease).
#   bash scripts/device/start.sh [ARM[:MODEL,MODEL...] | results/PATH ...]
# An ARM names its cells and sweeps (all models, or the listed ones); a results/ path is taken
# as is. Targets whose file is already in examples/h100-dummy/results are skipped (a lease
# resumes what the last one left), except those named as paths (a rerun). Models and workloads
# are prepared first on 8 cores (each job imports transformers: ~9 min one by one); then the
# measuring jobs run one at a time, as users run them, one Snakemake run per argument in the
# order given (the lease may end before the last).
set -euo pipefail
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --find-links .gwk --target /tmp/site-kit snakemake pyyaml pydantic httpx psutil nvidia-ml-py 2>&1 | tail -2 || true
rm -rf /tmp/sb && mkdir -p /tmp/sb && cp -r Snakefile rules configs config.yaml servingbench /tmp/sb/
mkdir -p /tmp/bin && printf '#!/bin/sh\nexec python3 -m servingbench.cli "$@"\n' > /tmp/bin/servingbench && chmod +x /tmp/bin/servingbench
cat > /tmp/sb/env.sh <<'ENV'
export PYTHONPATH=/tmp/sb:/tmp/site:/tmp/site-kit
export PATH=/tmp/bin:/tmp/site-kit/bin:$PATH
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1 VLLM_HOST_IP=127.0.0.1 HF_HUB_DISABLE_UPDATE_CHECK=1 PYTHONUNBUFFERED=1
ENV
done_dir=$(pwd)/examples/h100-dummy/results
. /tmp/sb/env.sh
cd /tmp/sb
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee gpu.txt
python3 -m servingbench.cli cells --config configs/h100-dummy.yaml > cells.jsonl
python3 - "$done_dir" "$@" > picks.txt <<'PY'
import json, sys
from pathlib import Path
done, picks = Path(sys.argv[1]), sys.argv[2:]
cells = [json.loads(line) for line in open("cells.jsonl")]
models = list(dict.fromkeys(c["model"] for c in cells))
out = {}
for i, pick in enumerate(picks):
    if pick.startswith("results/"):
        out.setdefault(pick, i)
        continue
    arm, _, only = pick.partition(":")
    wanted = only.split(",") if only else models
    for c in cells:
        if c["framework"] == arm and c["model"] in wanted:
            out.setdefault(f"results/cells/{arm}/{c['model']}/{c['task']}/{c['mode']}.json", i)
    for m in wanted:
        out.setdefault(f"results/sweeps/{arm}/{m}/concurrency.json", i)
        out.setdefault(f"results/sweeps/{arm}/{m}/context.json", i)
for t, i in out.items():
    if t in picks or not (done / t.removeprefix("results/")).exists():
        print(i, t)
PY
[ -s picks.txt ] || echo "0 results/summary.csv" > picks.txt
cut -d' ' -f2 picks.txt > targets.txt
# The models and workloads those targets need (rules/sweeps.smk: concurrency uses chat's).
python3 - > prep.txt <<'PY'
import re
models, tasks = set(), {}
for t in open("targets.txt").read().split():
    m = re.match(r"results/(cells|sweeps)/[^/]+/([^/]+)/([^/.]+)", t)
    if m:
        models.add(m[2])
        tasks.setdefault(m[2], set()).add({"concurrency": "chat"}.get(m[3], m[3]))
for m in sorted(models):
    print(f"models/{m}")
    for task in sorted(tasks[m]):
        print(f"results/workloads/{m}/{task}.jsonl")
PY
echo "$(wc -l < targets.txt) targets, $(wc -l < prep.txt) preparation outputs"
cat > run.sh <<'RUN'
. /tmp/sb/env.sh
sm="python3 -m snakemake --configfile configs/h100-dummy.yaml --keep-going --rerun-incomplete"
echo "== prepare $(date -u +%T)"
$sm --cores 8 $(cat prep.txt)
for i in $(cut -d' ' -f1 picks.txt | uniq); do
  echo "== measure $i $(date -u +%T)"
  $sm --cores 1 $(awk -v i="$i" '$1 == i {print $2}' picks.txt)
done
echo "== end $(date -u +%T)"
RUN
setsid nohup bash run.sh > snakemake.log 2>&1 < /dev/null &
echo $! > snakemake.pid
sleep 5; tail -5 snakemake.log
