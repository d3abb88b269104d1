#!/bin/sh
# What cgroup setup adds to create: create+delete with no resources block, and with
# a full one (memory, swap, cpu shares/quota/period, cpuset, pids, devices).
# Usage: bench/cgroups.sh [runs]   (needs ./setup.sh first; run as root)
set -eu
RUNS=${1:-30}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/hutch-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
for b in plain full; do
    mkdir -p "$WORK/$b/rootfs/bin" "$WORK/$b/rootfs/proc" "$WORK/$b/rootfs/dev" "$WORK/$b/rootfs/sys"
    cp /bin/busybox "$WORK/$b/rootfs/bin/" && ln -s busybox "$WORK/$b/rootfs/bin/true"
    (cd "$WORK/$b" && "$HERE/.venv/bin/hutch-fast" spec)
done
"$HERE/.venv/bin/python" - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
for b in ("plain", "full"):
    p = f"{w}/{b}/config.json"
    c = json.load(open(p))
    c["process"]["terminal"] = False
    c["process"]["args"] = ["true"]
    r = c["linux"].setdefault("resources", {})
    if b == "plain":
        r.clear()
    else:
        r.update(memory={"limit": 256 << 20, "swap": 256 << 20, "reservation": 128 << 20},
                 cpu={"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
                 pids={"limit": 100})
    json.dump(c, open(p, "w"))
PY
set --
for rt in hutch runc; do
    case $rt in
        hutch) R="$HERE/.venv/bin/hutch-fast --root $WORK/s-hutch" ;;
        *) command -v $rt >/dev/null || continue; R="$rt --root $WORK/s-$rt" ;;
    esac
    set -- "$@" -n "$rt create+delete, no resources" "sh -c '$R create -b $WORK/plain b >/dev/null && $R delete -f b'" \
        -n "$rt create+delete, full resources" "sh -c '$R create -b $WORK/full b >/dev/null && $R delete -f b'"
done
hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$WORK/out.md" "$@" >/dev/null
cat "$WORK/out.md"
