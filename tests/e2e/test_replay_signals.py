"""``replay --keep-serving`` through the real CLI: a signal at any moment after the replay
ends the command promptly and cleanly, and sink counters (IPFIX) are on its /metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
PCAP = REPO / "pcaps" / "sip-call-rtp.pcap"
EXIT_BOUND_S = 5.0


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    config = tmp_path / "tg.yaml"
    config.write_text(
        f"privacy:\n  keys_dir: {tmp_path / 'keys'}\nlogging:\n  format: json\n"
        f"store:\n  sqlite:\n    path: {tmp_path / 'store.db'}\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "trafficguard", "--config", str(config), "replay",
         "--metrics", "127.0.0.1:0", "--keep-serving", *args, str(PCAP)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> list[str]:
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} in: {''.join(lines)}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("marker", ['"replay.finished"', "records written:"])
def test_signal_right_after_the_replay_ends_the_command(
    tmp_path: Path, signum: int, marker: str
) -> None:
    """The signal lands between the end of the replay and the keep-serving loop."""
    proc = _start(tmp_path)
    try:
        _read_until(proc, marker)
        proc.send_signal(signum)
        start = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < EXIT_BOUND_S
    assert proc.returncode == 0, err  # the replay was complete: an orderly end
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_ipfix_counters_on_replay_metrics(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        proc = _start(tmp_path, "--ipfix", f"127.0.0.1:{rx.getsockname()[1]}")
        try:
            lines = _read_until(proc, "/metrics — press Ctrl-C")
            url = lines[-1].split()[1]
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            rx.settimeout(0.5)
            datagrams = 0
            while True:
                try:
                    rx.recv(65535)
                except TimeoutError:
                    break
                datagrams += 1
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples["trafficguard_ipfix_messages_total"]) == datagrams >= 2
    assert float(samples['trafficguard_ipfix_records_total{kind="flow"}']) >= 1
    assert float(samples['trafficguard_ipfix_records_skipped_total{kind="call"}']) >= 1
    assert float(samples["trafficguard_ipfix_send_errors_total"]) == 0
    assert proc.returncode == 0
