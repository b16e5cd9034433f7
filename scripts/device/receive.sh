#!/usr/bin/env bash
# On the GPU machine: put one transport folder's files where the install scripts look for them
# (.tN/gw -> /tmp/gw, .tN/sg -> /tmp/sg, .tN/kit -> /tmp/gwk). Made by scripts/device/pack-transport.sh.
#   bash scripts/device/receive.sh .tN
set -euo pipefail
src=${1:?usage: receive.sh .tN}
root=${DEST_ROOT:-/tmp}
[ -d "$src" ] || { echo "receive: no folder $src (carry it with this call)" >&2; exit 2; }
n=0
for pair in gw:gw sg:sg kit:gwk; do
  from=$src/${pair%%:*} to=$root/${pair##*:}
  [ -d "$from" ] || continue
  mkdir -p "$to" && cp -r "$from"/. "$to"/
  n=$((n + $(find "$from" -maxdepth 1 -type f | wc -l)))
done
echo "[receive] $src: $n files into $root/{gw,sg,gwk}; now $(find "$root"/gw "$root"/sg "$root"/gwk -maxdepth 1 -type f 2>/dev/null | wc -l) there"
