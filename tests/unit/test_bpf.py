"""BPF: tcpdump -dd output parsed, programs packed as sock_filter, attached in the kernel."""

from __future__ import annotations

import socket
import struct

import pytest

from trafficguard.capture.bpf import (
    FilterError,
    attach_filter,
    compile_filter,
    detach_filter,
    pack_program,
    parse_dd,
)
from trafficguard.capture.live import accept_all, filter_program

DD = """{ 0x28, 0, 0, 0x0000000c },
{ 0x15, 0, 1, 0x00000800 },
{ 0x6, 0, 0, 0x00040000 },
{ 0x6, 0, 0, 0x00000000 },
"""


def test_parse_dd_reads_every_instruction() -> None:
    assert parse_dd(DD) == [(0x28, 0, 0, 12), (0x15, 0, 1, 0x800), (6, 0, 0, 0x40000), (6, 0, 0, 0)]
    with pytest.raises(ValueError, match="not a BPF instruction"):
        parse_dd("(000) ldh [12]\n")
    with pytest.raises(ValueError):
        parse_dd("")


def test_pack_program_is_sock_filter_array() -> None:
    packed = pack_program(parse_dd(DD))
    assert len(packed) == 4 * 8
    assert struct.unpack_from("HBBI", packed, 8) == (0x15, 0, 1, 0x800)


def test_compile_filter_uses_tcpdump_and_snaplen() -> None:
    program = compile_filter("udp port 53", linktype=1, snaplen=1500)
    assert program[0] == (0x28, 0, 0, 12)  # ldh [12]: the ethertype
    assert (6, 0, 0, 1500) in program  # accept returns the snap length
    assert program[-1] == (6, 0, 0, 0)
    assert filter_program("", 1, 2000) == accept_all(2000) == [(6, 0, 0, 2000)]


def test_invalid_expression_names_the_problem() -> None:
    with pytest.raises(FilterError) as err:
        compile_filter("udp prt 53")
    assert err.value.expression == "udp prt 53"
    assert "syntax error" in err.value.reason
    with pytest.raises(FilterError, match="link type"):
        compile_filter("udp", linktype=9999)


def test_kernel_accepts_compiled_program_and_rejects_a_bad_one() -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        attach_filter(sock, compile_filter("tcp port 443"))
        detach_filter(sock)
        with pytest.raises(OSError):  # jump beyond the end of the program
            attach_filter(sock, [(0x15, 5, 5, 0x800), (6, 0, 0, 0)])
