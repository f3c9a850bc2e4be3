"""SIP call and registration tracking: messages in, call/registration records out.

``CallTracker`` follows INVITE dialogs (RFC 3261 §13, §17) and REGISTER transactions
(§10) by Call-ID, tags, CSeq and Via branch, using packet time only (``ts_ns`` passed
in; ``tick(now_ns)`` fires timeouts), so a replay gives the same records at any speed.
No I/O, no logging.

Everything that moves a call from one state to the next lives in ``TRANSITIONS`` (the
h11 ``_state.py`` model): ``observe`` turns a message into one event, the table says
the next state (or that the event is unexpected, which is counted in ``anomalies``), and
``STATE_TIMEOUTS`` says how long a call may stay in each state::

    CALLING ──1xx──> PROCEEDING ──18x──> EARLY ──2xx──> CONFIRMED ──BYE──> ENDED
       │  └───────────18x──────────────────┘               ▲               ▲
       ├──401/407──> CHALLENGED ──new INVITE──> CALLING    │               │
       ├──CANCEL──> CANCELLING ──487/final──────────────────┼───────────────┤
       ├──3xx-6xx──────────────────────────────────────────────────────────┤
       └──timeout (Timer B / Timer C / challenge wait / max duration) ─────┘

An ENDED call stays as a tombstone for ``linger_s`` so that retransmissions, the ACK of
a failure and the 200 to a BYE are absorbed instead of looking like new calls.

Privacy: raw values (URIs, numbers, Call-IDs, tags) are read from the message being
observed; the state kept between messages holds only pseudonyms, classes, tags (random
protocol tokens, never emitted) and SDP-derived network endpoints.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from trafficguard.voip.numbers import NumberClassifier, extract_user
from trafficguard.voip.pseudo import Pseudonymizer
from trafficguard.voip.records import TRANSPORTS, CallRecord, RegistrationRecord
from trafficguard.voip.sdp import SdpInfo, parse_sdp
from trafficguard.voip.sip import KNOWN_METHODS, OTHER_METHOD, SipMessage, header_params, param

NS_PER_S: Final = 1_000_000_000
NS_PER_MS: Final = 1_000_000

# -- call states ---------------------------------------------------------------------------
CALLING: Final = "calling"  # INVITE sent, nothing back yet
PROCEEDING: Final = "proceeding"  # 100 (or another non-18x 1xx) received
EARLY: Final = "early"  # 18x received
CHALLENGED: Final = "challenged"  # 401/407: waiting for the INVITE with credentials
CANCELLING: Final = "cancelling"  # CANCEL seen: waiting for the final response
CONFIRMED: Final = "confirmed"  # answered
ENDED: Final = "ended"  # record emitted; tombstone until linger expires

# -- events --------------------------------------------------------------------------------
EV_INVITE: Final = "invite"  # a new initial INVITE transaction (new CSeq) on a known call
EV_PROVISIONAL: Final = "provisional"  # 1xx other than 18x
EV_RINGING: Final = "ringing"  # 180..189
EV_ANSWER: Final = "answer"  # 2xx
EV_CHALLENGE: Final = "challenge"  # 401 / 407
EV_FAILURE: Final = "failure"  # other 3xx..6xx
EV_CANCEL: Final = "cancel"
EV_BYE: Final = "bye"
EV_TIMEOUT: Final = "timeout"

_LIVE: Final = (CALLING, PROCEEDING, EARLY, CHALLENGED, CANCELLING, CONFIRMED)
_RINGING_STATES: Final = (CALLING, PROCEEDING, EARLY)

TRANSITIONS: Final[dict[tuple[str, str], str]] = {
    **{(s, EV_PROVISIONAL): PROCEEDING for s in (CALLING, PROCEEDING)},
    (EARLY, EV_PROVISIONAL): EARLY,
    **{(s, EV_RINGING): EARLY for s in _RINGING_STATES},
    **{(s, EV_ANSWER): CONFIRMED for s in (*_RINGING_STATES, CANCELLING, CONFIRMED)},
    **{(s, EV_CHALLENGE): CHALLENGED for s in _RINGING_STATES},
    **{(s, EV_FAILURE): ENDED for s in _RINGING_STATES},
    **{(s, EV_CANCEL): CANCELLING for s in (*_RINGING_STATES, CANCELLING)},
    **{(s, EV_INVITE): CALLING for s in (*_RINGING_STATES, CHALLENGED)},
    (CANCELLING, EV_PROVISIONAL): CANCELLING,
    (CANCELLING, EV_RINGING): CANCELLING,
    (CANCELLING, EV_FAILURE): ENDED,
    (CANCELLING, EV_CHALLENGE): ENDED,
    (CONFIRMED, EV_BYE): ENDED,
    **{(s, EV_TIMEOUT): ENDED for s in _LIVE},
}

# Which timeout (attribute of CallTimeouts, in ns) bounds each state.
STATE_TIMEOUTS: Final = {
    CALLING: "invite_ns",
    PROCEEDING: "ringing_ns",
    EARLY: "ringing_ns",
    CHALLENGED: "challenge_ns",
    CANCELLING: "invite_ns",
    CONFIRMED: "max_call_ns",
    ENDED: "linger_ns",
}

# (release, end_reason) when a state times out.
_TIMEOUT_OUTCOME: Final = {
    CALLING: ("timeout", "no_response"),
    PROCEEDING: ("timeout", "ringing_timeout"),
    EARLY: ("timeout", "ringing_timeout"),
    CHALLENGED: ("rejected", "rejected"),
    CANCELLING: ("cancel", "cancelled"),
    CONFIRMED: ("timeout", "max_duration"),
}

# Anomalies: a closed set of counted oddities (never raised, never logged).
ORPHAN_RESPONSE: Final = "orphan_response"  # response to no tracked transaction
ORPHAN_REQUEST: Final = "orphan_request"  # in-dialog request (BYE, re-INVITE) for no call
OUT_OF_STATE: Final = "out_of_state"  # event the transition table does not allow
FOREIGN_BYE: Final = "foreign_bye"  # BYE of a fork that did not win
TABLE_FULL: Final = "table_full"  # max_calls / max_registrations reached
MAX_FORK_ANSWERS: Final = 16  # early dialogs per call whose SDP answer is remembered
ANOMALIES: Final = (ORPHAN_RESPONSE, ORPHAN_REQUEST, OUT_OF_STATE, FOREIGN_BYE, TABLE_FULL)

RESPONSE_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")


class CallTimeouts(BaseModel):
    """Packet-time limits of the tracker (seconds); goes into the main config as is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    invite_s: float = Field(32.0, gt=0, description="no response to an INVITE (Timer B)")
    ringing_s: float = Field(180.0, gt=0, description="provisional but no final (Timer C)")
    challenge_s: float = Field(
        64.0, gt=0, description="wait for the INVITE/REGISTER with credentials after 401/407"
    )
    max_call_s: float = Field(14400.0, gt=0, description="answered call without BYE")
    linger_s: float = Field(32.0, ge=0, description="tombstone for retransmissions")
    register_s: float = Field(32.0, gt=0, description="no final response to a REGISTER")

    @property
    def invite_ns(self) -> int:
        """Timer B in ns."""
        return int(self.invite_s * NS_PER_S)

    @property
    def ringing_ns(self) -> int:
        """Timer C in ns."""
        return int(self.ringing_s * NS_PER_S)

    @property
    def challenge_ns(self) -> int:
        """Credential wait in ns."""
        return int(self.challenge_s * NS_PER_S)

    @property
    def max_call_ns(self) -> int:
        """Maximum answered-call duration in ns."""
        return int(self.max_call_s * NS_PER_S)

    @property
    def linger_ns(self) -> int:
        """Tombstone lifetime in ns."""
        return int(self.linger_s * NS_PER_S)

    @property
    def register_ns(self) -> int:
        """REGISTER transaction timeout in ns."""
        return int(self.register_s * NS_PER_S)


class _Call:
    """State of one call between messages: pseudonyms, times, tags; no raw identities."""

    __slots__ = (
        "acked",
        "answer_ns",
        "answer_tag",
        "attempt_ns",
        "attempts",
        "auth_challenges",
        "call_id_hash",
        "callee",
        "callee_class",
        "caller",
        "caller_class",
        "caller_tag",
        "cancelled",
        "codecs",
        "deadline",
        "dst",
        "end_ns",
        "final_code",
        "first_18x_ns",
        "fork_codecs",
        "held",
        "invite_cseq",
        "invite_ns",
        "last_ns",
        "media",
        "offer_in_invite",
        "pdd_end_ns",
        "reinvite_cseq",
        "reinvites",
        "src",
        "state",
        "to_tags",
        "transport",
    )

    def __init__(self) -> None:
        self.state = CALLING
        self.deadline = 0
        self.call_id_hash = ""
        self.caller = self.caller_class = self.callee = self.callee_class = ""
        self.caller_tag = ""
        self.src: tuple[str, int] = ("", 0)
        self.dst: tuple[str, int] = ("", 0)
        self.transport = "udp"
        self.invite_ns = self.attempt_ns = self.last_ns = 0
        self.first_18x_ns: int | None = None
        self.pdd_end_ns: int | None = None
        self.answer_ns: int | None = None
        self.end_ns = 0
        self.final_code = 0
        self.invite_cseq = 0
        self.reinvite_cseq = -1
        self.attempts = 1
        self.auth_challenges = 0
        self.to_tags: set[str] = set()
        self.answer_tag = ""
        self.acked = False  # the answer's dialog was ACKed (a later fork's ACK changes nothing)
        self.cancelled = False
        self.codecs: list[str] = []
        # the latest SDP answer of each early dialog (fork) by its callee tag: the codecs
        # of the session that fork establishes (RFC 3261 §13.2.1, 3262, 3311)
        self.fork_codecs: dict[str, list[str]] = {}
        self.media: list[str] = []
        self.offer_in_invite = False
        self.reinvites = 0
        self.held = False


class _Registration:
    """State of one registration attempt (REGISTER ... final response)."""

    __slots__ = (
        "aor",
        "aor_class",
        "awaiting_retry",
        "call_id_hash",
        "challenges",
        "cseq",
        "deadline",
        "done",
        "dst",
        "expires_req",
        "first_ns",
        "last_code",
        "requests",
        "src",
        "transport",
    )

    def __init__(self) -> None:
        self.call_id_hash = ""
        self.aor = self.aor_class = ""
        self.src: tuple[str, int] = ("", 0)
        self.dst: tuple[str, int] = ("", 0)
        self.transport = "udp"
        self.first_ns = 0
        self.cseq = 0
        self.challenges = 0
        self.requests = 1
        self.expires_req = -1
        self.deadline = 0
        self.done = False
        self.awaiting_retry = False  # a 401/407 came back; the next REGISTER continues
        self.last_code = 0


def _endpoint_port(endpoint: str) -> int:
    """The port of an ``addr:port`` / ``[v6]:port`` endpoint (``SdpMedia.endpoint``)."""
    return int(endpoint.rpartition(":")[2])


def _expires_of(msg: SipMessage) -> int:
    """Expiry of a REGISTER/200: first Contact ``expires`` param, else Expires, else -1."""
    for contact in msg.header_values("contact"):
        value = param(header_params(contact), "expires")
        if value.isascii() and value.isdigit() and len(value) <= 10:
            return int(value)
    expires = msg.header("expires")
    if expires is not None and expires.isascii() and expires.isdigit() and len(expires) <= 10:
        return int(expires)
    return -1


def _sdp_of(msg: SipMessage) -> SdpInfo | None:
    if not msg.body:
        return None
    ctype = msg.header("content-type")
    if ctype is not None and "application/sdp" not in ctype.lower():
        return None  # multipart bodies (SDP + ISUP) are not split yet
    return parse_sdp(msg.body)


class CallTracker:
    """Tracks SIP calls and registrations; emits CallRecord / RegistrationRecord.

    Feed every SIP message of the monitored links to ``observe`` in packet-time order,
    call ``tick`` regularly (and ``flush_all`` at the end), and collect records with
    ``take_records``. Counters are plain int dicts, read by the metrics collector at
    scrape time: ``method_counts[method]`` (requests, retransmissions included, like
    ``tshark -z sip,stat``), ``response_counts[(method, "4xx")]``, ``code_counts[486]``
    and ``anomalies[name]``.
    """

    def __init__(
        self,
        pseudonymizer: Pseudonymizer,
        classifier: NumberClassifier,
        timeouts: CallTimeouts | None = None,
        max_calls: int = 100_000,
        max_registrations: int = 100_000,
    ) -> None:
        self._pseudo = pseudonymizer
        self._classifier = classifier
        t = timeouts or CallTimeouts()
        self._timeouts = t
        self._state_timeout_ns = {s: getattr(t, attr) for s, attr in STATE_TIMEOUTS.items()}
        self._register_ns = t.register_ns
        self._challenge_ns = t.challenge_ns
        self._linger_ns = t.linger_ns
        self._max_calls = max_calls
        self._max_regs = max_registrations
        self._calls: dict[str, _Call] = {}
        self._regs: dict[str, _Registration] = {}
        self._media_owner: dict[str, str] = {}
        self._media_rtpmap: dict[str, dict[int, tuple[str, int]]] = {}
        # port -> how many known endpoints use it: a UDP flow whose ports are not here
        # cannot be announced media, and needs no address text to find that out
        self._media_ports: dict[int, int] = {}
        # told when a port gains its first endpoint (+1) or loses its last (-1): the fast
        # path's start filter lets those ports' flows through (VoipStage.attach sets it)
        self.port_watch: Callable[[int, int], None] | None = None
        self._timers: list[tuple[int, int, str]] = []  # (deadline, seq, key) lazy heap
        self._timer_seq = 0
        self._out: list[CallRecord | RegistrationRecord] = []
        self.method_counts: dict[str, int] = {}
        self.response_counts: dict[tuple[str, str], int] = {}
        self.code_counts: dict[int, int] = {}
        self.anomalies: dict[str, int] = {}
        self.calls_started = 0  # calls created (ended ones are the emitted records)

    # -- public API ------------------------------------------------------------------------
    @property
    def open_calls(self) -> int:
        """Calls not yet ended (tombstones excluded)."""
        return sum(1 for c in self._calls.values() if c.state != ENDED)

    def take_records(self) -> list[CallRecord | RegistrationRecord]:
        """Records completed since the last call, in completion order."""
        out = self._out
        self._out = []
        return out

    @property
    def media_known(self) -> bool:
        """Whether any SDP media endpoint is currently tied to a call."""
        return bool(self._media_owner)

    def media_owner(self, endpoint: str) -> str | None:
        """call_id_hash of the call whose SDP announced ``addr:port``, while it is known.

        Lets the integration tie an RTP flow to its call (and know to meter it) without
        any RTP heuristic.
        """
        return self._media_owner.get(endpoint)

    def media_port_known(self, port: int) -> bool:
        """Whether some known SDP endpoint uses ``port`` (the cheap test before
        ``media_owner``, which needs the endpoint's address text)."""
        return port in self._media_ports

    def _forget_media_port(self, endpoint: str) -> None:
        port = _endpoint_port(endpoint)
        left = self._media_ports[port] - 1
        if left:
            self._media_ports[port] = left
        else:
            del self._media_ports[port]
            if self.port_watch is not None:
                self.port_watch(port, -1)

    def media_rtpmap(self, endpoint: str) -> dict[int, tuple[str, int]]:
        """Payload type -> (codec, clock rate) the SDP gave for ``addr:port`` ({} if none)."""
        return self._media_rtpmap.get(endpoint, {})

    def observe(
        self,
        msg: SipMessage,
        ts_ns: int,
        src: tuple[str, int],
        dst: tuple[str, int],
        transport: str,
    ) -> None:
        """Account one SIP message seen at packet time ``ts_ns`` from ``src`` to ``dst``."""
        method = msg.method if msg.method in KNOWN_METHODS else OTHER_METHOD
        if msg.status == 0:
            self.method_counts[method] = self.method_counts.get(method, 0) + 1
        else:
            key = (method, RESPONSE_CLASSES[msg.status // 100 - 1])
            self.response_counts[key] = self.response_counts.get(key, 0) + 1
            self.code_counts[msg.status] = self.code_counts.get(msg.status, 0) + 1
        if method == "REGISTER":
            self._observe_register(msg, ts_ns, src, dst, transport)
        elif method in ("INVITE", "ACK", "CANCEL", "BYE", "UPDATE", "PRACK"):
            self._observe_call(msg, method, ts_ns=ts_ns, src=src, dst=dst, transport=transport)

    def tick(self, now_ns: int) -> None:
        """Fire every timeout due at or before packet time ``now_ns``."""
        timers = self._timers
        while timers and timers[0][0] <= now_ns:
            deadline, _, key = heapq.heappop(timers)
            self._expire(key, deadline)

    def flush_all(self) -> None:
        """End every open call and registration now (shutdown, end of a replay)."""
        for call in list(self._calls.values()):
            if call.state != ENDED:
                self._end(call, call.last_ns, "flush", "flush")
        for reg in list(self._regs.values()):
            if not reg.done:
                self._emit_registration(reg, reg.first_ns, 0, reg.expires_req, "flush")
        self._calls.clear()
        self._regs.clear()
        self._media_owner.clear()
        self._media_rtpmap.clear()
        if self.port_watch is not None:
            for port in self._media_ports:
                self.port_watch(port, -1)
        self._media_ports.clear()
        self._timers.clear()

    # -- timers ----------------------------------------------------------------------------
    def _arm(self, key: str, deadline: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, key))

    def _expire(self, key: str, deadline: int) -> None:
        kind, _, token = key.partition(":")
        if kind == "c":
            call = self._calls.get(token)
            if call is None or call.deadline != deadline:
                return  # stale timer: the call moved on
            if call.state == ENDED:
                del self._calls[token]
                for endpoint in call.media:
                    if self._media_owner.get(endpoint) == token:
                        del self._media_owner[endpoint]
                        self._media_rtpmap.pop(endpoint, None)
                        self._forget_media_port(endpoint)
                return
            release, reason = _TIMEOUT_OUTCOME[call.state]
            self._end(call, deadline, release, reason)
        else:
            reg = self._regs.get(token)
            if reg is None or reg.deadline != deadline:
                return
            if reg.done:
                del self._regs[token]
                return
            self._finish_registration(
                token, reg, deadline, code=0, expires=reg.expires_req, reason="timeout"
            )

    # -- calls -----------------------------------------------------------------------------
    def _fire(self, call: _Call, event: str, ts_ns: int) -> bool:
        """Apply ``event``; False (and counted) when the table does not allow it."""
        new = TRANSITIONS.get((call.state, event))
        if new is None:
            self.anomalies[OUT_OF_STATE] = self.anomalies.get(OUT_OF_STATE, 0) + 1
            return False
        if new != call.state or event in (EV_INVITE,):
            call.state = new
            call.deadline = ts_ns + self._state_timeout_ns[new]
            self._arm("c:" + call.call_id_hash, call.deadline)
        return True

    def _count(self, name: str) -> None:
        self.anomalies[name] = self.anomalies.get(name, 0) + 1

    def _party(self, value: str | None) -> tuple[str, str]:
        """(pseudonym, class) of the user in a URI/name-addr; the raw value is dropped."""
        user = extract_user(value) if value else ""
        cls, canonical = self._classifier.classify(user)
        return (self._pseudo.user(canonical) if canonical else ""), cls

    def _lookup(self, token: str, ts_ns: int) -> _Call | None:
        call = self._calls.get(token)
        if call is not None and call.deadline <= ts_ns:
            self._expire("c:" + token, call.deadline)
            call = self._calls.get(token)
        return call

    def _add_media(self, call: _Call, sdp: SdpInfo) -> None:
        for m in sdp.media:
            endpoint = m.endpoint()
            if not endpoint:
                continue
            if endpoint not in call.media:
                call.media.append(endpoint)
            if endpoint not in self._media_owner:
                port = _endpoint_port(endpoint)
                users = self._media_ports.get(port, 0)
                self._media_ports[port] = users + 1
                if not users and self.port_watch is not None:
                    self.port_watch(port, 1)
            self._media_owner[endpoint] = call.call_id_hash
            if m.rtpmap:
                self._media_rtpmap[endpoint] = m.rtpmap

    def _new_call(
        self,
        token: str,
        *,
        msg: SipMessage,
        ts_ns: int,
        src: tuple[str, int],
        dst: tuple[str, int],
        transport: str,
    ) -> None:
        if len(self._calls) >= self._max_calls:
            self._count(TABLE_FULL)
            return
        call = _Call()
        self.calls_started += 1
        call.call_id_hash = token
        call.caller, call.caller_class = self._party(
            msg.header("p-asserted-identity") or msg.header("from")
        )
        # The Request-URI is what gets routed (and billed); To is the fallback.
        callee = msg.uri if extract_user(msg.uri) else msg.header("to")
        call.callee, call.callee_class = self._party(callee)
        call.caller_tag = msg.from_tag
        call.src, call.dst = src, dst
        call.transport = transport if transport in TRANSPORTS else "udp"
        call.invite_ns = call.attempt_ns = call.last_ns = ts_ns
        call.invite_cseq = msg.cseq
        sdp = _sdp_of(msg)
        if sdp is not None:
            call.offer_in_invite = True
            self._add_media(call, sdp)
        call.deadline = ts_ns + self._state_timeout_ns[CALLING]
        self._calls[token] = call
        self._arm("c:" + token, call.deadline)

    def _observe_call(
        self,
        msg: SipMessage,
        method: str,
        *,
        ts_ns: int,
        src: tuple[str, int],
        dst: tuple[str, int],
        transport: str,
    ) -> None:
        token = self._pseudo.token(msg.call_id)
        call = self._lookup(token, ts_ns)
        if msg.status:
            if call is None:
                self._count(ORPHAN_RESPONSE)
            elif method == "INVITE":
                call.last_ns = ts_ns
                self._invite_response(call, msg, ts_ns)
            elif method in ("PRACK", "UPDATE") and 200 <= msg.status < 300:
                # the request carried an offer: SDP in its 2xx is the answer (RFC 3262/3311)
                sdp = _sdp_of(msg)
                if sdp is not None and sdp.media and call.state != ENDED:
                    self._add_media(call, sdp)
                    self._answer(call, msg, sdp.codecs(), modify=call.state == CONFIRMED)
            return  # other responses to CANCEL/BYE/ACK/UPDATE/PRACK change nothing we record
        if call is not None:
            call.last_ns = ts_ns
        if method == "INVITE":
            if msg.to_tag:
                if call is None or call.state == ENDED:
                    self._count(ORPHAN_REQUEST)
                elif call.state == CONFIRMED and msg.cseq != call.reinvite_cseq:
                    call.reinvites += 1
                    call.reinvite_cseq = msg.cseq
                    sdp = _sdp_of(msg)
                    if sdp is not None and sdp.media:
                        call.held = call.held or sdp.on_hold
                        self._add_media(call, sdp)
                return
            if call is None or (call.state == ENDED and msg.cseq > call.invite_cseq):
                if call is not None:
                    del self._calls[token]
                self._new_call(token, msg=msg, ts_ns=ts_ns, src=src, dst=dst, transport=transport)
            elif (
                call.state != ENDED
                and msg.cseq > call.invite_cseq
                # A new initial INVITE transaction on the same call: normally the retry
                # with credentials after 401/407 (one call, attempts counted).
                and self._fire(call, EV_INVITE, ts_ns)
            ):
                call.invite_cseq = msg.cseq
                call.attempts += 1
                call.attempt_ns = ts_ns
                call.pdd_end_ns = None
                sdp = _sdp_of(msg)
                if sdp is not None:
                    call.offer_in_invite = True
                    self._add_media(call, sdp)
            return  # else: a retransmission
        if call is None:
            if method in ("BYE", "UPDATE"):
                self._count(ORPHAN_REQUEST)
            return
        if call.state == ENDED:
            return  # retransmitted CANCEL/BYE/ACK after the end
        if method == "PRACK":
            sdp = _sdp_of(msg)
            if sdp is not None and sdp.media:
                self._add_media(call, sdp)
                tag = self._callee_tag(call, msg)
                # late offer: the reliable 18x made the offer and the PRACK answers it;
                # otherwise SDP in a PRACK is an offer its 2xx answers
                if not call.offer_in_invite and tag not in call.fork_codecs:
                    self._answer(call, msg, sdp.codecs())
            return
        if method == "CANCEL":
            if (
                not msg.to_tag
                and msg.cseq == call.invite_cseq
                and self._fire(call, EV_CANCEL, ts_ns)
            ):
                call.cancelled = True
        elif method == "BYE":
            if call.answer_tag and call.answer_tag not in (msg.from_tag, msg.to_tag):
                self._count(FOREIGN_BYE)
                return
            if call.state != CONFIRMED:
                self._count(OUT_OF_STATE)
                return
            release = "caller" if msg.from_tag == call.caller_tag else "callee"
            self._end(call, ts_ns, release, "bye")
        elif method in {"ACK", "UPDATE"}:
            if method == "ACK" and call.state == CONFIRMED and not call.acked and msg.to_tag:
                # Forked 2xx: the fork the caller ACKs first is the dialog that lives on
                # (RFC 3261 §13.2.2.4), even if another fork's 2xx was seen earlier.
                call.acked = True
                if msg.to_tag in call.to_tags:
                    call.answer_tag = msg.to_tag
                    if msg.to_tag in call.fork_codecs:
                        call.codecs = call.fork_codecs[msg.to_tag]
            sdp = _sdp_of(msg)
            if sdp is not None and sdp.media and call.state == CONFIRMED:
                if method == "ACK" and not call.offer_in_invite:
                    call.codecs = sdp.codecs()  # late offer: the ACK carries the answer
                elif method == "UPDATE":
                    call.held = call.held or sdp.on_hold
                self._add_media(call, sdp)

    @staticmethod
    def _callee_tag(call: _Call, msg: SipMessage) -> str:
        """The callee's tag of the (early) dialog ``msg`` belongs to."""
        return msg.to_tag if msg.from_tag == call.caller_tag else msg.from_tag

    def _answer(
        self, call: _Call, msg: SipMessage, codecs: list[str], modify: bool = False
    ) -> None:
        """An SDP answer in the dialog of ``msg``: its fork's session codecs.

        Before the call is answered the latest answer of any fork is the call's; after,
        only the answered fork's counts. ``modify``: an answer in the confirmed dialog
        (UPDATE, like a re-INVITE) adds codecs rather than replacing them.
        """
        tag = self._callee_tag(call, msg)
        forks = call.fork_codecs
        if tag in forks or len(forks) < MAX_FORK_ANSWERS:
            forks[tag] = codecs
        if modify:
            if tag == call.answer_tag:
                for codec in codecs:
                    if codec not in call.codecs:
                        call.codecs.append(codec)
            return
        if not call.answer_tag or tag == call.answer_tag or call.answer_ns is None:
            call.codecs = codecs

    def _invite_response(self, call: _Call, msg: SipMessage, ts_ns: int) -> None:
        status = msg.status
        if call.state == ENDED:
            return  # retransmitted final response
        if msg.cseq != call.invite_cseq:
            if msg.cseq == call.reinvite_cseq and 200 <= status < 300:
                sdp = _sdp_of(msg)
                if sdp is not None and sdp.media:
                    self._add_media(call, sdp)
                    for codec in sdp.codecs():
                        if codec not in call.codecs:
                            call.codecs.append(codec)
            return  # responses to a re-INVITE or a superseded attempt
        if msg.to_tag and 180 <= status < 300:  # dialog-forming responses only
            call.to_tags.add(msg.to_tag)
        if status < 200:
            if status >= 180 and status < 190:
                if call.first_18x_ns is None:
                    call.first_18x_ns = ts_ns
                if call.pdd_end_ns is None:
                    call.pdd_end_ns = ts_ns
                event = EV_RINGING
            else:
                event = EV_PROVISIONAL
            sdp = _sdp_of(msg) if status >= 180 else None
            if sdp is not None:
                self._add_media(call, sdp)  # early media
                if sdp.media and call.offer_in_invite and call.answer_ns is None:
                    # a reliable 18x (RSeq, RFC 3262) answers the INVITE's offer; an
                    # unreliable one previews the answer the 2xx must repeat (§13.3.1.1)
                    tag = msg.to_tag
                    if msg.header("rseq") is not None or tag not in call.fork_codecs:
                        self._answer(call, msg, sdp.codecs())
            self._fire(call, event, ts_ns)
            return
        if call.pdd_end_ns is None:
            call.pdd_end_ns = ts_ns
        if status < 300:
            if call.answer_ns is not None:
                return  # retransmitted 2xx, or a later fork's 2xx: the first one won
            if self._fire(call, EV_ANSWER, ts_ns):
                call.answer_ns = ts_ns
                call.final_code = status
                call.answer_tag = msg.to_tag
                sdp = _sdp_of(msg)
                if sdp is not None and sdp.media:
                    self._add_media(call, sdp)
                    if call.offer_in_invite or msg.to_tag not in call.fork_codecs:
                        # the answer (or, late offer, the offer the ACK answers)
                        self._answer(call, msg, sdp.codecs())
                elif msg.to_tag in call.fork_codecs:
                    # no SDP: the session is the one an early answer already established
                    call.codecs = call.fork_codecs[msg.to_tag]
            return
        call.final_code = status
        if status in (401, 407) and not call.cancelled:
            if self._fire(call, EV_CHALLENGE, ts_ns):
                call.auth_challenges += 1
            return
        if call.answer_ns is not None:
            return  # a non-2xx from another fork after the answer
        if call.cancelled:
            release, reason = "cancel", "cancelled"
        elif status in (486, 600):
            release, reason = "rejected", "busy"
        elif status in (408, 480, 487):
            release, reason = "rejected", "no_answer"
        elif status < 400:
            release, reason = "rejected", "redirected"
        else:
            release, reason = "rejected", "rejected"
        if TRANSITIONS.get((call.state, EV_FAILURE)) is None:
            self._count(OUT_OF_STATE)
            return
        self._end(call, ts_ns, release, reason)

    def _end(self, call: _Call, ts_ns: int, release: str, reason: str) -> None:
        """Emit the call's record and keep it as a tombstone for ``linger_s``."""
        call.state = ENDED
        call.end_ns = ts_ns
        call.deadline = ts_ns + self._linger_ns
        self._arm("c:" + call.call_id_hash, call.deadline)
        pdd_ms = None
        if call.pdd_end_ns is not None:
            pdd_ms = (call.pdd_end_ns - call.attempt_ns) / NS_PER_MS
        duration_ms = 0.0
        if call.answer_ns is not None:
            duration_ms = max(0, ts_ns - call.answer_ns) / NS_PER_MS
        self._out.append(
            CallRecord(
                call_id_hash=call.call_id_hash,
                caller=call.caller,
                caller_class=call.caller_class,
                callee=call.callee,
                callee_class=call.callee_class,
                src_addr=call.src[0],
                src_port=call.src[1],
                dst_addr=call.dst[0],
                dst_port=call.dst[1],
                transport=call.transport,
                invite_ns=call.invite_ns,
                first_provisional_ns=call.first_18x_ns,
                answer_ns=call.answer_ns,
                end_ns=ts_ns,
                pdd_ms=pdd_ms,
                duration_ms=duration_ms,
                final_code=call.final_code,
                release=release,
                end_reason=reason,
                attempts=call.attempts,
                auth_challenges=call.auth_challenges,
                forked=len(call.to_tags),
                codecs=tuple(call.codecs),
                media=tuple(call.media),
                reinvites=call.reinvites,
                held=call.held,
            )
        )

    # -- registrations ---------------------------------------------------------------------
    def _observe_register(
        self,
        msg: SipMessage,
        ts_ns: int,
        src: tuple[str, int],
        dst: tuple[str, int],
        transport: str,
    ) -> None:
        token = self._pseudo.token(msg.call_id)
        reg = self._regs.get(token)
        if reg is not None and reg.deadline <= ts_ns:
            self._expire("r:" + token, reg.deadline)
            reg = self._regs.get(token)
        if msg.status == 0:
            if reg is not None and msg.cseq <= reg.cseq:
                return  # retransmission (or stale)
            if reg is not None and not reg.done and reg.awaiting_retry:
                # The REGISTER with credentials continues the challenged attempt.
                reg.cseq = msg.cseq
                reg.requests += 1
                reg.awaiting_retry = False
                expires = _expires_of(msg)
                if expires >= 0:
                    reg.expires_req = expires
                reg.deadline = ts_ns + self._register_ns
                self._arm("r:" + token, reg.deadline)
                return
            if reg is not None and not reg.done:
                self._finish_registration(
                    token, reg, ts_ns, code=0, expires=reg.expires_req, reason="timeout"
                )
            if len(self._regs) >= self._max_regs and token not in self._regs:
                self._count(TABLE_FULL)
                return
            reg = _Registration()
            reg.call_id_hash = token
            reg.aor, reg.aor_class = self._party(msg.header("to"))
            reg.src, reg.dst = src, dst
            reg.transport = transport if transport in TRANSPORTS else "udp"
            reg.first_ns = ts_ns
            reg.cseq = msg.cseq
            reg.expires_req = _expires_of(msg)
            reg.deadline = ts_ns + self._register_ns
            self._regs[token] = reg
            self._arm("r:" + token, reg.deadline)
            return
        if reg is None or reg.done or msg.cseq != reg.cseq:
            if reg is None or msg.cseq > reg.cseq:
                self._count(ORPHAN_RESPONSE)
            return
        status = msg.status
        if status < 200:
            return
        if status in (401, 407):
            reg.challenges += 1
            reg.awaiting_retry = True
            reg.last_code = status
            reg.deadline = ts_ns + self._challenge_ns
            self._arm("r:" + token, reg.deadline)
            return
        expires = reg.expires_req
        if status < 300:
            granted = _expires_of(msg)
            if granted >= 0:
                expires = granted
        self._finish_registration(token, reg, ts_ns, code=status, expires=expires, reason="final")

    def _finish_registration(
        self, token: str, reg: _Registration, ts_ns: int, *, code: int, expires: int, reason: str
    ) -> None:
        if reason == "timeout" and reg.awaiting_retry:
            reason = "challenge_timeout"
            code = reg.last_code
        self._emit_registration(reg, ts_ns, code, expires, reason)
        reg.done = True
        reg.deadline = ts_ns + self._linger_ns
        self._arm("r:" + token, reg.deadline)

    def _emit_registration(
        self, reg: _Registration, ts_ns: int, code: int, expires: int, reason: str
    ) -> None:
        self._out.append(
            RegistrationRecord(
                call_id_hash=reg.call_id_hash,
                aor=reg.aor,
                aor_class=reg.aor_class,
                src_addr=reg.src[0],
                src_port=reg.src[1],
                dst_addr=reg.dst[0],
                dst_port=reg.dst[1],
                transport=reg.transport,
                ts_ns=reg.first_ns,
                end_ns=ts_ns,
                result_code=code,
                expires_s=expires,
                challenges=reg.challenges,
                requests=reg.requests,
                end_reason=reason,
            )
        )
