#!/bin/sh
# Put servingbench into a framework image. Run by the Dockerfiles under containers/, inside the
# build, after `COPY . /opt/servingbench/src` of the context that benchmarks/build_images.sh
# stages (pyproject.toml, README.md, servingbench/, containers/).
#
#   install-servingbench.sh lock PYTHON LOCK   the image's Python env takes the whole lock
#                                              (pip --no-deps; plus $EXTRA_PINS if set), then
#                                              servingbench (--no-deps)
#   install-servingbench.sh beside PYTHON      a framework's own env (vLLM's image): add only the
#                                              runtime packages it lacks, pinned from runtime.txt,
#                                              then servingbench (--no-deps); nothing of vLLM's moves
#   install-servingbench.sh venv               a Python 3.10 venv of our own (uv) at
#                                              /opt/servingbench/venv, for images whose Python is
#                                              not ours to change (TGI 1.1 ships 3.9); `servingbench`
#                                              is linked into /usr/local/bin, the framework's PATH stays
#
# Every mode ends with `pip check`, a record of what is installed (/opt/servingbench/freeze.txt)
# and a smoke test of the runtime imports. Secrets are never needed here.
set -eu
SRC=/opt/servingbench/src
REQ=$SRC/containers/requirements
OUT=/opt/servingbench
mode=$1
shift

pip_for() {  # the installer for interpreter $1: its own pip, else uv (vLLM images may lack pip)
  if "$1" -m pip --version >/dev/null 2>&1; then
    echo "$1 -m pip install --no-cache-dir --disable-pip-version-check"
  else
    echo "uv pip install --no-cache --python $1 --break-system-packages"
  fi
}

check_for() {
  if "$1" -m pip --version >/dev/null 2>&1; then "$1" -m pip check; else uv pip check --python "$1"; fi
}

freeze_for() {
  if "$1" -m pip --version >/dev/null 2>&1; then "$1" -m pip freeze; else uv pip freeze --python "$1"; fi
}

case "$mode" in
  lock)
    py=$1 lock=$2
    pip=$(pip_for "$py")
    $pip --no-deps -r "$REQ/$lock"
    # EXTRA_PINS (a build arg of cpu.Dockerfile): pins laid over the lock, e.g. when the torch
    # is not the lock's own. Empty for every GPU image.
    [ -z "${EXTRA_PINS:-}" ] || $pip --no-deps $EXTRA_PINS
    ;;
  beside)
    py=$1
    pip=$(pip_for "$py")
    missing=""
    for dist in httpx psutil nvidia-ml-py; do
      if ! "$py" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" 2>/dev/null; then
        pin=$(grep -i "^$dist==" "$REQ/runtime.txt" | cut -d' ' -f1)
        missing="$missing $pin"
      fi
    done
    # Only what is missing, at our pin; its own dependencies are taken as the env has them
    # (pip's only-if-needed), so no package of the framework's changes version.
    [ -z "$missing" ] || $pip $missing
    ;;
  venv)
    export UV_PYTHON_INSTALL_DIR=$OUT/python UV_NO_CACHE=1
    uv venv --python 3.10 --python-preference only-managed "$OUT/venv"
    py=$OUT/venv/bin/python
    pip="uv pip install --python $py"
    $pip --no-deps -r "$REQ/runtime.txt"
    ;;
  *)
    echo "usage: $0 lock PYTHON LOCK | beside PYTHON | venv" >&2
    exit 2
    ;;
esac

$pip --no-deps "$SRC"
check_for "$py"
freeze_for "$py" > "$OUT/freeze.txt"
if [ "$mode" = venv ]; then
  ln -sf "$OUT/venv/bin/servingbench" /usr/local/bin/servingbench
fi
# The in-container runtime (DESIGN §2) must import with what this image has.
"$py" -c "import servingbench.runtime.cell, servingbench.runtime.pool, servingbench.runtime.monitor, servingbench.runtime.frameworks as f; print('servingbench runtime ok; arms:', ', '.join(f.known_arms()))"
servingbench --help >/dev/null
rm -rf "$SRC/servingbench" "$SRC/build" "$SRC"/*.egg-info
