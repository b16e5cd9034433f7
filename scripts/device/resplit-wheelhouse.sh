#!/usr/bin/env bash
# Repack the gpu-wheelhouse's .gw1..5 into .gwx1..6 (git-ignored) so that each device call fits.
# A device call carries the tracked tree too, and its limit is 64 MiB in all: with the H100
# example results the tree is ~6.5 MB, and .gw1's 60.8 MB wheel part no longer fits beside it.
# Here vLLM's wheel is cut into 58 MB parts (.gwx1..5; install-on-device.sh reassembles
# `*.part-*` in name order and checks the whole wheel's sha256) and the other wheels go in .gwx6.
# Carry .gwx5 together with .gwk (12 + 28 MB). Run make-wheelhouse.sh first.
set -euo pipefail
cd "$(dirname "$0")/../.."
wheel=$(ls .gw-dl/vllm-*.whl)
name=$(basename "$wheel")
rm -rf .gwx-parts .gwx[1-6] && mkdir .gwx-parts
split -b 58000000 "$wheel" ".gwx-parts/$name.part-"
parts=(.gwx-parts/*)
[ "${#parts[@]}" -eq 5 ] || { echo "expected 5 parts of $name, got ${#parts[@]}"; exit 1; }
for i in 1 2 3 4 5 6; do
  mkdir ".gwx$i" && cp .gw1/MANIFEST .gw1/SHA256SUMS .gw1/install-on-device.sh .gw1/make_dummy_model.py ".gwx$i/"
done
for i in 0 1 2 3 4; do ln "${parts[$i]}" ".gwx$((i + 1))/"; done
find .gw5 -maxdepth 1 -name '*.whl' -exec cp -l {} .gwx6/ \;
du -sbL .gwx[1-6] | sed 's/^/  /'
