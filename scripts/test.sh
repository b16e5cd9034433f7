#!/usr/bin/env bash
# The test suite, from a fresh clone: create the environment (idempotent), install the
# headless browser the report test uses, then run pytest. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser test will skip"
fi
. .venv/bin/activate
python -m pytest -q -p no:cacheprovider "$@"
