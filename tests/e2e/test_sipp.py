"""Real SIP peers: sipp UAC and UAS on loopback, captured with tcpdump, replayed.

Two runs share one capture: 10 calls between sipp's built-in ``uac`` and ``uas``
scenarios (answered, BYE from the caller), then 5 calls to a UAS that answers every
INVITE with 486 Busy Here (sipp's UAC counts them as failed and ACKs the 486). sipp's own
statistics (``-trace_stat``) say how many calls were made, succeeded and failed; the
call records trafficguard makes from the capture must agree. sipp and tcpdump are
installed by scripts/setup.sh; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from sipnet import LOOPBACK, SIPP, free_udp_ports, start_tcpdump, stop

from trafficguard.config import Config
from trafficguard.pipeline import replay_records
from trafficguard.privacy.keys import init_keys
from trafficguard.voip.records import CallRecord

pytestmark = [pytest.mark.e2e]

ANSWERED_CALLS = 10
REJECTED_CALLS = 5

UAS_BUSY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas answering 486">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]busy[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""


def _sipp(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SIPP, *args, "-i", LOOPBACK, "-nostdin", "-timeout", "20"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _sipp_totals(stat_csv: Path) -> dict[str, int]:
    """The last row of a sipp ``-trace_stat`` file: cumulative call counters."""
    with stat_csv.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    last = rows[-1]
    return {
        "created": int(last["TotalCallCreated"]),
        "successful": int(last["SuccessfulCall(C)"]),
        "failed": int(last["FailedCall(C)"]),
    }


def _run_calls(
    tmp: Path, name: str, uas_args: list[str], uas_port: int, uac_port: int, calls: int
) -> dict[str, int]:
    """One UAS and one UAC (built-in ``uac``), ``calls`` calls; the UAC's sipp totals."""
    uas = _sipp([*uas_args, "-p", str(uas_port), "-m", str(calls)], tmp)
    uac = None
    try:
        time.sleep(0.3)  # the UAS binds its port
        uac = _sipp(
            [
                "-sn",
                "uac",
                f"{LOOPBACK}:{uas_port}",
                "-p",
                str(uac_port),
                "-m",
                str(calls),
                "-r",
                "50",
                "-d",
                "200",
                "-trace_stat",
                "-stf",
                f"{name}.csv",
                "-fd",
                "1",
            ],
            tmp,
        )
        uac.wait(timeout=25)
        # The UAC ends after the last 200 to its BYE (or the last ACK); the UAS would
        # linger for its retransmission timers, which nobody needs here.
        time.sleep(0.2)
    finally:
        if uac is not None:
            stop(uac)
        stop(uas)
    return _sipp_totals(tmp / f"{name}.csv")


def test_sipp_calls_agree_with_call_records(tmp_path: Path) -> None:
    busy_xml = tmp_path / "uas_busy.xml"
    busy_xml.write_text(UAS_BUSY)
    ports = free_udp_ports(4)
    pcap = tmp_path / "sipp.pcap"
    tcpdump = start_tcpdump(pcap, ports)
    try:
        answered = _run_calls(
            tmp_path, "answered", ["-sn", "uas"], ports[0], ports[1], ANSWERED_CALLS
        )
        rejected = _run_calls(
            tmp_path, "rejected", ["-sf", str(busy_xml)], ports[2], ports[3], REJECTED_CALLS
        )
        time.sleep(0.3)  # the last ACK/200 reach the capture
    finally:
        stop(tcpdump, signal.SIGINT)
    assert tcpdump.returncode == 0

    # sipp's own view: every call made; the built-in pair succeeds, the 486 ones fail.
    assert answered == {"created": ANSWERED_CALLS, "successful": ANSWERED_CALLS, "failed": 0}
    assert rejected == {"created": REJECTED_CALLS, "successful": 0, "failed": REJECTED_CALLS}

    records = replay_records([pcap], Config(), keys=init_keys(tmp_path / "keys"))
    calls = [r for r in records if isinstance(r, CallRecord)]
    assert len(calls) == answered["created"] + rejected["created"]
    by_port = Counter(c.dst_port for c in calls)
    assert by_port == {ports[0]: ANSWERED_CALLS, ports[2]: REJECTED_CALLS}

    ok = [c for c in calls if c.dst_port == ports[0]]
    assert len(ok) == answered["successful"]
    assert {(c.final_code, c.end_reason, c.release) for c in ok} == {(200, "bye", "caller")}
    assert all(c.answer_ns is not None and c.duration_ms >= 200.0 for c in ok)

    busy = [c for c in calls if c.dst_port == ports[2]]
    assert len(busy) == rejected["failed"]
    assert {(c.final_code, c.end_reason, c.release) for c in busy} == {(486, "busy", "rejected")}
    assert all(c.answer_ns is None and c.duration_ms == 0.0 for c in busy)
    assert len({c.call_id_hash for c in calls}) == len(calls)
