#!/usr/bin/env bash
# Prepare a checkout for tests and the demo; safe to run again (does only what is missing).
#  1. On Debian as root: install the system tools the tests and demo call (tshark, tcpdump,
#     tcpreplay, softflowd, promtool, sipp, nfcapd, nmap, hping3, iodine, hydra, ip,
#     systemd-analyze, systemd-nspawn, /usr/bin/time). apt-get update runs only if needed.
#  2. A virtualenv in .venv (no system site packages) with `pip install -e '.[test]'`,
#     skipped while the stamp (hash of pyproject.toml, setup.py, the C core + python
#     version) is unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'setup: %s\n' "$*"; }

# --- system packages: "command-to-check:debian-package"
need=()
for pair in tshark:tshark tcpdump:tcpdump tcpreplay:tcpreplay softflowd:softflowd \
            promtool:prometheus /usr/bin/time:time ip:iproute2 sipp:sip-tester \
            nfcapd:nfdump nmap:nmap hping3:hping3 iodine:iodine hydra:hydra \
            systemd-analyze:systemd systemd-nspawn:systemd-container; do
  cmd=${pair%%:*} pkg=${pair##*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    need+=("$pkg")
  fi
done
if [ ${#need[@]} -eq 0 ]; then
  say "system tools present"
elif [ "$(id -u)" -eq 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; then
  say "installing ${need[*]}"
  # tshark asks whether non-root users may capture; answer "no" without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  say "missing ${need[*]}: install them (Debian: apt-get install ${need[*]}) and run again" >&2
  exit 1
fi

# --- virtualenv
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($python --version 2>&1)"
  "$python" -m venv .venv
fi
stamp=.venv/.trafficguard-installed
# the stamp covers the build inputs: dependencies and the compiled fast-path core
want="$(cat pyproject.toml setup.py trafficguard/fast/_core.c 2>/dev/null | sha256sum | cut -d' ' -f1) $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])')"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say ".venv up to date"
else
  say "pip install -e '.[test]' into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  printf '%s\n' "$want" > "$stamp"
fi
# --- as root: the runtime venv (Debian /usr/bin/python3 + runtime dependencies) that
#     tests/e2e/test_systemd_boot.py binds into its systemd-nspawn container; cached in
#     /var/cache/trafficguard-test/venv, rebuilt only when the dependency list changes.
if [ "$(id -u)" -eq 0 ] && [ -x /usr/bin/python3 ] && command -v systemd-nspawn >/dev/null; then
  say "systemd boot test venv in /var/cache/trafficguard-test/venv"
  .venv/bin/python -c 'import sys; sys.path.insert(0, "tests/e2e")
import test_systemd_boot as t; t.ensure_runtime_venv()'
fi
say "ready"
