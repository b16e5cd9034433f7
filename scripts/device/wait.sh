#!/usr/bin/env bash
# On the GPU machine: wait up to $1 seconds for the background Snakemake, show progress, and
# pack results (cells, sweeps, logs, workloads' sizes) into $OUT/results.tar.gz either way
# (SGLang's JIT cache too, unless it was carried). The device tool brings back files of 16 MiB at
# most (lease 7 lost a 17.6 MB one): a larger archive comes back cut into results.tar.gz.part-aa,
# -ab, ... of 15 MiB; here: cat results.tar.gz.part-* | tar xzf -
set -uo pipefail
# LANES="0 1": the lanes of start.sh (LANE=N) to wait for, each packed into $OUT/results-laneN.tar.gz.
dirs=(); for l in ${LANES:-}; do dirs+=("/tmp/sb-lane$l"); done
[ ${#dirs[@]} -gt 0 ] || dirs=(/tmp/sb)
limit=${1:-540}
t0=$(date +%s)
running() { for d in "${dirs[@]}"; do kill -0 "$(cat "$d/snakemake.pid")" 2>/dev/null && return 0; done; return 1; }
while running && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do
  sleep 10
done
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader
for d in "${dirs[@]}"; do
  cd "$d"
  echo "## $d"
  grep -E "^== |Finished jobid|Error in rule|rror" snakemake.log | tail -15
  ls results/cells/*/*/*/*.json results/sweeps/*/*/*.json 2>/dev/null | grep -v requests | wc -l
  if kill -0 "$(cat snakemake.pid)" 2>/dev/null; then echo running; else echo done; fi
  . "$d/env.sh"
  name=results${d#/tmp/sb}  # results, or results-laneN
  tar czf "$OUT/$name.tar.gz" --exclude='results/servers' results gpu.txt snakemake.log before.sh "$CONFIG" 2>/dev/null
  if [ "$(stat -c %s "$OUT/$name.tar.gz")" -gt $((15 * 1024 * 1024)) ]; then
    split -b 15M "$OUT/$name.tar.gz" "$OUT/$name.tar.gz.part-" && rm "$OUT/$name.tar.gz"
  fi
done
# SGLang's JIT kernels (built with nvcc at its first start): carry them back into .sg-dl/ to skip
# the ~55 s build on the next fresh machine (sglang-wheelhouse README, "Start-up").
if [ -d "$HOME/.cache/tvm-ffi" ] && [ ! -f "$OUT/tvm_ffi_cache.tar.gz" ] && [ ! -f /tmp/sg/tvm_ffi_cache.tar.gz ]; then
  tar czf "$OUT/tvm_ffi_cache.tar.gz" -C "$HOME/.cache" --exclude='*.o' --exclude='.ninja_*' tvm-ffi 2>/dev/null || true
fi
ls -la "$OUT"
