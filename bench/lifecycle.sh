#!/bin/sh
# Side-by-side: hutch vs runc (and crun where it runs) on one busybox bundle.
#   create + start + delete of /bin/true, and run of /bin/true.
# Usage: bench/lifecycle.sh [runs]   (needs ./setup.sh first; run as root)
set -eu
RUNS=${1:-30}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/hutch-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
B=$WORK/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys"
cp /bin/busybox "$B/rootfs/bin/"
ln -s busybox "$B/rootfs/bin/true"
cd "$B"
"$HERE/.venv/bin/hutch-fast" spec
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"true"/; s/"sh"/"true"/' config.json
H="$HERE/.venv/bin/hutch-fast --root $WORK/h"
R="runc --root $WORK/r"
hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$WORK/out.md" \
  -n "hutch create+start+delete" "sh -c '$H create b >/dev/null && $H start b && $H delete -f b'" \
  -n "runc create+start+delete" "sh -c '$R create b >/dev/null && $R start b && $R delete -f b'" \
  -n "hutch run" "$H run b" \
  -n "runc run" "$R run b"
cat "$WORK/out.md"
