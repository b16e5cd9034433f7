#!/usr/bin/env bash
# Re-resolve containers/requirements/*.txt from their *.in files (needs uv and PyPI).
#
#   bash containers/lock-requirements.sh          # all locks
#   UV=/path/to/uv bash containers/lock-requirements.sh
#
# Each image installs its lock with `pip install --no-deps -r LOCK` and then runs `pip check`,
# so a lock must be complete. What a base image already provides (torch and its CUDA
# libraries) or what comes from another source (vLLM's and xFormers' +cu118 wheels) is named in
# the .in file, so that everything around it is resolved against it, and left out of the lock.
# Seed locks resolve as of the seed's era (--exclude-newer), so a rerun gives the same pins.
set -euo pipefail
cd "$(dirname "$0")/requirements"
UV=${UV:-uv}
export UV_NATIVE_TLS=${UV_NATIVE_TLS:-1}   # the system CA bundle (proxies that re-sign TLS)

# torch on PyPI pulls its CUDA libraries (nvidia-*, triton, cuda-*); a PyTorch base image has its
# own. They are dropped from every lock (nvidia-ml-py, the NVML binding, stays).
drop_cuda_stack() {  # drop_cuda_stack FILE: remove those entries and their "# via" lines
  python3 - "$1" <<'PY'
import re, sys
path = sys.argv[1]
out, skip = [], False
for line in open(path):
    if not line.startswith((" ", "#")):
        name = re.split(r"[=<>; ]", line, 1)[0].lower()
        skip = (name.startswith(("nvidia-", "cuda-")) and name != "nvidia-ml-py") or name == "triton"
    if not skip:
        out.append(line)
open(path, "w").writelines(out)
PY
}

lock() {  # lock IN OUT EXCLUDE_NEWER [extra uv args...]
  local in=$1 out=$2 newer=$3
  shift 3
  local args=(pip compile "$in" -o "$out" --universal --python-version 3.10 --no-header --quiet)
  [ -n "$newer" ] && args+=(--exclude-newer "$newer")
  "$UV" "${args[@]}" "$@"
  drop_cuda_stack "$out"
  {
    echo "# Locked from $in for Python >= 3.10 on Linux${newer:+, as of $newer}."
    echo "# Regenerate: bash containers/lock-requirements.sh (do not edit by hand)."
    cat "$out"
  } > "$out.tmp" && mv "$out.tmp" "$out"
  echo "locked $out ($(grep -c '==' "$out") pins)"
}

lock runtime.in              runtime.txt              ""
lock transformers-seed.in    transformers-seed.txt    2024-01-01 --no-emit-package torch
lock transformers-current.in transformers-current.txt ""         --no-emit-package torch
lock vllm-seed.in            vllm-seed.txt            2023-12-31 --no-emit-package torch \
  --no-emit-package xformers --no-emit-package vllm
