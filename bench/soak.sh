#!/bin/sh
# Long runs, hutch and runc side by side: N back-to-back create/start/delete
# cycles and N `run` cycles each; failures, p50/p99 latency, and whether open
# files, mounts, processes, state entries or cgroups grew; then N live
# M migrations into one `hutch receive --serve`, whose fds and memory must not grow.
# Usage: bench/soak.sh [N [M]]   (root, after ./setup.sh; M migrations, default 200)
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-200}
"$HERE/.venv/bin/python" "$HERE/bench/soak.py" "$N"
# `hutch receive --serve` taking M migrations in a row (two network namespaces as
# hosts): its fds and RSS after the 4th and after the last
HUTCH_RECEIVE_SOAK=${2:-200} "$HERE/test.sh" -s -q "$HERE/tests/integration/test_migrate.py" \
    -k serving_receiver 2>&1 | grep -E "^receive|passed|failed|Error"
