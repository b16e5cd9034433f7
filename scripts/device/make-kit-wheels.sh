#!/usr/bin/env bash
# Wheels of Snakemake and the kit's pure-Python dependencies for the GPU machine (Python 3.12),
# into .gwk/ (git-ignored). Needs a local Python 3.12 to build the sdist-only ones.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY312=${PY312:-$(ls ~/.pyenv/versions/3.12.*/bin/python3.12 2>/dev/null | head -1)}
[ -x "$PY312" ] || { echo "need a Python 3.12 (set PY312)"; exit 1; }
rm -rf .gwk && mkdir -p .gwk
"$PY312" -m venv /tmp/sb-py312 && /tmp/sb-py312/bin/pip install -q -U pip
/tmp/sb-py312/bin/pip wheel -q -w .gwk snakemake==9.27.1 pyyaml "pydantic==2.13.4" httpx psutil nvidia-ml-py
# py-spy: a static binary in a wheel, for scripts/device/profile_arm.py (issue 17).
/tmp/sb-py312/bin/pip download -q --only-binary :all: --no-deps -d .gwk py-spy==0.4.2
grep -qx '/.gwk/' .git/info/exclude 2>/dev/null || echo '/.gwk/' >> .git/info/exclude
du -sh .gwk
