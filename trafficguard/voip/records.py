"""VoIP records: what the SIP tracker and the RTP meter emit and every sink stores.

Privacy by construction: no field can hold a raw number, URI, display name, Call-ID or
body. Parties are pseudonyms (``Pseudonymizer.user`` of the canonical number) plus a class
from ``numbers.NUMBER_CLASSES``; the Call-ID is ``Pseudonymizer.token`` of it; codec names
come from a closed set (``sdp.KNOWN_CODECS``); addresses are validated IP literals of
network endpoints (signalling and media), which the pipeline treats like flow endpoints.
Every other field is a number, a bool or a value of one of the closed tuples below.

Times are packet time in ns; durations in ms as floats (``None`` = not measured).
"""

# No `from __future__ import annotations`: the store reads these Structs' annotations at
# start-up (msgspec.structs.fields), and each string one costs a typing.ForwardRef compile.
from typing import ClassVar, Final

import msgspec

RELEASES: Final = ("caller", "callee", "timeout", "cancel", "rejected", "flush")
CALL_END_REASONS: Final = (
    "bye",  # BYE from either side ended an answered call
    "cancelled",  # caller sent CANCEL before an answer
    "busy",  # 486 / 600
    "no_answer",  # 408 / 480 / 487 without CANCEL, or no final response in time
    "redirected",  # 3xx
    "rejected",  # any other final non-2xx (incl. an unanswered auth challenge)
    "no_response",  # INVITE never got any response (Timer B)
    "ringing_timeout",  # provisional responses but no final one (Timer C)
    "max_duration",  # answered call without BYE for longer than the configured maximum
    "flush",  # still open when the tracker was flushed (shutdown / end of replay)
)
REGISTRATION_END_REASONS: Final = ("final", "timeout", "challenge_timeout", "flush")
TRANSPORTS: Final = ("udp", "tcp", "tls", "sctp", "ws", "wss")


class CallRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One call attempt: an INVITE dialog from first INVITE to release (CDR-like)."""

    kind: ClassVar[str] = "call"

    call_id_hash: str  # Pseudonymizer.token(Call-ID): joins the call's records
    caller: str  # Pseudonymizer.user(canonical From user)
    caller_class: str  # one of numbers.NUMBER_CLASSES
    callee: str  # Pseudonymizer.user(canonical To / Request-URI user)
    callee_class: str
    src_addr: str  # signalling endpoints of the first INVITE
    src_port: int
    dst_addr: str
    dst_port: int
    transport: str  # one of TRANSPORTS
    invite_ns: int  # first INVITE of the call (before any auth challenge)
    first_provisional_ns: int | None  # first 18x
    answer_ns: int | None  # first 2xx to the INVITE
    end_ns: int
    pdd_ms: float | None  # post-dial delay: last INVITE -> first 18x (or final response)
    duration_ms: float  # answer -> end; 0 when not answered
    final_code: int  # final response to the (last) initial INVITE; 0 if none seen
    release: str  # one of RELEASES
    end_reason: str  # one of CALL_END_REASONS
    attempts: int  # initial INVITE transactions (1 + credentialed retries)
    auth_challenges: int  # 401/407 to the initial INVITE
    forked: int  # distinct To-tags in 18x/2xx responses
    codecs: tuple[str, ...]  # from the answer SDP (closed set, offer order)
    media: tuple[str, ...]  # "addr:port" of every RTP endpoint negotiated, in order seen
    reinvites: int
    held: bool  # put on hold at least once (re-INVITE with sendonly/inactive/0.0.0.0)
    sensor_loss: bool = False


class RegistrationRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One registration attempt: REGISTER(s) up to the final response."""

    kind: ClassVar[str] = "registration"

    call_id_hash: str
    aor: str  # Pseudonymizer.user(canonical To user)
    aor_class: str
    src_addr: str
    src_port: int
    dst_addr: str
    dst_port: int
    transport: str
    ts_ns: int  # first REGISTER of the attempt
    end_ns: int  # final response (or timeout)
    result_code: int  # final response code, 0 if none seen
    expires_s: int  # granted (or requested) expiry; 0 = de-registration; -1 unknown
    challenges: int  # 401/407 responses within the attempt
    requests: int  # REGISTER transactions in the attempt (retransmissions not counted)
    end_reason: str  # one of REGISTRATION_END_REASONS
    sensor_loss: bool = False


class RtpStreamRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Quality of one RTP stream (one SSRC in one direction of a flow)."""

    kind: ClassVar[str] = "rtp_stream"

    ssrc: int
    src_addr: str
    src_port: int
    dst_addr: str
    dst_port: int
    first_ns: int
    last_ns: int
    payload_type: int  # first payload type seen
    codec: str  # closed set (sdp.KNOWN_CODECS, "other", "unknown")
    clock_rate: int  # 0 = unknown (then no jitter)
    packets: int  # every packet seen, duplicates included
    expected: int  # RFC 3550 A.3: extended highest seq - base + 1 (summed over resyncs)
    lost: int  # expected - unique packets received (>= 0)
    duplicates: int
    reordered: int  # arrived after a higher sequence number
    seq_resets: int  # large sequence jumps accepted as a restart (RFC 3550 A.1)
    jitter_mean_ms: float  # RFC 3550 A.8 interarrival jitter: mean over packets
    jitter_max_ms: float
    max_delta_ms: float  # largest gap between consecutive arrivals
    call_id_hash: str = ""  # the call whose SDP announced this endpoint, if known
    rtt_ms: float | None = None  # from RTCP SR/RR when both were seen
    r_factor: float | None = None  # E-model (G.107) estimate
    mos: float | None = None
    sensor_loss: bool = False
    rtcp_fraction_lost: float | None = None  # latest RTCP RR/SR block about this SSRC (0..1)
    rtcp_jitter_ms: float | None = None  # jitter the receiver reported in that block
