#!/usr/bin/env bash
# Everything CI checks: setup, the test suite (extra args go to pytest), ruff, mypy.
# Runs all three checks and fails if any failed, so one run shows every problem.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh || exit 1
rc=0
echo "test: pytest"; .venv/bin/python -m pytest -q "$@" || rc=1
echo "test: ruff";   .venv/bin/ruff check trafficguard tests || rc=1
echo "test: mypy";   .venv/bin/mypy || rc=1
[ $rc -eq 0 ] && echo "test: all passed" || echo "test: FAILED" >&2
exit $rc
