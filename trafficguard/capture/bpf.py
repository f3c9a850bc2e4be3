"""Classic BPF filters: compiled by ``tcpdump -dd`` and attached to a socket in the kernel.

The kernel filters before a packet is copied to the ring, so what the operator excludes
never costs Python time and never counts as a drop. We do not write a BPF compiler:
``tcpdump -dd`` (libpcap's compiler, the same one every capture tool uses) prints the
program as C initialisers, which we parse. The kernel copies the program on
``SO_ATTACH_FILTER``, so the ctypes buffer only has to live for that one call.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import socket
import struct
import subprocess
from typing import Final

from trafficguard.errors import TrafficguardError

SO_ATTACH_FILTER: Final = 26
SO_DETACH_FILTER: Final = 27
BPF_MAXINSNS: Final = 4096
DLT_NAMES: Final = {1: "EN10MB", 101: "RAW", 113: "LINUX_SLL", 276: "LINUX_SLL2"}

Instruction = tuple[int, int, int, int]  # (code, jt, jf, k) = struct sock_filter

_INSN_RE: Final = re.compile(
    r"^\{\s*(0x[0-9a-f]+),\s*(\d+),\s*(\d+),\s*(0x[0-9a-f]+)\s*\},?$", re.IGNORECASE
)
_SOCK_FILTER: Final = struct.Struct("HBBI")  # u16 code, u8 jt, u8 jf, u32 k


class FilterError(TrafficguardError):
    """A BPF filter expression does not compile, or the kernel refused the program."""

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"BPF filter {expression!r}: {reason}")


def parse_dd(text: str) -> list[Instruction]:
    """Parse ``tcpdump -dd`` output (one ``{ code, jt, jf, k },`` per line)."""
    program: list[Instruction] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _INSN_RE.match(line)
        if m is None:
            raise ValueError(f"not a BPF instruction line: {line!r}")
        program.append((int(m.group(1), 16), int(m.group(2)), int(m.group(3)), int(m.group(4), 16)))
    if not program or len(program) > BPF_MAXINSNS:
        raise ValueError(f"BPF program has {len(program)} instructions")
    return program


def compile_filter(expression: str, linktype: int = 1, snaplen: int = 262144) -> list[Instruction]:
    """Compile a pcap-filter(7) expression for ``linktype`` with ``tcpdump -dd``.

    Raises :class:`FilterError` with tcpdump's own message when the expression is invalid.
    """
    tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
    dlt = DLT_NAMES.get(linktype)
    if dlt is None:
        raise FilterError(expression, f"no BPF compiler mapping for link type {linktype}")
    try:
        proc = subprocess.run(
            [tcpdump, "-dd", "-y", dlt, "-s", str(snaplen), "--", expression],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FilterError(expression, f"cannot run tcpdump: {err}") from None
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "tcpdump failed"
        raise FilterError(expression, reason.removeprefix("tcpdump: "))
    try:
        return parse_dd(proc.stdout)
    except ValueError as err:
        raise FilterError(expression, str(err)) from None


def pack_program(program: list[Instruction]) -> bytes:
    """The program as an array of ``struct sock_filter``."""
    return b"".join(_SOCK_FILTER.pack(*insn) for insn in program)


def attach_filter(sock: socket.socket, program: list[Instruction]) -> None:
    """Attach (or replace) the socket's filter: ``struct sock_fprog {u16 len; ptr filter}``."""
    code = pack_program(program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def detach_filter(sock: socket.socket) -> None:
    """Remove the socket's filter (every packet passes again); no error if none."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    except OSError:
        return


DROP_ALL: Final[list[Instruction]] = [(0x06, 0, 0, 0)]  # ret #0
