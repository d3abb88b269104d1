#!/bin/sh
# What each verb imports, and what it costs: python -X importtime per verb, summed.
# Usage: bench/importtime.sh   (needs ./setup.sh first; run as root)
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=$(head -n1 "$HERE/.venv/bin/hutch-fast" | sed 's/^#!//; s/ .*//')
WORK=$(mktemp -d /tmp/hutch-imports.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/b/rootfs/bin" && cp /bin/busybox "$WORK/b/rootfs/bin/" && ln -s busybox "$WORK/b/rootfs/bin/true"
cd "$WORK/b" && "$HERE/.venv/bin/hutch-fast" spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json
H="$PY -IS -X importtime $HERE/.venv/bin/hutch-fast --root $WORK/state"
printf '%-10s %8s %8s\n' verb modules "ms"
for verb in "state x" "create c" "start c" "kill c KILL" "delete -f c" "run r" "list" "spec --bundle $WORK" "features"; do
    $H $verb 2>"$WORK/it" >/dev/null || true
    # all imports in the command, including the forked helper before it re-execs
    awk -F'|' '/^import time:/ && $2+0==$2 {n++; s+=$2} END {printf "%-10s %8d %8.1f\n", v, n, s/1000}' v="${verb%% *}" "$WORK/it"
done
