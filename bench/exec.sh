#!/bin/sh
# Side-by-side exec latency: `exec ID /bin/true` into a running busybox container,
# hutch vs runc (and crun where it runs), in one hyperfine run.
# Usage: bench/exec.sh [runs]   (needs ./setup.sh first; run as root)
set -eu
RUNS=${1:-50}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/hutch-bench.XXXXXX)
STARTED=""
cleanup() {
    for rt in $STARTED; do
        case $rt in
            hutch) "$HERE/.venv/bin/hutch-fast" --root "$WORK/hutch" delete -f bx ;;
            *) $rt --root "$WORK/$rt" delete -f bx ;;
        esac >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
B=$WORK/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys"
cp /bin/busybox "$B/rootfs/bin/"
for a in true sleep; do ln -s busybox "$B/rootfs/bin/$a"; done
cd "$B"
"$HERE/.venv/bin/hutch-fast" spec
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"sleep", "100000"/' config.json
set -- hyperfine -N --warmup 5 --runs "$RUNS" --export-markdown "$WORK/out.md"
for rt in hutch runc crun; do
    case $rt in
        hutch) R="$HERE/.venv/bin/hutch-fast --root $WORK/hutch" ;;
        *) command -v $rt >/dev/null || continue; R="$rt --root $WORK/$rt" ;;
    esac
    # a bundle and a top-level cgroup of its own per runtime
    mkdir -p "$WORK/$rt-bundle"
    sed "s|\"linux\": {|\"linux\": {\"cgroupsPath\": \"/hutch-bench-exec-$rt\",|; s|\"path\": \"rootfs\"|\"path\": \"$B/rootfs\"|" \
        "$B/config.json" > "$WORK/$rt-bundle/config.json"
    STARTED="$STARTED $rt"
    if ! $R run -d -b "$WORK/$rt-bundle" bx </dev/null >"$WORK/$rt.err" 2>&1; then
        echo "$rt cannot run on this machine, left out: $(tail -n1 "$WORK/$rt.err")"
        $R delete -f bx >/dev/null 2>&1 || true
        continue
    fi
    set -- "$@" -n "$rt exec /bin/true" "$R exec bx /bin/true"
done
"$@" >/dev/null
cat "$WORK/out.md"
