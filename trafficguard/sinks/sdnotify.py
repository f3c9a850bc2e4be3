"""sd_notify(3) without libsystemd: tell the service manager how the daemon is doing.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux abstract namespace). Outside systemd
the variable is unset and every call is a no-op, so the daemon needs no special case.
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, when set, must be our pid) asks for
``WATCHDOG=1`` at least that often; we ping at half the interval, as sd_watchdog_enabled(3)
recommends. Lives with the sinks because it is an output of operational state, like
``/metrics`` and the logs; it carries no traffic data.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Final

_NS_PER_US: Final = 1000


class Notifier:
    """Sends state changes to ``$NOTIFY_SOCKET``; silently disabled when it is not set."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if path.startswith("@"):
            self._address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self._address = path
        self.watchdog_interval_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1_000_000 / 2
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram (``"READY=1"``, ``"STATUS=..."``); False if not delivered."""
        if self._address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto("\n".join(lines).encode(), self._address)
            except OSError:
                self.errors += 1
                return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *(["STATUS=" + status] if status else []))

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (required by Type=notify-reload)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // _NS_PER_US
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *(["STATUS=" + status] if status else []))

    def status(self, text: str) -> bool:
        return self.send("STATUS=" + text)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


class WatchdogTimer:
    """Decides when the next ``WATCHDOG=1`` is due (half of ``WATCHDOG_USEC``)."""

    def __init__(self, notifier: Notifier, clock: Callable[[], float] = time.monotonic) -> None:
        self._notifier = notifier
        self._clock = clock
        self._next = 0.0

    def maybe_ping(self, healthy: bool = True) -> bool:
        """Ping when due and ``healthy``; a wedged loop or worker stops the pings."""
        interval = self._notifier.watchdog_interval_s
        if interval is None or not healthy:
            return False
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + interval
        return self._notifier.watchdog()
