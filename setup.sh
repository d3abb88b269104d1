#!/bin/sh
# Sets up hutch on a Debian/Ubuntu machine, then runs a first container.
# Idempotent and quick when everything is already there.  Run as root.
set -eu
cd "$(dirname "$0")"
HERE=$(pwd)

# --- system packages -------------------------------------------------------------
# python3 (>= 3.11) and venv; busybox-static builds the test image; runc is the
# reference runtime the conformance tests and benchmarks compare against;
# hyperfine runs the benchmarks; iproute2 is used by the network tests; libseccomp2
# compiles seccomp profiles; golang-github-containers-common has Podman's default
# seccomp profile, which the tests load; uidmap (newuidmap) serves rootless id maps;
# Podman (with conmon, netavark, catatonit) and containerd drive hutch in the e2e
# tier (no service is started: the tests run their own, privately); catatonit is
# also the sandbox's PID 1; bubblewrap is what bench/api.py compares the library to;
# nftables (libnftables) holds the container networks' rules, passt (pasta) and
# slirp4netns give rootless containers a network, iperf3 is bench/network.sh's,
# curl is the network tests' client.
PKGS="python3 python3-venv busybox-static runc hyperfine iproute2 libseccomp2 golang-github-containers-common
      uidmap podman conmon containernetworking-plugins netavark catatonit containerd
      bubblewrap passt slirp4netns iperf3 nftables curl"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
fi

# --- the interpreter: the first python >= 3.11, resolved past any shim ----------
# The distribution's /usr/bin/python3 comes first: it links libpython statically
# and starts about 2 ms faster than a shared-library build, which every verb pays.
PY=""
for cand in /usr/bin/python3 python3.13 python3.12 python3.11 python3; do
    c=$(command -v "$cand" 2>/dev/null) || continue
    real=$("$c" -c 'import sys; print(sys.executable if sys.version_info >= (3, 11) else "")' 2>/dev/null) || continue
    if [ -n "$real" ]; then PY=$real; break; fi
done
[ -n "$PY" ] || { echo "setup: python >= 3.11 is required" >&2; exit 1; }

# --- CRIU >= 4.1 for checkpoint/restore (Debian 12's 3.17 fails on recent kernels):
# built from Debian 13's source package into /opt/criu4, then named in
# /etc/hutch/hutch.conf so that hutch finds it (--criu and $HUTCH_CRIU still win)
if [ "$(id -u)" = 0 ]; then
    if sh tools/install-criu.sh; then
        mkdir -p /etc/hutch
        if ! grep -qs '^criu *=' /etc/hutch/hutch.conf; then
            echo "criu = /opt/criu4/sbin/criu" >> /etc/hutch/hutch.conf
        fi
    else
        echo "setup: note: CRIU could not be built; checkpoint/restore will say so"
    fi
fi

# --- the virtual environment -------------------------------------------------------
if [ -x .venv/bin/python ] && [ "$(readlink -f .venv/bin/python)" != "$(readlink -f "$PY")" ]; then
    echo "setup: .venv was made with another interpreter; recreating it"
    rm -rf .venv
fi
# A venv made before ruff joined the test extras lacks only that: install again.
if [ ! -x .venv/bin/python ] || [ ! -x .venv/bin/ruff ] ||
   ! .venv/bin/python -c 'import hutch, pytest, hypothesis, pyroute2, dns.message' 2>/dev/null; then
    echo "setup: creating .venv with $PY (or completing it)"
    "$PY" -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
fi

# --- the guarded interpreter (CVE-2019-5736 class, see src/hutch/linux/exeguard.py)
# hutch runs from an immutable copy of the venv's interpreter: nothing can open it
# for writing, so a container that reaches it through /proc/<pid>/exe cannot
# overwrite it, and the process that enters a container needs no re-exec from a
# read-only clone (~7 ms per create and exec).  Where the filesystem refuses the
# flag, hutch still works and re-execs from the clone every time.
# To remove it:  chattr -i /usr/local/lib/hutch/bin/python3 && rm -r /usr/local/lib/hutch
VPY=$(readlink -f .venv/bin/python)
GUARD_DIR=/usr/local/lib/hutch
GPY=$GUARD_DIR/bin/python3
if [ "$(id -u)" = 0 ]; then
    if ! cmp -s "$VPY" "$GPY"; then
        mkdir -p "$GUARD_DIR/bin"
        [ -e "$GPY" ] && "$VPY" -IS "$HERE/src/hutch/linux/immutable.py" clear "$GPY"
        cp "$VPY" "$GPY.tmp"
        mv -f "$GPY.tmp" "$GPY"
    fi
    printf 'home = %s\n' "$(dirname "$VPY")" > "$GUARD_DIR/pyvenv.cfg"
    if ! "$VPY" -IS "$HERE/src/hutch/linux/immutable.py" set "$GPY"; then
        echo "setup: note: $GPY cannot be made immutable here; hutch will re-exec" \
             "its helper from a read-only clone instead (slower, equally safe)"
    fi
    RUN_PY=$GPY
else
    RUN_PY=$HERE/.venv/bin/$(basename "$VPY")
    [ -e "$RUN_PY" ] || RUN_PY=$VPY
fi

# --- the launcher: that interpreter, isolated (-I) and without site (-S) so that
# every verb starts fast and no PYTHON* variable from the caller applies.
LAUNCHER=$HERE/.venv/bin/hutch-fast
# the venv's site-packages go last on the path: only a verb that imports a
# dependency (pyroute2, dnspython: the networks) ever searches it
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat > "$LAUNCHER.tmp" <<LAUNCH
#!$RUN_PY -IS
import sys
sys.path.insert(0, "$HERE/src")
sys.path.append("$SITE")
from hutch.cli import entry
entry()
LAUNCH
chmod 755 "$LAUNCHER.tmp"
mv "$LAUNCHER.tmp" "$LAUNCHER"
ln -sf "$LAUNCHER" /usr/local/bin/hutch

# --- a first container, on the embedded default -------------------------------------
if [ "${HUTCH_SETUP_NO_DEMO:-}" = "" ]; then
    hutch sandbox -- sh -c 'echo "hello from a hutch sandbox: hostname $(hostname), uid $(id -u) (host uid $(set -- $(cat /proc/self/uid_map); echo $2)), / is $(grep -E "^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / " /proc/self/mountinfo | cut -d" " -f6 | cut -d, -f1 | head -n1)"'
fi
