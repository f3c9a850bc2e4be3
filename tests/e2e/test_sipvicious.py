"""Real SIP attack tools (SIPVicious: svmap, svwar, svcrack) against a sipp registrar on
loopback; the capture, replayed through the trafficguard CLI into a store, must raise
``sip_scan`` for the scans and ``sip_bruteforce`` for the password guessing.

The sipp UAS is a registrar: OPTIONS get 200; a REGISTER for extensions 200-209 gets a
digest challenge (401), then 403 for the credentials that follow (it accepts no password,
so every guess fails); other extensions get 404, so svwar can tell them apart. tcpdump
captures only the registrar's UDP port on ``lo``; the tools run with bounded ranges and
timeouts (killed when they overrun), sipp and tcpdump are stopped in ``finally``.
Nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sipnet import LOOPBACK, SIPP, free_udp_ports, start_tcpdump, stop

pytestmark = [pytest.mark.e2e]

BIN = Path(sys.executable).parent
CLI = [sys.executable, "-m", "trafficguard"]

REGISTRAR = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="registrar that accepts no password (extensions 200-209)">
  <recv request="OPTIONS" optional="true" next="options"/>
  <recv request="REGISTER">
    <action>
      <ereg regexp="sip:20[0-9]@" search_in="hdr" header="To:" check_it="false" assign_to="known"/>
    </action>
  </recv>
  <nop next="challenge" test="known"/>
  <send next="done"><![CDATA[
SIP/2.0 404 Not Found
[last_Via:]
[last_From:]
[last_To:];tag=[pid]n[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="challenge"/>
  <send><![CDATA[
SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]r[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: Digest realm="tg.test", nonce="n[pid]x[call_number]", algorithm=MD5
Content-Length: 0

]]></send>
  <recv request="REGISTER" timeout="4000" ontimeout="done"/>
  <send next="done"><![CDATA[
SIP/2.0 403 Forbidden
[last_Via:]
[last_From:]
[last_To:];tag=[pid]r[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="options"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]o[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="done"/>
</scenario>
"""


def _tool(name: str) -> list[str]:
    """A SIPVicious console script of this venv (or the module, if scripts are absent)."""
    for script in (BIN / f"sipvicious_{name}", BIN / name):
        if script.exists():
            return [str(script)]
    found = shutil.which(f"sipvicious_{name}") or shutil.which(name)
    return [found] if found else [sys.executable, "-m", f"sipvicious.{name}"]


def _attack(name: str, args: Sequence[str], log: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*_tool(name), *args], capture_output=True, text=True, timeout=90, check=False
    )
    log.write_text(proc.stdout + proc.stderr)
    return proc


def _replay(tmp: Path, pcap: Path, sip_port: int) -> list[dict[str, Any]]:
    """CLI replay into a tmp store, then ``query alerts --json`` (latest state of each)."""
    cfg = tmp / "tg.yaml"
    cfg.write_text(
        json.dumps(
            {
                "privacy": {"keys_dir": str(tmp / "keys")},
                "voip": {"sip_ports": [sip_port]},
                "logging": {"format": "json", "level": "info"},
            }
        )
    )
    db = tmp / "tg.db"
    base = [*CLI, "--config", str(cfg)]
    replay = subprocess.run(
        [*base, "replay", "--store", str(db), "--no-metrics", str(pcap)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr[-2000:]
    query = subprocess.run(
        [*base, "query", "alerts", "--store", str(db), "--json", "--limit", "1000"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert query.returncode == 0, query.stderr[-2000:]
    return [json.loads(line) for line in query.stdout.splitlines() if line.strip()]


def test_sipvicious_scans_and_cracking_raise_sip_alerts(tmp_path: Path) -> None:
    scenario = tmp_path / "registrar.xml"
    scenario.write_text(REGISTRAR)
    port, map_port, war_port, crack_port = free_udp_ports(4)
    pcap = tmp_path / "sipvicious.pcap"
    uas = subprocess.Popen(
        [SIPP, "-sf", str(scenario), "-p", str(port), "-i", LOOPBACK, "-nostdin",
         "-timeout", "240", "-trace_err", "-max_recv_loops", "10000"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    tcpdump = None
    try:
        time.sleep(0.5)  # the UAS binds its port
        assert uas.poll() is None, uas.stderr.read() if uas.stderr else b""
        tcpdump = start_tcpdump(pcap, [port])
        # 1. svmap: OPTIONS sweep of 32 loopback addresses (only 127.0.0.1 answers)
        svmap = _attack(
            "svmap", [f"{LOOPBACK}/27", "-p", str(port), "-P", str(map_port), "-t", "0.01"],
            tmp_path / "svmap.log",
        )  # fmt: skip
        # 2. svwar: extension enumeration with REGISTER over 100-300
        svwar = _attack(
            "svwar", [LOOPBACK, "-p", str(port), "-P", str(war_port), "-e100-300",
                      "-m", "REGISTER", "--force", "-t", "0.01"],
            tmp_path / "svwar.log",
        )  # fmt: skip
        # 3. svcrack: password guessing for extension 200, 1000-1300
        svcrack = _attack(
            "svcrack", [LOOPBACK, "-p", str(port), "-P", str(crack_port), "-u", "200",
                        "-r1000-1300", "-t", "0.01"],
            tmp_path / "svcrack.log",
        )  # fmt: skip
        time.sleep(0.5)  # the last responses reach the capture
    finally:
        if tcpdump is not None:
            stop(tcpdump, signal.SIGINT)
        stop(uas)
    assert tcpdump is not None and tcpdump.returncode == 0
    logs = {n: p.stdout + p.stderr for n, p in (("svmap", svmap), ("svwar", svwar),
                                                  ("svcrack", svcrack))}  # fmt: skip
    # the tools saw the registrar: svmap fingerprints it, svwar lists extensions
    assert f"{LOOPBACK}:{port}" in logs["svmap"], logs["svmap"][-2000:]
    found = {n for n in range(100, 301) if f"| {n} " in logs["svwar"]}
    assert found == set(range(200, 210)), logs["svwar"][-2000:]
    assert "The password for" not in logs["svcrack"]  # no guess was accepted

    alerts = _replay(tmp_path, pcap, port)
    by = {(a["detector"], a["source"], a["evidence"].get("method")) for a in alerts}
    assert ("sip_scan", LOOPBACK, "flows") in by, alerts  # svmap: many SIP hosts
    assert ("sip_scan", LOOPBACK, "register") in by, alerts  # svwar: many extensions
    by_war = ("sip_scan", "register")
    (war,) = [a for a in alerts if (a["detector"], a["evidence"]["method"]) == by_war]
    assert war["evidence"]["extensions"] >= 201  # svwar's range (svcrack tries one)
    brute = [a for a in alerts if a["detector"] == "sip_bruteforce"]
    assert brute, alerts  # svcrack: hundreds of rejected credentials
    assert {a["source"] for a in brute} == {LOOPBACK}
    assert max(int(a["evidence"]["rejected"]) for a in brute) >= 200
    assert all(int(a["evidence"]["accepted"]) == 0 for a in brute)
    # nothing else mistakes this for floods or fraud
    assert {a["detector"] for a in alerts} <= {"sip_scan", "sip_bruteforce", "invite_flood"}
