#!/usr/bin/env bash
# Replay benchmark: trafficguard vs softflowd vs a bare dpkt loop on one workload.
# Usage: bench/run.sh [--packets N] [--pcap FILE] [--json]   (default N=1000000)
# Uses the project venv when present so `python -m trafficguard` is this checkout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
exec "$py" bench/replay_bench.py "$@"
