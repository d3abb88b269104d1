#!/bin/sh
# Runs the whole test suite: unit tests (no root), then integration and conformance
# tests (root, real namespaces and cgroups).  Run ./setup.sh once first.
set -eu
cd "$(dirname "$0")"
# pytest runs pyproject's testpaths (tests/) unless paths are given:
#   ./test.sh tests/conformance -x
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
