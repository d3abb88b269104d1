#!/bin/sh
# Container networks, side by side in one run (docs/benchmarks.md):
#   1. a sandbox's start on a hutch network against the same sandbox with
#      loopback only, through the CLI and through the library (hutch.run), with
#      the network already active (another container on it) and cold (the
#      first container, which starts the network's daemon and bridge);
#   2. `podman run --rm --network bridge` on the same busybox rootfs;
#   3. TCP throughput container -> host over the veth (iperf3), against a plain
#      veth pair made with `ip` between two namespaces.
# Everything runs in private network namespaces, with private state, Podman
# storage and hutch configuration, all removed at the end.
# Usage: bench/network.sh [runs]   (root, after ./setup.sh)
set -eu
RUNS=${1:-30}
HERE=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/hutch-bench-net.XXXXXX)
chmod 755 "$W"
NS=hutch-bnet-$$
CT=hutch-bct-$$
HUTCH="$HERE/.venv/bin/hutch-fast --root $W/root --config-dir $W/config"
PY=$HERE/.venv/bin/python
created=""
for p in /run/containers /var/lib/containers /etc/containers/networks; do
    [ -e "$p" ] || created="$created $p"
done
ip netns add "$NS"
ip netns add "$CT"
N="nsenter --net=/run/netns/$NS"
export CONTAINERS_CONF=$W/containers.conf
PODMAN="podman --root $W/storage --runroot $W/run --tmpdir $W/tmp"
cleanup() {
    set +e
    for c in $(ls "$W/root" 2>/dev/null); do
        case $c in .*) ;; *) $N $HUTCH delete -f "$c" >/dev/null 2>&1 ;; esac
    done
    $N $PODMAN rm -af -t 0 >/dev/null 2>&1; $N $PODMAN system reset -f >/dev/null 2>&1
    for ns in "$NS" "$CT"; do
        for p in $(ip netns pids "$ns"); do kill -9 "$p"; done
        ip netns del "$ns"
    done
    for p in $created; do rm -rf "$p"; done
    for d in /sys/fs/cgroup/*/libpod_parent; do
        [ -d "$d" ] || continue
        if [ "$(stat -f -c %T "$d")" = tmpfs ]; then
            # conmon mkdirs controllers this hybrid host lacks (hugetlb, net_cls,
            # perf_event...) as plain directories on the cgroup tmpfs: not cgroups
            rm -rf "$d"; rmdir "$(dirname "$d")" 2>/dev/null
        else
            # Podman's cgroups of this run, deepest first
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        fi
    done
    grep -o "$W[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
    rm -rf "$W"
}
trap cleanup EXIT
$N ip link set lo up
ip -n "$CT" link set lo up
mkdir -p "$W/root" "$W/config" "$W/networks" "$W/bb/bin" "$W/bb/etc" "$W/bb/tmp" "$W/bb/proc" \
    "$W/bb/sys" "$W/bb/dev" "$W/bb/run"
chmod 755 "$W/root" "$W/bb"
cp /bin/busybox "$W/bb/bin/"; ln -s busybox "$W/bb/bin/true"; ln -s busybox "$W/bb/bin/sh"
echo 'root:x:0:0:root:/root:/bin/sh' > "$W/bb/etc/passwd"
nf=$(ulimit -Hn)
cat > "$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=$nf:$nf", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_config_dir = "$W/networks"
CONF

echo "## Start on a network (busybox rootfs, /bin/true, $RUNS runs each)"
echo
# a container that keeps the default network active, as in normal use
$N $HUTCH sandbox -d --name keep --network default -- sleep 100000 >/dev/null
$N hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$W/start.md" \
    -n "hutch sandbox (loopback)" "$HUTCH sandbox --rootfs $W/bb -- true" \
    -n "hutch sandbox --network default" "$HUTCH sandbox --rootfs $W/bb --network default -- true" \
    -n "podman run --rm --network bridge" "$PODMAN run --rm --network bridge --rootfs $W/bb true" \
    >/dev/null
cat "$W/start.md"
echo
$N "$PY" - "$W" <<'PYEOF'
import statistics, sys, time
W = sys.argv[1]
import hutch
def p50(**kw):
    ts = []
    for _ in range(33):
        t = time.perf_counter()
        hutch.run(["true"], root=f"{W}/root", config_dir=f"{W}/config", rootfs=f"{W}/bb", **kw)
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts[3:])
lo, net = p50(), p50(network="default")
print("| library, p50 of 30 | ms |\n|---|---|")
print(f"| `hutch.run(['true'])` (loopback) | {lo:.1f} |")
print(f"| `hutch.run(['true'], network='default')` | {net:.1f} (+{net - lo:.1f}) |")
PYEOF
echo
$N $HUTCH delete -f keep >/dev/null
echo "Cold: the first container on a network starts its daemon and bridge, and the"
echo "last one removes them:"
echo
$N hyperfine -N --warmup 1 --runs 10 --export-markdown "$W/cold.md" \
    -n "hutch sandbox --network default (cold)" "$HUTCH sandbox --rootfs $W/bb --network default -- true" \
    >/dev/null
cat "$W/cold.md"
echo

echo "## Throughput, container -> host (iperf3 -t 5, TCP)"
echo
$N iperf3 -s -D -p 5201 --pidfile "$W/iperf.pid"
sleep 0.3
$N $HUTCH sandbox -d --name keep --network default -- sleep 100000 >/dev/null
via_hutch=$($N $HUTCH sandbox --network default -- iperf3 -c 10.77.0.1 -p 5201 -t 5 -J |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
$N $HUTCH delete -f keep >/dev/null
$N ip link add bench0 type veth peer name bench1 netns "$CT"
$N ip addr add 10.123.0.1/24 dev bench0
$N ip link set bench0 up
ip -n "$CT" addr add 10.123.0.2/24 dev bench1
ip -n "$CT" link set bench1 up
plain=$(ip netns exec "$CT" iperf3 -c 10.123.0.1 -p 5201 -t 5 -J |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
kill "$(cat "$W/iperf.pid")"
"$PY" - "$via_hutch" "$plain" <<'PYEOF'
import sys
h, p = float(sys.argv[1]), float(sys.argv[2])
print("| path | Gbit/s | vs plain veth |\n|---|---|---|")
print(f"| plain veth pair (`ip link add ... type veth`) | {p:.2f} | 1.00 |")
print(f"| hutch sandbox on the default network (veth + bridge + nftables) | {h:.2f} | {h / p:.2f} |")
PYEOF
