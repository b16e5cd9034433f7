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
. /tmp/sb/env.sh
tar czf "$OUT/results.tar.gz" --exclude='results/servers' results gpu.txt snakemake.log "$CONFIG" 2>/dev/null
# SGLang's JIT kernels (built with nvcc at its first start): carry them back into .sg-dl/ to skip
# the ~55 s build on the next fresh machine (sglang-wheelhouse README, "Start-up").
if [ -d "$HOME/.cache/tvm-ffi" ] && [ ! -f "$OUT/tvm_ffi_cache.tar.gz" ]; then
  tar czf "$OUT/tvm_ffi_cache.tar.gz" -C "$HOME/.cache" --exclude='*.o' --exclude='.ninja_*' tvm-ffi 2>/dev/null || true
fi
ls -la "$OUT"
