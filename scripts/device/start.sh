#!/usr/bin/env bash
# On the GPU machine: install the kit's wheels, copy the kit to /tmp/sb, and start Snakemake on
# configs/h100-dummy.yaml in the background (its own session, so it outlives this call; the
# machine and everything on it goes back at the end of the lease).
#   bash scripts/device/start.sh [ARM ...]      (default: every arm of the config)
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
. /tmp/sb/env.sh
cd /tmp/sb
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee gpu.txt
targets=()
for arm in "$@"; do
  targets+=($(python3 -m servingbench.cli cells --config configs/h100-dummy.yaml | python3 -c "
import json,sys
for l in sys.stdin:
    c=json.loads(l)
    if c['framework']=='$arm': print(f\"results/cells/{c['framework']}/{c['model']}/{c['task']}/{c['mode']}.json\")"))
  for m in gpt2 phi-2 llama-2-7b-chat mistral-7b-instruct; do
    targets+=("results/sweeps/$arm/$m/concurrency.json" "results/sweeps/$arm/$m/context.json")
  done
done
[ ${#targets[@]} -gt 0 ] || targets=(results/summary.csv)
echo "${#targets[@]} targets"
setsid nohup python3 -m snakemake --cores 1 --configfile configs/h100-dummy.yaml --keep-going \
  --rerun-incomplete "${targets[@]}" > snakemake.log 2>&1 < /dev/null &
echo $! > snakemake.pid
sleep 5; tail -5 snakemake.log
