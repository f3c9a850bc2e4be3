"""Listening-quality estimate from RTP statistics: the ITU-T G.107 E-model, simplified.

    R = (Ro - Is) - Id - Ie_eff + A                                   (G.107 §3)

* ``Ro - Is`` is 93.2 with every G.107 default (``R0_MINUS_IS``);
* ``Id`` is the delay impairment. Only ``Idd`` (absolute delay ``Ta``, G.107 §3.4) is
  modelled: echo is assumed cancelled (``Idte``, ``Idle`` ≈ 0 with default TELR/WEPL);
* ``Ie_eff = Ie + (95 - Ie) · Ppl / (Ppl / BurstR + Bpl)``               (G.107 §3.5)
  with ``Ie``/``Bpl`` per codec from G.113 Appendix I, ``Ppl`` the loss in percent and
  ``BurstR`` 1 for random loss;
* ``A`` (advantage factor) is 0 for wired telephony.

MOS from R follows G.107 Annex B. A passive probe does not know the real mouth-to-ear
delay; ``one_way_delay_ms`` estimates it from RTCP RTT when seen, otherwise from the
jitter buffer needed for the measured jitter plus packetization.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

R0_MINUS_IS: Final = 93.2


class CodecImpairment(NamedTuple):
    """G.113 Appendix I equipment impairment ``Ie`` and packet-loss robustness ``Bpl``."""

    ie: float
    bpl: float
    source: str  # where the values come from (G.113 table, or an assumption)


# Values are for narrowband (R scale 0..100). Codecs without a G.113 entry are mapped
# to the closest one and say so in ``source``.
CODEC_IMPAIRMENTS: Final[dict[str, CodecImpairment]] = {
    "PCMU": CodecImpairment(0.0, 25.1, "G.113 I.3: G.711 with PLC"),
    "PCMA": CodecImpairment(0.0, 25.1, "G.113 I.3: G.711 with PLC"),
    "G711-NOPLC": CodecImpairment(0.0, 4.3, "G.113 I.3: G.711 without PLC"),
    "G729": CodecImpairment(11.0, 19.0, "G.113 I.3: G.729A + VAD"),
    "G723": CodecImpairment(15.0, 16.1, "G.113 I.3: G.723.1 6.3 kbit/s + VAD"),
    "G726-32": CodecImpairment(7.0, 4.3, "G.113 I.1: G.726 32 kbit/s (Bpl as G.711 no PLC)"),
    "G728": CodecImpairment(7.0, 4.3, "G.113 I.1: G.728 16 kbit/s (Bpl assumed)"),
    "GSM": CodecImpairment(20.0, 10.0, "G.113 I.1: GSM-FR Ie; Bpl assumed"),
    "GSM-EFR": CodecImpairment(5.0, 10.0, "G.113 I.1: GSM-EFR Ie; Bpl assumed"),
    "iLBC": CodecImpairment(11.0, 32.0, "assumed: no G.113 entry"),
    "G722": CodecImpairment(0.0, 25.1, "assumed as G.711 on the narrowband scale"),
    "opus": CodecImpairment(0.0, 25.1, "assumed as G.711 on the narrowband scale"),
}
DEFAULT_IMPAIRMENT: Final = CODEC_IMPAIRMENTS["PCMU"]


def delay_impairment(ta_ms: float) -> float:
    """``Idd`` of G.107 §3.4 for absolute one-way delay ``ta_ms`` (0 up to 100 ms)."""
    if ta_ms <= 100.0:
        return 0.0
    x = math.log10(ta_ms / 100.0) / math.log10(2.0)
    a = math.pow(1.0 + math.pow(x, 6.0), 1.0 / 6.0)
    b = math.pow(1.0 + math.pow(x / 3.0, 6.0), 1.0 / 6.0)
    return 25.0 * (a - 3.0 * b + 2.0)


def effective_ie(ie: float, bpl: float, loss_pct: float, burst_r: float = 1.0) -> float:
    """``Ie_eff`` of G.107 §3.5 for packet loss ``loss_pct`` (0..100)."""
    ppl = min(max(loss_pct, 0.0), 100.0)
    return ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)


def r_factor(
    codec: str,
    loss_pct: float,
    one_way_delay_ms: float,
    burst_r: float = 1.0,
    advantage: float = 0.0,
) -> float:
    """The transmission rating R for one stream (clamped to 0..100)."""
    imp = CODEC_IMPAIRMENTS.get(codec, DEFAULT_IMPAIRMENT)
    r = (
        R0_MINUS_IS
        - delay_impairment(one_way_delay_ms)
        - effective_ie(imp.ie, imp.bpl, loss_pct, burst_r)
        + advantage
    )
    return min(max(r, 0.0), 100.0)


def mos_from_r(r: float) -> float:
    """MOS-CQE from R (G.107 Annex B, eq. B-4)."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def one_way_delay_ms(
    rtt_ms: float | None, jitter_ms: float, packetization_ms: float = 20.0
) -> float:
    """Mouth-to-ear delay estimate: network (RTT/2 when known) + jitter buffer + framing.

    The jitter buffer is taken as twice the mean jitter (at least one packet), a common
    adaptive-buffer setting; packetization adds one frame of delay.
    """
    network = rtt_ms / 2.0 if rtt_ms is not None else 0.0
    jitter_buffer = max(2.0 * jitter_ms, packetization_ms)
    return network + jitter_buffer + packetization_ms
