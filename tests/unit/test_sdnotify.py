"""sd_notify protocol against a socket the test binds (path and abstract names)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from trafficguard.sinks.sdnotify import Notifier, WatchdogTimer


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2)
    try:
        yield sock, path
    finally:
        sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_stopping_reloading_to_path_socket(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("capturing on 1 interface(s)")
    assert _recv(sock) == ["READY=1", "STATUS=capturing on 1 interface(s)"]
    assert n.reloading()
    msg = _recv(sock)
    assert msg[0] == "RELOADING=1"
    assert msg[1].startswith("MONOTONIC_USEC=") and int(msg[1].split("=")[1]) > 0
    assert n.status("draining")
    assert _recv(sock) == ["STATUS=draining"]
    assert n.stopping()
    assert _recv(sock) == ["STOPPING=1"]


def test_abstract_socket_name() -> None:
    name = f"tg-notify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert _recv(sock) == ["WATCHDOG=1"]


def test_disabled_without_socket_and_errors_counted(tmp_path: Path) -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert not gone.ready()
    assert gone.errors == 1


def test_watchdog_interval_is_half_and_respects_pid() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s == 15.0
    mine = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval_s == 2.0
    other = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(other).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval_s is None


def test_watchdog_timer_pings_when_due_and_healthy(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    now = [100.0]
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    timer = WatchdogTimer(n, clock=lambda: now[0])
    assert timer.maybe_ping()
    assert _recv(sock) == ["WATCHDOG=1"]
    now[0] += 0.5
    assert not timer.maybe_ping()  # interval is 1 s
    now[0] += 0.6
    assert not timer.maybe_ping(healthy=False)  # a stuck worker stops the pings
    assert timer.maybe_ping()
    assert _recv(sock) == ["WATCHDOG=1"]
