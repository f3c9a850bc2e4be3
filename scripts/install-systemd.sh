#!/usr/bin/env bash
# Install trafficguard as a systemd service (run as root on the sensor host).
#   scripts/install-systemd.sh [--prefix /opt/trafficguard]
# Creates a venv under PREFIX with the package, links /usr/local/bin/trafficguard, installs
# the default config to /etc/trafficguard (kept if present) and the unit, then reloads
# systemd. Start with: systemctl enable --now trafficguard
set -euo pipefail
PREFIX=/opt/trafficguard
[ "${1:-}" = "--prefix" ] && PREFIX=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v tcpdump >/dev/null || apt-get install -y tcpdump   # compiles BPF filters
python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q "$ROOT"
ln -sf "$PREFIX/venv/bin/trafficguard" /usr/local/bin/trafficguard
install -d -m 0755 /etc/trafficguard
[ -f /etc/trafficguard/trafficguard.yaml ] || install -m 0644 "$ROOT/config/trafficguard.yaml" /etc/trafficguard/
install -m 0644 "$ROOT/systemd/trafficguard.service" /etc/systemd/system/trafficguard.service
install -D -m 0644 "$ROOT/docs/deployment.md" /usr/share/doc/trafficguard/deployment.md
systemd-analyze verify /etc/systemd/system/trafficguard.service
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
echo "installed; set live.interfaces in /etc/trafficguard/trafficguard.yaml, then: systemctl enable --now trafficguard"
