#!/usr/bin/env bash
# Build servingbench's framework images (containers/), push them, pin their digests.
#
#   benchmarks/build_images.sh --list                          what would be built, from what
#   benchmarks/build_images.sh [--profile seed|current]        build (docker, else podman)
#   benchmarks/build_images.sh --registry ghcr.io/YOU --push   build, push, pin digests in
#                                                              containers/images.yaml (commit it)
#   benchmarks/build_images.sh --check                         the offline build check (below)
#
# Images and tags come from containers/images.yaml (one row per distinct image; NAME:PROFILE-...
# is built from containers/NAME/PROFILE.Dockerfile). The build context is a staged copy of
# pyproject.toml, README.md, servingbench/ and containers/ only, so nothing else of the checkout
# (results, models, .venv, tokens) can reach an image.
#
# --check is for machines that reach PyPI and Debian but no container registry (podman only):
# it makes a Debian bookworm base with debootstrap, builds the CPU Transformers image
# (containers/transformers/cpu.Dockerfile) on it with the local CPU torch wheel, and runs one real
# transformers-naive cell inside it (SmolLM2-135M). containers/README.md records what it showed.
# Env: CHECK_DIR (default /var/tmp/servingbench-check), CHECK_LOCK (transformers-current.txt or
# transformers-seed.txt; default both, one image each), TORCH_WHEEL (a CPU torch wheel).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

ENGINE=${ENGINE:-}
PROFILE=""
REGISTRY=""
PUSH=0
CHECK=0
LIST=0
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) ENGINE=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --registry) REGISTRY=$2; shift 2 ;;
    --push) PUSH=1; shift ;;
    --check) CHECK=1; shift ;;
    --list) LIST=1; shift ;;
    -h|--help) usage ;;
    *) echo "build_images: unknown argument $1" >&2; usage 2 ;;
  esac
done

if [ -z "$ENGINE" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null; then ENGINE=podman
  else ENGINE=none; fi
fi
# podman as DESIGN §6 found it to work on these machines (runc; bounded ulimits)
ENGINE_ARGS=()
# the commit the images' servingbench comes from; -dirty when the copied files differ from it
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain -- pyproject.toml README.md servingbench containers 2>/dev/null)" ] \
  || REVISION="$REVISION-dirty"
BUILD_ARGS=(--build-arg "REVISION=$REVISION")
if [ "$ENGINE" = podman ]; then
  ENGINE_ARGS=(--runtime runc)
  BUILD_ARGS+=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
fi

stage_context() {  # a build context with only what an image may hold
  local ctx
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/servingbench-ctx.XXXXXX")
  tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' \
      -cf - pyproject.toml README.md servingbench containers | tar -C "$ctx" -xf -
  echo "$ctx"
}

timed() {  # timed LABEL LOG CMD...: run (output to LOG, or here if LOG is -), say how long it took
  local label=$1 log=$2 t0=$SECONDS rc=0
  shift 2
  if [ "$log" = - ]; then "$@" || rc=$?; else "$@" >"$log" 2>&1 || rc=$?; fi
  echo "[build_images] $label: $((SECONDS - t0)) s$([ $rc = 0 ] || echo " (FAILED, exit $rc${log:+; see $log})")"
  return $rc
}

# ---- the offline check -------------------------------------------------------------------------
run_check() {
  [ "$ENGINE" = podman ] || { echo "--check needs podman (apt-get install podman runc)" >&2; exit 2; }
  command -v debootstrap >/dev/null || { echo "--check needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
  local dir=${CHECK_DIR:-/var/tmp/servingbench-check}
  local base=localhost/servingbench-check-base:bookworm
  local wheel=${TORCH_WHEEL:-$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | head -1)}
  local ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
  [ -f "$wheel" ] || { echo "--check needs a CPU torch wheel for Python 3.11: set TORCH_WHEEL" >&2; exit 2; }
  mkdir -p "$dir"

  # 1. base image: Debian bookworm (Python 3.11) from debootstrap, since no registry is reachable
  if ! podman image exists "$base"; then
    rm -rf "$dir/rootfs"
    timed "debootstrap bookworm" "$dir/debootstrap.log" debootstrap --variant=minbase \
      --include=python3,python3-venv,ca-certificates bookworm "$dir/rootfs" http://deb.debian.org/debian
    timed "podman import" "$dir/import.log" sh -c "tar -C '$dir/rootfs' -c . | podman import - '$base'"
  fi

  # pip inside the build: the host's CA bundle (TLS may be re-signed by a proxy) and the wheel dir
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nfind-links = /wheels\n' > "$dir/pip.conf"
  local ctx
  ctx=$(stage_context)
  local locks=${CHECK_LOCK:-transformers-current.txt transformers-seed.txt}
  local torch_spec
  torch_spec="torch==$(basename "$wheel" | cut -d- -f2)"
  for lock in $locks; do
    local name=${lock%.txt} extra=""
    # the local torch (2.13) is newer than the seed lock's 2.1.0: lay the pins it needs over the lock
    [ "$lock" = transformers-seed.txt ] && extra="typing-extensions==4.16.0 sympy==1.14.0 setuptools==81.0.0"
    timed "build $name (cpu)" "$dir/build-$name.log" \
      podman "${ENGINE_ARGS[@]}" build "${BUILD_ARGS[@]}" --network host \
      -v "$ca:/etc/ssl/certs/ca-certificates.crt:ro" -v "$dir/pip.conf:/etc/pip.conf:ro" \
      -v "$(dirname "$wheel"):/wheels:ro" \
      --build-arg BASE="$base" --build-arg REQUIREMENTS="$lock" --build-arg TORCH_SPEC="$torch_spec" \
      --build-arg TORCH_PIP_ARGS="--no-index" --build-arg EXTRA_PINS="$extra" \
      -f containers/transformers/cpu.Dockerfile -t "localhost/servingbench-check:$name" "$ctx" \
      || { tail -30 "$dir/build-$name.log"; exit 1; }
    podman image inspect --format "[build_images] localhost/servingbench-check:$name {{.Size}} bytes" \
      "localhost/servingbench-check:$name"
  done
  rm -rf "$ctx"

  # 2. one transformers-naive cell inside each image, everything but the spec made in the image.
  #    Current lock: the real SmolLM2-135M (converted on the host, where the CPU environment has the
  #    GGUF converter; its tokenizer.json is in the format of tokenizers >= 0.20, which the seed's
  #    tokenizers 0.15 cannot read). Seed lock: SmolLM2-135M's architecture with random weights
  #    and a generated tokenizer, made by prepare-model inside the image itself.
  local work=$dir/work
  mkdir -p "$work/models" "$work/configs"
  "$PY" - "$work/configs" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open("configs/cpu.yaml"))
yaml.safe_dump(cfg, open(f"{sys.argv[1]}/real.yaml", "w"), sort_keys=False)
cfg["weights"] = "dummy"
yaml.safe_dump(cfg, open(f"{sys.argv[1]}/dummy.yaml", "w"), sort_keys=False)
PY
  for lock in $locks; do
    local name=${lock%.txt} weights=real
    [ "$lock" = transformers-seed.txt ] && weights=dummy
    local models=models-$weights results=results-$name
    rm -rf "$work/$results"
    local run=(podman "${ENGINE_ARGS[@]}" run --rm --init --network host --ulimit nofile=1024:1024
               --ulimit nproc=4096:4096 -v "$work:/work" -w /work -e HF_HUB_OFFLINE=1
               "localhost/servingbench-check:$name")
    if [ ! -f "$work/$models/smollm2-135m/config.json" ]; then
      if [ "$weights" = real ]; then
        timed "prepare smollm2-135m (host, real weights)" "$dir/prepare-$name.log" "$PY" -m servingbench.cli \
          prepare-model --config configs/cpu.yaml --model smollm2-135m --out "$work/$models/smollm2-135m" \
          || { tail -15 "$dir/prepare-$name.log"; continue; }
      else
        timed "prepare smollm2-135m (in $name, dummy weights)" "$dir/prepare-$name.log" "${run[@]}" \
          servingbench prepare-model --config configs/dummy.yaml --model smollm2-135m \
          --out "$models/smollm2-135m" || { tail -5 "$dir/prepare-$name.log"; continue; }
      fi
    fi
    "$PY" - "$work" "$weights" "$models/smollm2-135m" <<'PY'
import dataclasses, sys
from servingbench.host import config as c
work, weights, model_dir = sys.argv[1:]
cfg = c.load_config(f"{work}/configs/{weights}.yaml")
spec = c.cell_spec(cfg, "transformers-naive", "smollm2-135m", "chat", "stream")
# a small cell: the check is that it runs in the image, not what it measures
spec = dataclasses.replace(spec, server=dataclasses.replace(spec.server, model_dir=model_dir), requests=4,
                           warmup_requests=1, concurrency_levels=(1,), server_start_timeout_s=120)
open(f"{work}/spec-{weights}.json", "w").write(spec.to_json())
PY
    timed "build-workload in $name" "$dir/workload-$name.log" "${run[@]}" servingbench build-workload \
      --config "configs/$weights.yaml" --model smollm2-135m --task chat --model-dir "$models/smollm2-135m" \
      --out "$results/workloads/smollm2-135m/chat.jsonl" \
      || { tail -5 "$dir/workload-$name.log"; continue; }
    local cell=$results/cells/transformers-naive/smollm2-135m/chat/stream.json
    if timed "naive cell in $name ($weights weights)" "$dir/cell-$name.log" "${run[@]}" servingbench run-cell \
         --spec "@spec-$weights.json" --workload "$results/workloads/smollm2-135m/chat.jsonl" --out "$cell" \
         --results "$results"; then
      "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); w=r['windows'][0]; \
print('[build_images] cell', r['status'], '| completed', w['completed'], 'failed', w['failed'], \
'| output tokens requested/actual', w['output_tokens_requested_total'], w['output_tokens_actual_total'], \
'| e2e p50 ms', round(w['e2e_ms']['p50']), '| ttft p50 ms', round((w.get('ttft_ms') or {}).get('p50', 0)))" \
        "$work/$cell" || true
    else
      tail -5 "$dir/cell-$name.log"
    fi
  done
}

# ---- build / push / pin ------------------------------------------------------------------------
if [ "$CHECK" = 1 ]; then
  run_check
  exit 0
fi

if [ -n "$REGISTRY" ]; then
  case "$REGISTRY" in registry.invalid*) echo "--registry: give a registry you can push to" >&2; exit 2 ;; esac
  "$PY" containers/pin_images.py registry "$REGISTRY"
fi
mapfile -t ROWS < <("$PY" containers/pin_images.py list ${PROFILE:+--profile "$PROFILE"})
if [ "$LIST" = 1 ]; then printf '%s\n' "${ROWS[@]}"; exit 0; fi
[ "$ENGINE" != none ] || { echo "build_images: no docker or podman here" >&2; exit 2; }
if [ "$PUSH" = 1 ] && grep -q 'registry.invalid/' containers/images.yaml; then
  echo "--push: containers/images.yaml still names registry.invalid; add --registry REGISTRY" >&2; exit 2
fi

ctx=$(stage_context)
trap 'rm -rf "$ctx"' EXIT
for row in "${ROWS[@]}"; do
  read -r ref dockerfile users <<<"$row"
  echo "[build_images] $ref  <- $dockerfile  (for $users)"
  timed "build $ref" - "$ENGINE" "${ENGINE_ARGS[@]}" build "${BUILD_ARGS[@]}" -f "$dockerfile" -t "$ref" "$ctx"
  if [ "$PUSH" = 1 ]; then
    if [ "$ENGINE" = podman ]; then
      podman "${ENGINE_ARGS[@]}" push --digestfile "$ctx/digest" "$ref"
      digest=$(cat "$ctx/digest")
    else
      docker push "$ref" | tee "$ctx/push.log"
      digest=$(grep -o 'digest: sha256:[0-9a-f]\{64\}' "$ctx/push.log" | tail -1 | cut -d' ' -f2)
    fi
    "$PY" containers/pin_images.py pin "$ref" "$digest"
  fi
done
[ "$PUSH" = 1 ] && echo "[build_images] digests pinned in containers/images.yaml: review and commit it"
exit 0
