"""The shipped unit under a real systemd: boot one in systemd-nspawn and drive the service.

How (verified facts in /work/shared/OPS-NOTES.md, section 4d): ``systemd-nspawn -D /
--volatile=yes`` boots systemd 252 on a tmpfs root with the host's ``/usr`` read-only and a
private network namespace (only ``lo``). Into it we bind, read-only and at the same paths:

* this checkout (the code under test),
* a runtime virtualenv made with Debian's ``/usr/bin/python3`` and the project's runtime
  dependencies, cached in ``RUNTIME_VENV`` (built by scripts/setup.sh, or here on first
  use; pyenv interpreters under /root are hidden by ``ProtectHome=yes``),
* ``systemd/trafficguard.service`` as ``/etc/systemd/system/trafficguard.service``, byte
  for byte, plus a drop-in that only points ExecStartPre/ExecStart at that venv (``/usr``
  is read-only, so no ``/usr/local/bin/trafficguard``) and shortens ``WatchdogSec`` to
  3 s so "alive past the watchdog" fits in the test,
* ``/etc/trafficguard/trafficguard.yaml`` capturing on the container's ``lo``.

A oneshot driver unit inside the container starts the service, samples its state, sends a
little UDP on ``lo``, reloads, stops, writes its observations to a bound output directory
and powers the container off. The assertions run here on those files. Needs root and
``systemd-nspawn`` (package systemd-container); about 20-30 s.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# The checkout is bound here inside the container: where it lives on the host (/tmp, /root)
# may be hidden from the service by PrivateTmp=/ProtectHome=.
REPO_IN_CONTAINER = "/srv/trafficguard-src"
UNIT = REPO / "systemd" / "trafficguard.service"
CACHE = Path(os.environ.get("TRAFFICGUARD_TEST_CACHE", "/var/cache/trafficguard-test"))
RUNTIME_VENV = CACHE / "venv"
SYSTEM_PYTHON = Path("/usr/bin/python3")
BOOT_TIMEOUT_S = 90.0
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
TWO_CAPS = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)  # 0x3000
WATCHDOG_S = 3

CONFIG = """\
live:
  interfaces: [lo]
  workers: 1
  block_size: 65536
  block_count: 4
  stats_interval_s: 0.5
  drain_timeout_s: 10
store:
  flush_interval_s: 1
metrics:
  listen: 127.0.0.1:9108
logging:
  format: json
"""

DRIVER = r"""#!/bin/bash
# Runs inside the container as a oneshot unit; every observation goes to /srv/out.
O=/srv/out
exec >"$O/driver.log" 2>&1
set -x
trap 'journalctl -u trafficguard.service -o json >"$O/journal.json";
      journalctl -b -o short-monotonic --no-pager >"$O/journal-all.txt";
      echo done >"$O/driver.done"; systemctl poweroff --no-block' EXIT
U=trafficguard.service
show() { systemctl show "$U" >"$O/show-$1.txt"; }

# 1. start without waiting; sample (realtime us, state) until active or failed
systemctl start --no-block "$U"
for _ in $(seq 600); do
  s=$(systemctl show -p ActiveState -p SubState -p MainPID "$U" | tr '\n' ' ')
  echo "$(date +%s%6N) $s" >>"$O/states.txt"
  case "$s" in *ActiveState=active*|*ActiveState=failed*) break;; esac
  sleep 0.02
done
show ready
pid=$(systemctl show -p MainPID --value "$U")
cat /proc/"$pid"/status >"$O/status-main.txt"
for c in $(cat /proc/"$pid"/task/*/children); do
  cat /proc/"$c"/status >"$O/status-child-$c.txt"
done
stat -c '%u %a %n' /var/lib/private/trafficguard >"$O/statedir.txt"
readlink /var/lib/trafficguard >>"$O/statedir.txt"

# 2. a little traffic on lo, then stay up well past WatchdogSec
/usr/bin/python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20): s.sendto(b"x" * 100, ("127.0.0.1", 40000))'
sleep @WAIT@
show watchdog

# 3. reload (SIGHUP) and wait for the daemon's own confirmation
systemctl reload "$U"; echo $? >"$O/reload.rc"
for _ in $(seq 100); do
  journalctl -u "$U" -o cat | grep -q daemon.reloaded && break; sleep 0.1
done
sleep 1
show reload
/usr/bin/python3 -c 'import urllib.request as u
print(u.urlopen("http://127.0.0.1:9108/metrics", timeout=5).read().decode())' >"$O/metrics.txt"

# 4. stop: drain and exit
systemctl stop "$U"; echo $? >"$O/stop.rc"
show stop
ls -lnR /var/lib/private/trafficguard >"$O/state-ls.txt"
/usr/bin/python3 - >"$O/db.json" <<'EOF'
import json, sqlite3
db = sqlite3.connect("file:/var/lib/trafficguard/var/trafficguard.db?mode=ro", uri=True)
tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
print(json.dumps({t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}))
EOF
"""

DRIVER_UNIT = """\
[Unit]
Description=trafficguard systemd boot test driver

[Service]
Type=oneshot
ExecStart=/bin/bash /srv/tg/driver.sh
TimeoutStartSec=infinity
"""


def _runtime_deps() -> list[str]:
    return list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def ensure_runtime_venv() -> Path:
    """A venv of Debian's python3 with the runtime dependencies (not the project itself).

    Same recipe as scripts/setup.sh; rebuilt when the dependency list changes.
    """
    deps = _runtime_deps()
    want = hashlib.sha256("\n".join(deps).encode()).hexdigest()
    stamp = RUNTIME_VENV / ".deps-sha256"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == want:
            return RUNTIME_VENV
        shutil.rmtree(RUNTIME_VENV, ignore_errors=True)
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(RUNTIME_VENV)], check=True)
        pip = [str(RUNTIME_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *deps], check=True, timeout=300)
        stamp.write_text(want + "\n")
    return RUNTIME_VENV


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn)"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn missing (apt-get install systemd-container; scripts/setup.sh)"
    if not SYSTEM_PYTHON.exists():
        return "needs Debian's /usr/bin/python3 (the container sees only the host /usr)"
    return None


def _drop_in(venv: Path) -> str:
    py = venv / "bin" / "python"
    return (
        "[Service]\n"
        f"Environment=PYTHONPATH={REPO_IN_CONTAINER} PYTHONDONTWRITEBYTECODE=1\n"
        "ExecStartPre=\n"
        f"ExecStartPre={py} -m trafficguard check-config\n"
        "ExecStart=\n"
        f"ExecStart={py} -m trafficguard run\n"
        f"WatchdogSec={WATCHDOG_S}s\n"
    )


def _boot(tmp: Path, venv: Path) -> tuple[Path, str]:
    tg, out, etc = tmp / "tg", tmp / "out", tmp / "etc-trafficguard"
    for d in (tg, out, etc):
        d.mkdir()
    out.chmod(0o777)
    (tg / "driver.sh").write_text(DRIVER.replace("@WAIT@", str(WATCHDOG_S * 2 + 1)))
    (tg / "tg-driver.service").write_text(DRIVER_UNIT)
    (tg / "override.conf").write_text(_drop_in(venv))
    (etc / "trafficguard.yaml").write_text(CONFIG)
    etc.chmod(0o755)
    tmp.chmod(0o755)
    units = "/etc/systemd/system"
    cmd = [
        "systemd-nspawn", "-q", "-D", "/", "--volatile=yes", "--private-network",
        "--register=no", "--keep-unit", f"--machine=tgboot{os.getpid()}",
        f"--bind-ro={REPO}:{REPO_IN_CONTAINER}", f"--bind-ro={venv}",
        f"--bind-ro={tg}:/srv/tg", f"--bind={out}:/srv/out",
        f"--bind-ro={etc}:/etc/trafficguard",
        f"--bind-ro={UNIT}:{units}/trafficguard.service",
        f"--bind-ro={tg / 'override.conf'}:{units}/trafficguard.service.d/test.conf",
        f"--bind-ro={tg / 'tg-driver.service'}:{units}/tg-driver.service",
        "-b", "systemd.firstboot=off", "systemd.unit=basic.target",
        "systemd.mask=systemd-networkd-wait-online.service", "systemd.wants=tg-driver.service",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        console, _ = proc.communicate(timeout=BOOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # nspawn: orderly container shutdown
        try:
            console, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            console, _ = proc.communicate()
        pytest.fail(f"container did not power off in {BOOT_TIMEOUT_S:.0f} s:\n{console[-4000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return out, console


def _props(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _status(path: Path) -> dict[str, str]:
    return dict(
        (k, v.strip()) for k, v in (line.split(":", 1) for line in path.read_text().splitlines())
    )


def _events(out: Path) -> list[tuple[int, str, dict[str, object]]]:
    """(realtime us, raw MESSAGE, parsed JSON event or {}) of the service's journal."""
    events = []
    for line in (out / "journal.json").read_text().splitlines():
        entry = json.loads(line)
        msg = entry.get("MESSAGE", "")
        if isinstance(msg, list):  # journald gives non-UTF-8 messages as byte arrays
            msg = bytes(msg).decode(errors="replace")
        try:
            parsed = json.loads(msg)
        except ValueError:
            parsed = {}
        events.append((int(entry["__REALTIME_TIMESTAMP"]), msg, parsed))
    return events


def _first(events: list[tuple[int, str, dict[str, object]]], name: str) -> int:
    times = [t for t, _, e in events if isinstance(e, dict) and e.get("event") == name]
    assert times, f"no {name} in the journal"
    return times[0]


def test_unit_boots_under_real_systemd(tmp_path: Path) -> None:
    reason = _skip_reason()
    assert reason is None, f"{reason} (scripts/test.sh runs as root with systemd-container)"
    venv = ensure_runtime_venv()
    started = time.monotonic()
    out, console = _boot(tmp_path, venv)
    elapsed = time.monotonic() - started
    diag = f"\n--- console\n{console[-3000:]}\n--- driver.log\n" + (
        (out / "driver.log").read_text()[-3000:] if (out / "driver.log").exists() else "(none)"
    )
    assert (out / "driver.done").exists(), "driver did not finish" + diag
    events = _events(out)
    messages = "\n".join(m for _, m, _ in events)
    diag += f"\n--- journal -u trafficguard\n{messages[-4000:]}"

    # Type=notify: the process runs (MainPID set) while systemd still says "activating";
    # "active" is first seen only after the daemon logged capture.started, sent READY=1.
    ready = _props(out / "show-ready.txt")
    assert ready["Type"] == "notify", diag
    assert ready["ActiveState"] == "active" and ready["SubState"] == "running", diag
    assert ready["StatusText"].startswith("capturing on 1 interface(s)"), diag
    samples = [line.split(" ", 1) for line in (out / "states.txt").read_text().splitlines()]
    activating = [s for s in samples if "ActiveState=activating" in s[1]]
    assert any("MainPID=0" not in s[1] and "SubState=start " in s[1] for s in activating), (
        "never saw the started process waiting for READY" + diag
    )
    first_active = min(int(t) for t, s in samples if "ActiveState=active " in s + " ")
    capture_started = _first(events, "capture.started")
    assert first_active >= capture_started, diag
    started_msg = [t for t, m, _ in events if m.startswith("Started ")]
    assert started_msg and started_msg[0] >= capture_started, diag

    # DynamicUser + exactly CAP_NET_RAW and CAP_NET_ADMIN, in the daemon and its worker
    main = _status(out / "status-main.txt")
    uid = int(main["Uid"].split()[0])
    assert 61184 <= uid <= 65519, f"not a dynamic uid: {main['Uid']}"  # systemd's range
    assert main["Uid"].split() == [str(uid)] * 4 and main["Gid"].split() == [str(uid)] * 4
    children = sorted(out.glob("status-child-*.txt"))
    assert children, "no capture worker found" + diag
    for status in [main, *(_status(p) for p in children)]:
        assert int(status["Uid"].split()[0]) == uid
        for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[key], 16) == TWO_CAPS, (key, status[key])
        assert status["NoNewPrivs"] == "1"
    # StateDirectory: /var/lib/trafficguard -> private/trafficguard, owned by the uid, 0700
    st_uid, mode, _ = (out / "statedir.txt").read_text().splitlines()[0].split()
    assert (int(st_uid), mode) == (uid, "700")
    assert (out / "statedir.txt").read_text().splitlines()[1] == "private/trafficguard"

    # the watchdog is armed and the daemon keeps feeding it past WatchdogSec
    wd = _props(out / "show-watchdog.txt")
    assert wd["WatchdogUSec"] == f"{WATCHDOG_S}s", diag
    assert wd["ActiveState"] == "active" and wd["NRestarts"] == "0", diag
    assert wd["MainPID"] == ready["MainPID"], diag
    assert int(wd["WatchdogTimestampMonotonic"]) > int(ready["WatchdogTimestampMonotonic"])
    assert int(wd["WatchdogTimestampMonotonic"]) - int(ready["ExecMainStartTimestampMonotonic"]) > (
        WATCHDOG_S * 1_000_000
    ), diag
    assert "Watchdog timeout" not in messages, diag

    # reload: SIGHUP, same process, logged, counted
    assert (out / "reload.rc").read_text().strip() == "0", diag
    rl = _props(out / "show-reload.txt")
    assert rl["ActiveState"] == "active" and rl["MainPID"] == ready["MainPID"], diag
    assert rl["NRestarts"] == "0", diag
    assert _first(events, "daemon.reloaded") > capture_started
    assert any(m.startswith("Reloaded trafficguard.service") for _, m, _ in events), diag
    assert (
        'trafficguard_daemon_reloads_total{result="applied"} 1.0'
        in (out / "metrics.txt").read_text()
    )

    # stop: SIGTERM, drain, exit 0
    assert (out / "stop.rc").read_text().strip() == "0", diag
    stop = _props(out / "show-stop.txt")
    assert stop["ActiveState"] == "inactive" and stop["Result"] == "success", diag
    assert stop["ExecMainCode"] == "1" and stop["ExecMainStatus"] == "0", diag  # CLD_EXITED 0
    assert _first(events, "daemon.stopped") > _first(events, "daemon.stopping")

    # the store landed in the StateDirectory (WorkingDirectory-relative var/), owned by the uid
    listing = (out / "state-ls.txt").read_text()
    assert "trafficguard.db" in listing, listing
    counts = json.loads((out / "db.json").read_text())
    assert counts.get("flow", 0) >= 1, counts  # at least the UDP sent to 127.0.0.1:40000
    assert elapsed < BOOT_TIMEOUT_S
    print(f"systemd boot test: {elapsed:.1f} s, dynamic uid {uid}", file=sys.stderr)
