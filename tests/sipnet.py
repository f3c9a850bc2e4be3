"""Test helpers for real SIP tools on loopback: free UDP ports, tcpdump on ``lo`` and
stopping the processes a test started (sipp, tcpdump). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

SIPP = "/usr/bin/sipp"
TCPDUMP = "/usr/bin/tcpdump"
LOOPBACK = "127.0.0.1"


def free_udp_ports(n: int) -> list[int]:
    """``n`` distinct UDP ports free on loopback right now (held open until all are found)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` if it still runs; killed when it does not end within 5 s."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_tcpdump(pcap: Path, ports: Sequence[int]) -> subprocess.Popen[bytes]:
    """tcpdump on lo for UDP on these ports; returns once it says it is listening.

    ``--immediate-mode``: without it libpcap hands packets over in blocks (up to 1 s
    late) and the last ones are lost when tcpdump is stopped right after the calls.
    Stop it with ``stop(proc, signal.SIGINT)`` so that it writes out the capture.
    """
    port_filter = " or ".join(f"port {p}" for p in ports)
    proc = subprocess.Popen(
        [
            TCPDUMP,
            "-i",
            "lo",
            "-n",
            "--immediate-mode",
            "-U",
            "-w",
            str(pcap),
            f"udp and ({port_filter})",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    seen = b""
    while b"listening on" not in seen:
        line = proc.stderr.readline()
        if not line or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"tcpdump did not start: {seen.decode(errors='replace')}")
        seen += line
    return proc
