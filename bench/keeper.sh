#!/bin/sh
# The keeper's /proc views against LXCFS, side by side (bench/keeper.py).
# Usage: bench/keeper.sh [READS]   (root, after ./setup.sh; lxcfs from Debian)
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
command -v lxcfs >/dev/null || { echo "lxcfs is not installed (apt-get install lxcfs)" >&2; exit 1; }
exec "$HERE/.venv/bin/python" "$HERE/bench/keeper.py" "$@"
