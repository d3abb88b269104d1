#!/bin/sh
# Provides CRIU >= 4.1 for hutch's checkpoint/restore, at $PREFIX/sbin/criu
# (default /opt/criu4).  Called by setup.sh; quick when a working one is there.
#
# Debian 12 ships criu 3.17, which fails on recent kernels (it does not know the
# [vvar_vclock] mapping: "Unexpected rt vDSO area bounds").  Debian 13 has 4.1.x,
# but its binary package would pull a newer libc.  So this builds CRIU from
# Debian 13's *source* package with Debian 12's toolchain and libraries:
#   1. build dependencies from the configured (bookworm) archive;
#   2. a temporary deb-src entry for trixie (removed on exit, whatever happens);
#   3. the upstream tarball, checked against the signed Sources index, plus
#      Debian's patches when the mirror serves them;
#   4. hutch's own patches from tools/criu-patches/ (fixes for recent kernels);
#   5. `make criu`, installed under $PREFIX only (/usr/sbin/criu is untouched);
#   6. `criu check` must pass.
# $PREFIX/hutch-patches lists the patches a build has; a build without all of
# today's patches is rebuilt.
#
# CRIU probes the kernel for ~25 ms at every start unless it finds its cache,
# which upstream keeps only on a tmpfs (/run is not one on every host, and is
# ext4 here).  Patch 0002 names the cache after the boot's id instead
# (/run/criu-<boot id>.kdat), so a stale one is never read and no tmpfs is needed.
# Usage: tools/install-criu.sh [--force]      (as root; env PREFIX, SUITE, JOBS)
set -eu
PREFIX=${PREFIX:-/opt/criu4}
SUITE=${SUITE:-trixie}
JOBS=${JOBS:-$(nproc)}
CRIU=$PREFIX/sbin/criu
HERE=$(cd "$(dirname "$0")" && pwd)
PATCHES=$(cd "$HERE/criu-patches" && ls *.patch 2>/dev/null | tr '\n' ' ')
SRCLIST=/etc/apt/sources.list.d/hutch-criu-$SUITE-src.sources
export DEBIAN_FRONTEND=noninteractive

works() {   # a CRIU >= 4.1 that passes its own kernel check
    [ -x "$1" ] || return 1
    v=$("$1" --version 2>/dev/null | awk '/^Version:/{print $2}')
    major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
    [ -n "$major" ] && { [ "$major" -gt 4 ] || { [ "$major" -eq 4 ] && [ "${minor:-0}" -ge 1 ]; }; } || return 1
    "$1" check >/dev/null 2>&1 || return 1
    [ "$(cat "$PREFIX/hutch-patches" 2>/dev/null)" = "$PATCHES" ]
}

if [ "${1:-}" != "--force" ] && works "$CRIU"; then
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install-criu: run as root" >&2; exit 1; }

WORK=$(mktemp -d /tmp/hutch-criu-build.XXXXXX)
cleanup() {
    if [ -e "$SRCLIST" ]; then rm -f "$SRCLIST"; apt-get update -qq || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "install-criu: building CRIU from Debian $SUITE's source into $PREFIX"
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential pkgconf dpkg-dev \
    xz-utils patch protobuf-c-compiler libprotobuf-c-dev protobuf-compiler \
    libprotobuf-dev libnl-3-dev libnet1-dev libcap-dev libbsd-dev libgnutls28-dev \
    libnftables-dev uuid-dev python3 iproute2 iptables >/dev/null

uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$uri" ] || uri=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$uri" ] || { echo "install-criu: no Debian archive in apt's sources" >&2; exit 1; }
cat > "$SRCLIST" <<EOF
Types: deb-src
URIs: $uri
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt-get update -qq
ver=$(apt-cache showsrc criu | awk '/^Version:/{print $2}' | sort -V | tail -n1)
up=${ver%-*}
echo "install-criu: criu $ver"
cd "$WORK"
chmod 755 "$WORK"
apt-get source --download-only -qq "criu=$ver" >/dev/null 2>&1 || true
orig=$(ls criu_"$up".orig.tar.* 2>/dev/null | head -n1 || true)
[ -n "$orig" ] || { echo "install-criu: could not download criu_$up.orig.tar.*" >&2; exit 1; }
want=$(apt-cache showsrc criu | awk -v f="$orig" -v v="$ver" '
    /^Package:/{cur=""} /^Version:/{cur=$2}
    /^Checksums-Sha256:/{on=1; next} /^[^ ]/{on=0}
    on && cur==v && $3==f {print $1; exit}')
have=$(sha256sum "$orig" | cut -d' ' -f1)
if [ -z "$want" ] || [ "$want" != "$have" ]; then
    echo "install-criu: $orig does not match the signed Sources index" >&2; exit 1
fi
tar xf "$orig"
src=$WORK/criu-$up
deb=$(ls criu_"$ver".debian.tar.* 2>/dev/null | head -n1 || true)
if [ -n "$deb" ]; then
    tar -C "$src" -xf "$deb"
    if [ -f "$src/debian/patches/series" ]; then
        grep -v '^[[:space:]]*#' "$src/debian/patches/series" | while read -r p _; do
            [ -n "$p" ] && patch -d "$src" -p1 -N -s < "$src/debian/patches/$p"
        done
    fi
fi
rm -f "$SRCLIST"
apt-get update -qq
for p in $PATCHES; do
    patch -d "$src" -p1 -N -s < "$HERE/criu-patches/$p"
done

cd "$src"
make -j"$JOBS" PREFIX="$PREFIX" criu > "$WORK/build.log" 2>&1 || {
    tail -n 30 "$WORK/build.log" >&2; exit 1; }
make PREFIX="$PREFIX" install-criu > "$WORK/install.log" 2>&1 || {
    tail -n 30 "$WORK/install.log" >&2; exit 1; }
echo "$PATCHES" > "$PREFIX/hutch-patches"
if ! works "$CRIU"; then
    "$CRIU" check >&2 || true
    echo "install-criu: $CRIU was built but does not pass 'criu check' on this kernel" >&2
    exit 1
fi
echo "install-criu: $("$CRIU" --version | head -n1) at $CRIU, criu check passes"
