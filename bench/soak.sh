#!/bin/sh
# Long runs, hutch and runc side by side: N back-to-back create/start/delete
# cycles and N `run` cycles each; failures, p50/p99 latency, and whether open
# files, mounts, processes, state entries or cgroups grew.
# Usage: bench/soak.sh [N]   (root, after ./setup.sh)
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
exec "$HERE/.venv/bin/python" "$HERE/bench/soak.py" "${1:-200}"
