#!/usr/bin/env bash
# Replay the sample captures into SQLite and keep serving Prometheus metrics on :9108.
# Extra args go to `trafficguard replay` (e.g. --config config/trafficguard.yaml).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
mkdir -p var
echo "demo: metrics on http://127.0.0.1:9108/metrics, flows in var/trafficguard.db (Ctrl-C to stop)"
exec .venv/bin/trafficguard replay pcaps/*.pcap --store var/trafficguard.db \
  --metrics 127.0.0.1:9108 --keep-serving "$@"
