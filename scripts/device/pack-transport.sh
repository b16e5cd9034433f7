#!/usr/bin/env bash
# Repack both wheelhouses and the kit's wheels into transport folders .t1, .t2, ... (git-ignored)
# of at most MAX_MIB MiB each (default: what a call leaves beside the tree, 4 MiB spare, at most
# 48), and print the exact device calls. Run from the repo
# root, after
#     bash ../shared/tools/gpu-wheelhouse/make-wheelhouse.sh      # .gw-dl/ (vLLM, transformers serve)
#     bash ../shared/tools/sglang-wheelhouse/make-wheelhouse.sh   # .sg-dl/ (SGLang 0.5.16)
#     bash scripts/device/make-kit-wheels.sh                      # .gwk/   (Snakemake, the kit's deps)
# Why: every device call carries the tracked tree as well as the carried folder, 64 MiB in all; the
# wheelhouses' own 58-60 MiB folders no longer fit beside the tree. Nothing is re-downloaded: the
# files listed in each wheelhouse's SHA256SUMS are hard-linked (files larger than a folder are cut
# into .part-aa, -ab, ... in .t-parts/), with each wheelhouse's metadata and install script in
# every folder. On the device, scripts/device/receive.sh puts a folder's files in /tmp/gw, /tmp/sg
# and /tmp/gwk, and scripts/device/install.sh calls the wheelhouses' own install-on-device.sh:
# vLLM + transformers serve into /tmp/site, SGLang into /tmp/sgsite.
#   MAX_MIB=24  SHARED_TOOLS=../shared/tools  HOUSES=gw,sg  KIT=1  START_ARGS="vllm sglang ..."
set -euo pipefail
ROOT=$(pwd)
git rev-parse --show-toplevel >/dev/null 2>&1 || { echo "pack-transport: run this from a git repo root" >&2; exit 2; }
[ "$(git rev-parse --show-toplevel)" = "$ROOT" ] || { echo "pack-transport: run this from the repo root ($(git rev-parse --show-toplevel))" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "${SHARED_TOOLS:-}" ]; then
  for d in "$ROOT/../shared/tools" "$ROOT/shared/tools"; do [ -d "$d" ] && SHARED_TOOLS=$(cd "$d" && pwd) && break; done
fi
EXCL=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCL")"
for pat in '/.t[0-9]*/' '/.t-parts/'; do grep -qxF "$pat" "$EXCL" 2>/dev/null || echo "$pat" >> "$EXCL"; done
TREE=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
args=(--root "$ROOT" --houses "${HOUSES:-gw,sg}" --tree-bytes "$TREE")
[ -n "${MAX_MIB:-}" ] && args+=(--max-bytes $(( MAX_MIB * 1024 * 1024 )))
[ -n "${SHARED_TOOLS:-}" ] && args+=(--shared-tools "$SHARED_TOOLS")
[ "${KIT:-1}" = "1" ] || args+=(--no-kit)
[ -n "${MAX_BYTES:-}" ] && args+=(--max-bytes "$MAX_BYTES")  # tests: folders smaller than a MiB
[ -n "${START_ARGS:-}" ] && args+=(--start-args "$START_ARGS")
rc=0
python3 "$HERE/pack_transport.py" "${args[@]}" || rc=$?
for d in .t[0-9]*/; do
  [ -d "$d" ] || continue
  git check-ignore -q "$d" || { echo "pack-transport: $d is not git-ignored (check $EXCL)" >&2; exit 2; }
done
exit $rc
