"""The compiled fast path: pcap framing, common-path decode and the flow table in C.

``_core.c`` ports ``decode/decoder.py`` (Ethernet, 802.1Q/QinQ, IPv4 without fragments,
IPv6 without extension headers, TCP/UDP/ICMP/ICMPv6/SCTP), ``flow/table.py`` and
``flow/signatures.py`` so that the records are identical to the pure-Python path, which
stays the reference: every other frame goes back to ``Decoder`` and its packet updates the
same C table. ``make_fast_path`` decides from ``capture.fast_path`` whether the pipeline
uses it; when the extension was not built, ``auto`` quietly keeps the Python path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trafficguard.config import Config

if TYPE_CHECKING:
    from trafficguard.decode.decoder import Decoder
    from trafficguard.fast.path import FastPath


def available() -> bool:
    """Whether the C extension was built and matches this package's label table."""
    try:
        from trafficguard.fast import _core  # noqa: PLC0415 - optional extension
    except ImportError:
        return False
    from trafficguard.flow.classify import APP_LABELS  # noqa: PLC0415

    return _core.LABELS == APP_LABELS


def make_fast_path(cfg: Config, decoder: Decoder) -> FastPath | None:
    """The fast path for this config, or None for the Python path.

    ``capture.fast_path``: ``off`` never, ``on`` always (error when not built), ``auto``
    when built.
    """
    mode = cfg.capture.fast_path
    if mode == "off":
        return None
    if not available():
        if mode == "on":
            raise RuntimeError(
                "capture.fast_path is 'on' but trafficguard.fast._core is not built "
                "(reinstall with a C compiler and the Python headers)"
            )
        return None
    from trafficguard.fast.path import FastPath  # noqa: PLC0415 - needs the extension

    return FastPath(cfg, decoder)
