#!/usr/bin/env bash
# On the GPU machine, after every transport folder went through receive.sh: install
#   1. vLLM + transformers serve (gpu-wheelhouse)  into /tmp/site    by its own install-on-device.sh
#   2. SGLang 0.5.16 (sglang-wheelhouse)            into /tmp/sgsite  by its own install-on-device.sh
#      (apart: it needs transformers 5.12.1 and tokenizers 0.22.2, the other arms the image's 5.17;
#      configs/h200-dummy.yaml gives the sglang arm PYTHONPATH=/tmp/sgsite)
#   3. the kit's wheels (Snakemake, pydantic, ...)   into /tmp/site-kit
# and unpack SGLang's JIT-kernel cache when one was carried. Each wheelhouse script checks every
# file's sha256 and skips work already done, so a rerun is cheap. Env: SG_SMOKE=0 skips SGLang's
# import test (25 s); DEST_ROOT (default /tmp).
set -euo pipefail
T=${DEST_ROOT:-/tmp}
t0=$(date +%s)
# A lease that carried only one wheelhouse (pack-transport.sh HOUSES=gw) installs that one.
[ -f "$T/gw/install-on-device.sh" ] || [ -f "$T/sg/install-on-device.sh" ] ||
  { echo "install: neither $T/gw nor $T/sg has its install-on-device.sh: run receive.sh on every .tN first" >&2; exit 2; }
if [ -f "$T/gw/install-on-device.sh" ]; then
  env -u PYTHONPATH GW="$T/gw" SITE=/tmp/site bash "$T/gw/install-on-device.sh"
else echo "[install] no vLLM wheelhouse carried: the vllm and transformers-serve arms cannot run"; fi
if [ -f "$T/sg/install-on-device.sh" ]; then
  env -u PYTHONPATH SG="$T/sg" SITE=/tmp/sgsite SMOKE="${SG_SMOKE:-1}" bash "$T/sg/install-on-device.sh"
else echo "[install] no SGLang wheelhouse carried: the sglang arms cannot run"; fi
(cd "$T/gwk" && sha256sum -c --quiet SHA256SUMS) || { echo "install: kit wheel sha256 mismatch" >&2; exit 3; }
# py-spy when carried (scripts/device/profile_arm.py): its binary lands in /tmp/site-kit/bin, on
# start.sh's PATH. In the same pip call: a second --target install would skip the existing bin/.
spy=(); ls "$T/gwk"/py_spy-*.whl >/dev/null 2>&1 && spy=(py-spy)
env -u PYTHONPATH python3 -m pip install -q --disable-pip-version-check --no-index --find-links "$T/gwk" \
  --target /tmp/site-kit snakemake pyyaml pydantic httpx psutil nvidia-ml-py "${spy[@]}" 2>&1 | tail -2 || true
python3 -c "import sys; sys.path[:0] = ['/tmp/site-kit']; import snakemake, yaml, pydantic" ||
  { echo "install: the kit's wheels did not install into /tmp/site-kit" >&2; exit 3; }
if [ -f "$T/sg/tvm_ffi_cache.tar.gz" ] && [ ! -d "$HOME/.cache/tvm-ffi" ]; then
  mkdir -p "$HOME/.cache" && tar -xzf "$T/sg/tvm_ffi_cache.tar.gz" -C "$HOME/.cache"
  echo "[install] SGLang JIT-kernel cache: $(ls "$HOME/.cache/tvm-ffi" | wc -l) modules"
fi
echo "[install] done in $(( $(date +%s) - t0 )) s: /tmp/site (vLLM), /tmp/sgsite (SGLang), /tmp/site-kit (kit)"
