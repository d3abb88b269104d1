#!/bin/sh
# Runs the whole test suite: unit tests (no root), then integration and conformance
# tests (root, real namespaces and cgroups).  Run ./setup.sh once first.
set -eu
cd "$(dirname "$0")"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
