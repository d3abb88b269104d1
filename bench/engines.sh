#!/bin/sh
# Side-by-side through the engines, in one hyperfine run:
#   podman --runtime X run --rm IMAGE true      (conmon, default bridge network)
#   ctr run --rm IMAGE ID true                  (containerd's runc v2 shim)
# for X = hutch and runc.  Everything runs in a private network namespace with
# private Podman storage and a private containerd, all removed at the end.
# Usage: bench/engines.sh [runs]   (needs ./setup.sh first; run as root)
set -eu
RUNS=${1:-20}
HERE=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/hutch-bench-engines.XXXXXX)
NS=hutch-bench-$$
IMAGE=localhost/busybox:latest
HUTCH=$HERE/.venv/bin/hutch-fast
created=""
for p in /run/containers /var/lib/containers /etc/containers/networks /run/containerd; do
    [ -e "$p" ] || created="$created $p"
done
ip netns add "$NS"
N="nsenter --net=/run/netns/$NS"
export CONTAINERS_CONF=$W/containers.conf
CTR="ctr --address $W/cd/containerd.sock --namespace hutch-bench"
cleanup() {
    set +e
    for c in $($N $CTR containers ls -q 2>/dev/null); do
        $N $CTR task rm -f "$c" >/dev/null 2>&1; $N $CTR containers rm "$c" >/dev/null 2>&1
    done
    [ -f "$W/cd.pid" ] && kill "$(cat "$W/cd.pid")" && sleep 1
    $N $PODMAN rm -af -t 0 >/dev/null 2>&1; $N $PODMAN system reset -f >/dev/null 2>&1
    ip netns del "$NS"
    for p in $created; do rm -rf "$p"; done
    for d in /sys/fs/cgroup/*/libpod_parent /sys/fs/cgroup/*/hutch-bench; do
        [ -d "$d" ] && { rmdir "$d"/* 2>/dev/null; rmdir "$d"; }
    done
    grep -o "$W[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
    rm -rf "$W"
}
trap cleanup EXIT
nf=$(ulimit -Hn)
mkdir -p "$W/networks" "$W/cd" "$W/bb/bin" "$W/bb/etc" "$W/bb/tmp"
cat > "$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=$nf:$nf", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime_supports_json = ["runc", "hutch"]
[engine.runtimes]
hutch = ["$HUTCH"]
runc = ["/usr/sbin/runc"]
[network]
network_config_dir = "$W/networks"
CONF
PODMAN="podman --root $W/storage --runroot $W/run --tmpdir $W/tmp"
cp /bin/busybox "$W/bb/bin/"; ln -s busybox "$W/bb/bin/true"; ln -s busybox "$W/bb/bin/sh"
echo 'root:x:0:0:root:/root:/bin/sh' > "$W/bb/etc/passwd"
tar -C "$W/bb" -cf "$W/bb.tar" .
$N $PODMAN import --change 'CMD ["/bin/sh"]' "$W/bb.tar" $IMAGE >/dev/null 2>&1
$N $PODMAN save --format docker-archive -o "$W/bb-docker.tar" $IMAGE >/dev/null 2>&1
cat > "$W/cd/config.toml" <<CONF
version = 2
root = "$W/cd/root"
state = "$W/cd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/cd/containerd.sock"
[ttrpc]
  address = "$W/cd/containerd.sock.ttrpc"
CONF
$N containerd --config "$W/cd/config.toml" >"$W/cd/log" 2>&1 &
echo $! > "$W/cd.pid"
for _ in $(seq 50); do $N $CTR version >/dev/null 2>&1 && break; sleep 0.2; done
$N $CTR images import "$W/bb-docker.tar" >/dev/null
set -- hyperfine -N --warmup 3 --runs "$RUNS" --export-markdown "$W/out.md"
for rt in hutch runc; do
    bin=$HUTCH; [ $rt = runc ] && bin=/usr/sbin/runc
    set -- "$@" -n "podman run --rm ($rt)" "$N $PODMAN --runtime $rt run --rm $IMAGE true" \
        -n "ctr run --rm ($rt)" "$N $CTR run --rm --runtime io.containerd.runc.v2 --runc-binary $bin --runc-root $W/cd/runc-$rt $IMAGE b-$rt true"
done
"$@" >/dev/null
cat "$W/out.md"
