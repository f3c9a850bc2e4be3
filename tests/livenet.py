"""Test helpers for live capture: a private network namespace with a veth pair, the daemon
started inside it, tcpreplay onto the peer, and /metrics read from inside the namespace.

Everything a test creates is named uniquely (pid + counter) and removed in ``finally``
even when the test fails: deleting the namespace deletes both veth ends with it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
_COUNTER = itertools.count()


@dataclass(frozen=True)
class Veth:
    """A namespace ``ns`` holding ``capture`` (the daemon's end) and ``inject`` (tcpreplay's)."""

    ns: str
    capture: str
    inject: str

    def cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *args]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def veth_netns() -> Iterator[Veth]:
    """A fresh namespace with an up veth pair, IPv6 off (no ND/MLD noise), removed after."""
    tag = f"{os.getpid() % 100000}{next(_COUNTER)}"
    veth = Veth(ns=f"tgt{tag}", capture=f"tgc{tag}", inject=f"tgi{tag}")
    _ip("netns", "add", veth.ns)
    try:
        _ip("link", "add", veth.capture, "type", "veth", "peer", "name", veth.inject)
        for dev in (veth.capture, veth.inject):
            _ip("link", "set", dev, "netns", veth.ns)
        subprocess.run(
            veth.cmd("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"), check=True, timeout=30
        )
        subprocess.run(
            veth.cmd("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"),
            check=True,
            timeout=30,
        )
        for dev in ("lo", veth.capture, veth.inject):
            _ip("-n", veth.ns, "link", "set", dev, "up")
        yield veth
    finally:
        subprocess.run(["ip", "netns", "del", veth.ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", veth.capture], capture_output=True, check=False)


def write_config(path: Path, tmp: Path, **sections: dict[str, object]) -> Path:
    """A config with the store, keys and logs in ``tmp``; ``sections`` are merged on top."""
    cfg: dict[str, dict[str, object]] = {
        "store": {"flush_interval_s": 1, "sqlite": {"path": str(tmp / "store.db")}},
        "privacy": {"keys_dir": str(tmp / "keys")},
        "logging": {"format": "json", "level": "info"},
        "metrics": {"listen": "127.0.0.1:19108"},
        "live": {"poll_timeout_ms": 100, "block_timeout_ms": 50, "stats_interval_s": 0.2},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


class DaemonProc:
    """``trafficguard run`` inside the namespace, with its JSON log lines kept in a file."""

    def __init__(self, veth: Veth, config: Path, log: Path, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.veth = veth
        self.log = log
        self._log_file = log.open("ab")
        cmd = [sys.executable, "-m", "trafficguard", "--config", str(config), "run"]
        cmd += ["--interface", veth.capture, *args]
        self.proc = subprocess.Popen(
            veth.cmd(*cmd), stdout=subprocess.DEVNULL, stderr=self._log_file, env=env, cwd=REPO_ROOT
        )

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def wait_event(self, name: str, count: int = 1, timeout: float = 30) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e.get("event") == name]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.proc.returncode}: {self.log.read_text()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} event within {timeout} s: {self.log.read_text()}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - start

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log_file.close()


def replay_onto(veth: Veth, pcaps: list[Path], pps: int = 2000, loop: int = 1) -> int:
    """tcpreplay the files onto the injecting end at a fixed rate; packets sent."""
    proc = subprocess.run(
        veth.cmd("tcpreplay", "-q", f"--pps={pps}", f"--loop={loop}", "-i", veth.inject)
        + [str(p) for p in pcaps],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for line in proc.stdout.splitlines():
        if line.strip().startswith("Successful packets:"):
            return int(line.split(":")[1])
    raise AssertionError(proc.stdout + proc.stderr)


def metrics(veth: Veth, port: int = 19108) -> dict[str, float]:
    """The daemon's /metrics (read from inside its namespace) as {sample with labels: value}."""
    url = f"http://127.0.0.1:{port}/metrics"
    code = (
        "import sys,urllib.request;"
        f"sys.stdout.write(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    )
    proc = subprocess.run(
        veth.cmd(sys.executable, "-c", code),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_metric(
    veth: Veth, name: str, at_least: float, timeout: float = 20, port: int = 19108
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    m: dict[str, float] = {}
    while time.monotonic() < deadline:
        m = metrics(veth, port)
        if m.get(name, 0) >= at_least:
            return m
        time.sleep(0.1)
    raise AssertionError(f"{name} stayed at {m.get(name)} < {at_least}")


def tcpdump_count(pcap: Path, expression: str) -> int:
    """Packets of ``pcap`` matching ``expression``, counted by tcpdump (the oracle)."""
    proc = subprocess.run(
        ["tcpdump", "-nr", str(pcap), expression],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return len([line for line in proc.stdout.splitlines() if line.strip()])
