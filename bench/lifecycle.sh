#!/bin/sh
# Side-by-side: hutch vs runc (and crun where it runs) on one busybox bundle, in one
# hyperfine run:  create + start + delete of /bin/true, and run of /bin/true.
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
set -- hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$WORK/out.md"
for rt in hutch runc crun; do
    case $rt in
        hutch) R="$HERE/.venv/bin/hutch-fast --root $WORK/hutch" ;;
        *) command -v $rt >/dev/null || continue; R="$rt --root $WORK/$rt" ;;
    esac
    # crun must be able to run here at all (it needs a cgroup layout it knows)
    if [ $rt = crun ] && ! $R run probe >"$WORK/crun.err" 2>&1; then
        echo "crun cannot run on this machine, left out: $(tail -n1 "$WORK/crun.err")"
        $R delete -f probe >/dev/null 2>&1 || true
        continue
    fi
    set -- "$@" -n "$rt create+start+delete" "sh -c '$R create b >/dev/null && $R start b && $R delete -f b'" \
        -n "$rt run" "$R run b"
done
"$@" >/dev/null
cat "$WORK/out.md"
