#!/usr/bin/env bash
# The CPU demo, end to end on a machine with no GPU: create the environment, prepare the real
# SmolLM2-135M-Instruct offline, run the CPU matrix with real vLLM, real Transformers and
# llama.cpp's llama-server through Snakemake, and print the path of the report.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
bash scripts/setup-env.sh
. .venv/bin/activate
t1=$SECONDS
# --keep-going: one failed cell must not cost the rest; the report then shows it as failed.
snakemake --cores 1 --configfile configs/cpu.yaml --keep-going --rerun-incomplete "$@" || status=$?
if [ -f report/index.html ]; then
  echo "report: $(pwd)/report/index.html"
fi
echo "demo: $((SECONDS - t0)) s in all (set-up $((t1 - t0)) s, Snakemake $((SECONDS - t1)) s)"
exit "${status:-0}"
