#!/usr/bin/env bash
# On the GPU machine: wait up to $1 seconds for the background Snakemake, show progress, and
# pack results (cells, sweeps, logs, workloads' sizes) into $OUT/results.tar.gz either way.
set -uo pipefail
cd /tmp/sb
limit=${1:-540}
t0=$(date +%s)
while kill -0 "$(cat snakemake.pid)" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do
  sleep 10
done
grep -E "^== |Finished jobid|Error in rule|rror" snakemake.log | tail -15
ls results/cells/*/*/*/*.json results/sweeps/*/*/*.json 2>/dev/null | grep -v requests | wc -l
nvidia-smi --query-gpu=memory.used --format=csv,noheader
if kill -0 "$(cat snakemake.pid)" 2>/dev/null; then echo running; else echo done; fi
tar czf "$OUT/results.tar.gz" --exclude='results/servers' results gpu.txt snakemake.log configs/h100-dummy.yaml 2>/dev/null
ls -la "$OUT"
