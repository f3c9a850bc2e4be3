"""CallTracker scenarios: answered, busy, no answer, cancelled, challenged, forked, hold,
BYE from callee, timeouts, REGISTER; plus the canary test that no record leaks identities."""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from trafficguard.voip.dialogs import CallTimeouts, CallTracker
from trafficguard.voip.numbers import NumberClassifier
from trafficguard.voip.records import CallRecord, RegistrationRecord
from trafficguard.voip.sip import SipMessage, parse_sip

S = 1_000_000_000
UA = ("192.168.1.2", 5060)
PROXY = ("203.0.113.10", 5060)


class HmacPseudonymizer:
    """Test double of the keyed pseudonymizer in trafficguard/privacy (HMAC-SHA256)."""

    def __init__(self, key: bytes = b"test-key") -> None:
        self.key = key

    def user(self, value: str) -> str:
        return "u_" + hmac.new(self.key, b"u\x00" + value.encode(), hashlib.sha256).hexdigest()[:20]

    def token(self, value: str) -> str:
        return "t_" + hmac.new(self.key, b"t\x00" + value.encode(), hashlib.sha256).hexdigest()[:20]


PSEUDO = HmacPseudonymizer()

OFFER = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.168.1.2\r\ns=-\r\n"
    b"c=IN IP4 192.168.1.2\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
ANSWER = (
    b"v=0\r\no=bob 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
    b"m=audio 3456 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)
HOLD = OFFER.replace(b"a=sendrecv", b"a=sendonly")
RESUME_NEW_PORT = OFFER.replace(b"49170", b"49180")


def _headers(
    *,
    call_id: str,
    cseq: int,
    method: str,
    from_tag: str,
    to_tag: str,
    frm: str,
    to: str,
    branch: str,
    body: bytes,
    extra: str,
) -> bytes:
    lines = [
        f"Via: SIP/2.0/UDP 192.168.1.2:5060;branch={branch};rport",
        f"From: {frm};tag={from_tag}",
        f"To: {to}" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if extra:
        lines.append(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


ALICE = '"Alice" <sip:+49 (30) 111-2222@voip.example.net>'
BOB = "<sip:+4940333444@voip.example.net;user=phone>"


def req(
    method: str,
    cseq: int,
    *,
    call_id: str = "a84b4c76e66710@pc33.example.net",
    from_tag: str = "1928301774",
    to_tag: str = "",
    frm: str = ALICE,
    to: str = BOB,
    uri: str = "sip:+4940333444@voip.example.net;user=phone",
    branch: str = "",
    body: bytes = b"",
    extra: str = "",
) -> SipMessage:
    start = f"{method} {uri} SIP/2.0\r\n".encode()
    branch = branch or f"z9hG4bK{method}{cseq}"
    msg = parse_sip(
        start
        + _headers(
            call_id=call_id,
            cseq=cseq,
            method=method,
            from_tag=from_tag,
            to_tag=to_tag,
            frm=frm,
            to=to,
            branch=branch,
            body=body,
            extra=extra,
        )
    )
    assert msg is not None
    return msg


def resp(
    status: int,
    method: str,
    cseq: int,
    *,
    call_id: str = "a84b4c76e66710@pc33.example.net",
    from_tag: str = "1928301774",
    to_tag: str = "",
    frm: str = ALICE,
    to: str = BOB,
    body: bytes = b"",
    extra: str = "",
) -> SipMessage:
    start = f"SIP/2.0 {status} Whatever\r\n".encode()
    msg = parse_sip(
        start
        + _headers(
            call_id=call_id,
            cseq=cseq,
            method=method,
            from_tag=from_tag,
            to_tag=to_tag,
            frm=frm,
            to=to,
            branch=f"z9hG4bK{method}{cseq}",
            body=body,
            extra=extra,
        )
    )
    assert msg is not None
    return msg


def tracker(**kw: object) -> CallTracker:
    return CallTracker(PSEUDO, NumberClassifier(), CallTimeouts(**kw))  # type: ignore[arg-type]


def feed(t: CallTracker, script: list[tuple[float, SipMessage]]) -> None:
    for ts, msg in script:
        up = msg.is_request == (msg.from_tag == "1928301774")  # caller side sends
        src, dst = (UA, PROXY) if up else (PROXY, UA)
        t.observe(msg, int(ts * S), src, dst, "udp")


def one_call(t: CallTracker) -> CallRecord:
    recs = t.take_records()
    assert len(recs) == 1, recs
    rec = recs[0]
    assert isinstance(rec, CallRecord)
    return rec


def test_answered_call_released_by_caller() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, req("INVITE", 1, body=OFFER)),
            (0.0, req("INVITE", 1, body=OFFER)),  # retransmission
            (0.05, resp(100, "INVITE", 1)),
            (1.25, resp(180, "INVITE", 1, to_tag="b1")),
            (5.0, resp(200, "INVITE", 1, to_tag="b1", body=ANSWER)),
            (5.0, resp(200, "INVITE", 1, to_tag="b1", body=ANSWER)),  # retransmission
            (5.01, req("ACK", 1, to_tag="b1")),
            (65.0, req("BYE", 2, to_tag="b1")),
            (65.02, resp(200, "BYE", 2, to_tag="b1")),
        ],
    )
    rec = one_call(t)
    assert rec.release == "caller" and rec.end_reason == "bye"
    assert rec.final_code == 200
    assert rec.invite_ns == 0 and rec.first_provisional_ns == int(1.25 * S)
    assert rec.answer_ns == 5 * S and rec.end_ns == 65 * S
    assert rec.pdd_ms == 1250.0
    assert rec.duration_ms == 60000.0
    assert rec.codecs == ("PCMU", "telephone-event")
    assert rec.media == ("192.168.1.2:49170", "198.51.100.7:3456")
    assert rec.forked == 1 and rec.attempts == 1 and rec.auth_challenges == 0
    assert rec.caller == PSEUDO.user("+49301112222") and rec.caller_class == "international"
    assert rec.callee == PSEUDO.user("+4940333444") and rec.callee_class == "international"
    assert rec.call_id_hash == PSEUDO.token("a84b4c76e66710@pc33.example.net")
    assert (rec.src_addr, rec.src_port, rec.dst_addr, rec.dst_port) == (*UA, *PROXY)
    assert rec.transport == "udp"
    assert t.method_counts == {"INVITE": 2, "ACK": 1, "BYE": 1}
    assert t.response_counts == {("INVITE", "1xx"): 2, ("INVITE", "2xx"): 2, ("BYE", "2xx"): 1}
    assert t.code_counts == {100: 1, 180: 1, 200: 3}
    assert t.anomalies == {}
    assert t.open_calls == 0


def test_bye_from_callee() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, req("INVITE", 1, body=OFFER)),
            (2.0, resp(200, "INVITE", 1, to_tag="b1", body=ANSWER)),
            (2.0, req("ACK", 1, to_tag="b1")),
            # In-dialog request from the callee: From/To swapped, callee's tag in From.
            (32.5, req("BYE", 1, from_tag="b1", to_tag="1928301774", frm=BOB, to=ALICE)),
        ],
    )
    rec = one_call(t)
    assert rec.release == "callee" and rec.duration_ms == 30500.0
    assert rec.pdd_ms == 2000.0  # no 18x: INVITE -> final response
    assert rec.first_provisional_ns is None


def test_busy() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, req("INVITE", 1, body=OFFER)),
            (0.1, resp(100, "INVITE", 1)),
            (0.9, resp(486, "INVITE", 1, to_tag="b1")),
            (0.91, req("ACK", 1, to_tag="b1")),
            (0.95, resp(486, "INVITE", 1, to_tag="b1")),  # retransmitted final: absorbed
        ],
    )
    rec = one_call(t)
    assert (rec.release, rec.end_reason, rec.final_code) == ("rejected", "busy", 486)
    assert rec.pdd_ms == 900.0 and rec.duration_ms == 0.0 and rec.answer_ns is None
    assert t.anomalies == {}


def test_no_answer_408_and_480() -> None:
    for code in (408, 480):
        t = tracker()
        feed(
            t,
            [
                (0.0, req("INVITE", 1)),
                (0.5, resp(180, "INVITE", 1, to_tag="b")),
                (30.0, resp(code, "INVITE", 1, to_tag="b")),
            ],
        )
        rec = one_call(t)
        assert (rec.release, rec.end_reason, rec.final_code) == ("rejected", "no_answer", code)


def test_no_response_times_out_after_timer_b() -> None:
    t = tracker(invite_s=32)
    feed(t, [(10.0, req("INVITE", 1)), (10.5, req("INVITE", 1)), (11.5, req("INVITE", 1))])
    t.tick(41 * S)
    assert t.take_records() == []
    t.tick(42 * S)
    rec = one_call(t)
    assert (rec.release, rec.end_reason, rec.final_code) == ("timeout", "no_response", 0)
    assert rec.end_ns == 42 * S and rec.pdd_ms is None


def test_ringing_timeout_uses_timer_c() -> None:
    t = tracker(ringing_s=180)
    feed(t, [(0.0, req("INVITE", 1)), (1.0, resp(180, "INVITE", 1, to_tag="x"))])
    t.tick(100 * S)
    assert t.take_records() == []
    t.tick(200 * S)
    rec = one_call(t)
    assert (rec.release, rec.end_reason, rec.end_ns) == ("timeout", "ringing_timeout", 181 * S)


def test_cancelled() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, req("INVITE", 1, body=OFFER)),
            (0.3, resp(180, "INVITE", 1, to_tag="b1")),
            (12.0, req("CANCEL", 1)),
            (12.1, resp(200, "CANCEL", 1, to_tag="b1")),
            (12.1, resp(487, "INVITE", 1, to_tag="b1")),
            (12.2, req("ACK", 1, to_tag="b1")),
        ],
    )
    rec = one_call(t)
    assert (rec.release, rec.end_reason, rec.final_code) == ("cancel", "cancelled", 487)
    assert rec.end_ns == int(12.1 * S) and rec.pdd_ms == 300.0


def test_challenged_then_answered_is_one_call() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, req("INVITE", 1, body=OFFER)),
            (
                0.15,
                resp(407, "INVITE", 1, to_tag="p1", extra='Proxy-Authenticate: Digest realm="x"'),
            ),
            (0.16, req("ACK", 1, to_tag="p1")),
            (
                0.5,
                req("INVITE", 2, body=OFFER, extra='Proxy-Authorization: Digest username="alice"'),
            ),
            (0.6, resp(100, "INVITE", 2)),
            (1.5, resp(180, "INVITE", 2, to_tag="b1")),
            (4.0, resp(200, "INVITE", 2, to_tag="b1", body=ANSWER)),
            (4.0, req("ACK", 2, to_tag="b1")),
            (14.0, req("BYE", 3, to_tag="b1")),
        ],
    )
    rec = one_call(t)
    assert rec.attempts == 2 and rec.auth_challenges == 1
    assert rec.invite_ns == 0 and rec.pdd_ms == 1000.0  # measured on the credentialed INVITE
    assert rec.final_code == 200 and rec.release == "caller" and rec.duration_ms == 10000.0
    assert rec.forked == 1  # the proxy's 407 tag is not a fork
    assert t.method_counts["INVITE"] == 2


def test_challenge_not_answered_times_out_as_rejected() -> None:
    t = tracker(challenge_s=64)
    feed(t, [(0.0, req("INVITE", 1)), (0.1, resp(401, "INVITE", 1, to_tag="p"))])
    t.tick(100 * S)
    rec = one_call(t)
    assert (rec.release, rec.end_reason, rec.final_code, rec.auth_challenges) == (
        "rejected",
        "rejected",
        401,
        1,
    )


def test_forked_first_2xx_wins() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, req("INVITE", 1, body=OFFER)),
            (0.4, resp(180, "INVITE", 1, to_tag="deskphone")),
            (0.5, resp(180, "INVITE", 1, to_tag="mobile")),
            (3.0, resp(200, "INVITE", 1, to_tag="mobile", body=ANSWER)),
            (3.1, resp(200, "INVITE", 1, to_tag="deskphone", body=ANSWER)),  # loses
            (3.2, req("ACK", 1, to_tag="mobile")),
            (3.2, req("ACK", 1, to_tag="deskphone")),
            (3.3, req("BYE", 2, to_tag="deskphone")),  # UAC drops the losing fork
            (20.0, req("BYE", 3, to_tag="mobile")),
        ],
    )
    rec = one_call(t)
    assert rec.forked == 2 and rec.answer_ns == 3 * S and rec.end_ns == 20 * S
    assert rec.pdd_ms == 400.0 and rec.duration_ms == 17000.0
    assert t.anomalies == {"foreign_bye": 1}


def test_held_resumed_and_media_change() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, req("INVITE", 1, body=OFFER)),
            (1.0, resp(200, "INVITE", 1, to_tag="b1", body=ANSWER)),
            (1.0, req("ACK", 1, to_tag="b1")),
            (10.0, req("INVITE", 2, to_tag="b1", body=HOLD)),
            (10.1, resp(200, "INVITE", 2, to_tag="b1", body=ANSWER.replace(b"3456", b"3456"))),
            (10.1, req("ACK", 2, to_tag="b1")),
            (20.0, req("INVITE", 3, to_tag="b1", body=RESUME_NEW_PORT)),
            (20.0, req("INVITE", 3, to_tag="b1", body=RESUME_NEW_PORT)),  # retransmission
            (20.1, resp(200, "INVITE", 3, to_tag="b1", body=ANSWER.replace(b"3456", b"3460"))),
            (20.1, req("ACK", 3, to_tag="b1")),
            (30.0, req("BYE", 4, to_tag="b1")),
        ],
    )
    assert t.media_owner("192.168.1.2:49180") == PSEUDO.token("a84b4c76e66710@pc33.example.net")
    rec = one_call(t)
    assert rec.reinvites == 2 and rec.held
    assert rec.media == (
        "192.168.1.2:49170",
        "198.51.100.7:3456",
        "192.168.1.2:49180",
        "198.51.100.7:3460",
    )
    assert rec.final_code == 200 and rec.duration_ms == 29000.0


def test_media_ports_follow_the_known_endpoints() -> None:
    """media_port_known (the stage's cheap pre-test) holds exactly the ports of the known
    SDP endpoints: added with each offer/answer, gone when the ended call is forgotten."""
    t = tracker()
    assert not any(t.media_port_known(p) for p in (49170, 3456))
    feed(
        t,
        [
            (0.0, req("INVITE", 1, body=OFFER)),
            (1.0, resp(200, "INVITE", 1, to_tag="b1", body=ANSWER)),
            (1.0, req("ACK", 1, to_tag="b1")),
            (20.0, req("INVITE", 3, to_tag="b1", body=RESUME_NEW_PORT)),
            (20.1, resp(200, "INVITE", 3, to_tag="b1", body=ANSWER.replace(b"3456", b"3460"))),
            (30.0, req("BYE", 4, to_tag="b1")),
        ],
    )
    assert all(t.media_port_known(p) for p in (49170, 3456, 49180, 3460))
    assert not t.media_port_known(49171)
    t.tick(100_000 * S)
    assert t.take_records()
    assert not t.media_known
    assert not any(t.media_port_known(p) for p in (49170, 3456, 49180, 3460))


def test_answered_call_without_bye_hits_max_duration() -> None:
    t = tracker(max_call_s=3600)
    feed(t, [(0.0, req("INVITE", 1)), (2.0, resp(200, "INVITE", 1, to_tag="b"))])
    t.tick(3000 * S)
    assert t.take_records() == []
    t.tick(4000 * S)
    rec = one_call(t)
    assert (rec.release, rec.end_reason, rec.duration_ms) == ("timeout", "max_duration", 3600e3)


def test_tombstone_absorbs_late_messages_then_expires() -> None:
    t = tracker(linger_s=32)
    feed(
        t,
        [
            (0.0, req("INVITE", 1)),
            (1.0, resp(200, "INVITE", 1, to_tag="b")),
            (9.0, req("BYE", 2, to_tag="b")),
            (9.5, req("BYE", 2, to_tag="b")),  # retransmitted BYE: no second record
        ],
    )
    assert len(t.take_records()) == 1
    t.tick(100 * S)
    feed(t, [(101.0, req("BYE", 2, to_tag="b"))])  # after the tombstone: an orphan
    assert t.anomalies == {"orphan_request": 1}
    assert t.take_records() == []


def test_flush_all_ends_open_calls() -> None:
    t = tracker()
    feed(t, [(0.0, req("INVITE", 1)), (1.0, resp(180, "INVITE", 1, to_tag="b"))])
    t.flush_all()
    rec = one_call(t)
    assert (rec.release, rec.end_reason, rec.end_ns) == ("flush", "flush", 1 * S)


def test_other_methods_are_only_counted() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, req("OPTIONS", 1, call_id="o1")),
            (0.1, resp(200, "OPTIONS", 1, call_id="o1")),
            (0.2, req("MESSAGE", 1, call_id="m1")),
            (0.3, resp(403, "MESSAGE", 1, call_id="m1")),
            (0.4, req("SUBSCRIBE", 1, call_id="s1")),
            (0.5, req("NOTIFY", 1, call_id="s1")),
            (0.6, req("FOOBAR", 1, call_id="f1")),
        ],
    )
    assert t.method_counts == {"OPTIONS": 1, "MESSAGE": 1, "SUBSCRIBE": 1, "NOTIFY": 1, "OTHER": 1}
    assert t.response_counts == {("OPTIONS", "2xx"): 1, ("MESSAGE", "4xx"): 1}
    assert t.take_records() == []


def test_table_full_is_counted() -> None:
    t = CallTracker(PSEUDO, NumberClassifier(), max_calls=2)
    for i in range(3):
        t.observe(req("INVITE", 1, call_id=f"c{i}"), i, UA, PROXY, "udp")
    assert t.open_calls == 2 and t.anomalies == {"table_full": 1}


# -- registrations --------------------------------------------------------------------------
REG_URI = "sip:voip.example.net"
AOR = "<sip:+4930555666@voip.example.net>"


def reg(cseq: int, extra: str = "Expires: 3600") -> SipMessage:
    return req(
        "REGISTER",
        cseq,
        call_id="reg-1@192.168.1.2",
        frm=AOR,
        to=AOR,
        uri=REG_URI,
        extra="Contact: <sip:+4930555666@192.168.1.2:5060>\r\n" + extra,
    )


def reg_resp(status: int, cseq: int, extra: str = "") -> SipMessage:
    return resp(
        status,
        "REGISTER",
        cseq,
        call_id="reg-1@192.168.1.2",
        frm=AOR,
        to=AOR,
        to_tag="r" + str(cseq),
        extra=extra,
    )


def test_register_challenged_then_ok() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, reg(1)),
            (0.1, reg_resp(401, 1, 'WWW-Authenticate: Digest realm="voip", nonce="abc"')),
            (0.2, reg(2, 'Expires: 3600\r\nAuthorization: Digest username="x"')),
            (0.25, reg_resp(100, 2)),
            (0.3, reg_resp(200, 2, "Contact: <sip:+4930555666@192.168.1.2:5060>;expires=1800")),
            (0.3, reg_resp(200, 2)),  # retransmission: no second record
        ],
    )
    recs = t.take_records()
    assert len(recs) == 1
    r = recs[0]
    assert isinstance(r, RegistrationRecord)
    assert (r.result_code, r.challenges, r.requests, r.expires_s) == (200, 1, 2, 1800)
    assert (r.ts_ns, r.end_ns, r.end_reason) == (0, int(0.3 * S), "final")
    assert r.aor == PSEUDO.user("+4930555666") and r.aor_class == "international"
    assert t.method_counts == {"REGISTER": 2}
    assert t.response_counts == {
        ("REGISTER", "4xx"): 1,
        ("REGISTER", "1xx"): 1,
        ("REGISTER", "2xx"): 2,
    }


def test_register_rejected_and_deregistration() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, reg(1)),
            (0.1, reg_resp(403, 1)),
            (50.0, reg(2, "Expires: 0")),
            (50.1, reg_resp(200, 2)),
        ],
    )
    recs = t.take_records()
    assert [(r.result_code, r.expires_s) for r in recs] == [(403, 3600), (200, 0)]  # type: ignore[union-attr]


def test_register_challenge_never_answered() -> None:
    t = tracker(challenge_s=64)
    feed(t, [(0.0, reg(1)), (0.1, reg_resp(407, 1))])
    t.tick(70 * S)
    recs = t.take_records()
    assert len(recs) == 1
    r = recs[0]
    assert isinstance(r, RegistrationRecord)
    assert (r.result_code, r.end_reason, r.challenges) == (407, "challenge_timeout", 1)


def test_register_without_response_times_out() -> None:
    t = tracker(register_s=32)
    feed(t, [(0.0, reg(1))])
    t.tick(40 * S)
    (r,) = t.take_records()
    assert isinstance(r, RegistrationRecord)
    assert (r.result_code, r.end_reason, r.end_ns) == (0, "timeout", 32 * S)


# -- privacy --------------------------------------------------------------------------------
CANARY_NUMBERS = ["+4915112345678", "004917298765432", "0301234567", "19005551234"]
CANARY_TEXT = [
    "Zebediah Quuxworth",  # display name
    "canary.user.kq7",  # SIP user name
    "canary-callid-7f3a9b2e1d",  # Call-ID
    "host-canary.example.org",
]


def test_records_carry_no_identities() -> None:
    t = tracker()
    caller = f'"Zebediah Quuxworth" <sip:{CANARY_NUMBERS[0]}@host-canary.example.org>'
    callee = f"<sip:{CANARY_NUMBERS[1]}@host-canary.example.org>"
    cid = "canary-callid-7f3a9b2e1d@host-canary.example.org"
    feed(
        t,
        [
            (
                0.0,
                req(
                    "INVITE",
                    1,
                    call_id=cid,
                    frm=caller,
                    to=callee,
                    uri=f"sip:{CANARY_NUMBERS[1]}@host-canary.example.org",
                    body=OFFER,
                    extra=f"P-Asserted-Identity: <tel:{CANARY_NUMBERS[0]}>",
                ),
            ),
            (1.0, resp(180, "INVITE", 1, call_id=cid, frm=caller, to=callee, to_tag="x")),
            (
                2.0,
                resp(200, "INVITE", 1, call_id=cid, frm=caller, to=callee, to_tag="x", body=ANSWER),
            ),
            (9.0, req("BYE", 2, call_id=cid, frm=caller, to=callee, to_tag="x")),
            (
                10.0,
                req(
                    "INVITE",
                    1,
                    call_id="canary-callid-2",
                    frm=caller,
                    to=f"<tel:{CANARY_NUMBERS[2]}>",
                    uri=f"tel:{CANARY_NUMBERS[2]}",
                ),
            ),
            (10.5, resp(404, "INVITE", 1, call_id="canary-callid-2", to_tag="y")),
            (
                11.0,
                req(
                    "INVITE",
                    1,
                    call_id="canary-callid-3",
                    frm='"Zebediah Quuxworth" <sip:canary.user.kq7@host-canary.example.org>',
                    uri=f"sip:{CANARY_NUMBERS[3]}@host-canary.example.org",
                ),
            ),
            (11.5, resp(503, "INVITE", 1, call_id="canary-callid-3", to_tag="z")),
            (
                12.0,
                req(
                    "REGISTER",
                    5,
                    call_id=cid,
                    frm=caller,
                    to=caller,
                    uri="sip:host-canary.example.org",
                    extra="Expires: 60",
                ),
            ),
            (12.1, resp(200, "REGISTER", 5, call_id=cid, frm=caller, to=caller, to_tag="r")),
        ],
    )
    t.flush_all()
    recs = t.take_records()
    assert len(recs) == 4
    classes = {(r.caller_class, r.callee_class) for r in recs if isinstance(r, CallRecord)}
    assert classes == {
        ("international", "international"),
        ("international", "domestic"),
        ("non_numeric", "premium"),
    }
    blob = b"\n".join(msgspec.json.encode(r) for r in recs).decode()
    needles: list[str] = []
    for value in CANARY_NUMBERS + CANARY_TEXT:
        digits = value.lstrip("+")
        for v in (value, digits, digits[-9:]):
            needles += [v, v.lower(), v.encode().hex()]
    needles += ["Zebediah", "Quuxworth", "canary"]
    for needle in needles:
        assert needle not in blob, needle


# -- codecs of early answers (RFC 3261 §13.2.1, RFC 3262 PRACK, RFC 3311 UPDATE) ----------
AMR_ANSWER = ANSWER.replace(b"RTP/AVP 0 101", b"RTP/AVP 96 101").replace(
    b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:96 AMR-WB/16000"
)
G722_ANSWER = ANSWER.replace(b"RTP/AVP 0 101", b"RTP/AVP 9 101").replace(
    b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:9 G722/8000"
)
RSEQ = "Require: 100rel\r\nRSeq: 1"


def _early_call(script: list[tuple[float, SipMessage]]) -> CallRecord:
    t = tracker()
    feed(t, [(0.0, req("INVITE", 1, body=OFFER)), *script])
    feed(t, [(60.0, req("BYE", 9, to_tag="b1"))])
    rec = one_call(t)
    assert rec.final_code == 200 and rec.end_reason == "bye"
    return rec


def test_reliable_183_answer_and_2xx_without_sdp() -> None:
    rec = _early_call(
        [
            (0.5, resp(183, "INVITE", 1, to_tag="b1", body=AMR_ANSWER, extra=RSEQ)),
            (0.6, req("PRACK", 2, to_tag="b1", extra="RAck: 1 1 INVITE")),
            (0.7, resp(200, "PRACK", 2, to_tag="b1")),
            (5.0, resp(200, "INVITE", 1, to_tag="b1")),  # no SDP: the 183's answer holds
            (5.1, req("ACK", 1, to_tag="b1")),
        ]
    )
    assert rec.codecs == ("AMR-WB", "telephone-event")


def test_early_update_answer_replaces_the_183s() -> None:
    rec = _early_call(
        [
            (0.5, resp(183, "INVITE", 1, to_tag="b1", body=AMR_ANSWER, extra=RSEQ)),
            (0.6, req("PRACK", 2, to_tag="b1")),
            (0.7, resp(200, "PRACK", 2, to_tag="b1")),
            (1.0, req("UPDATE", 3, to_tag="b1", body=OFFER)),  # a new offer ...
            (1.1, resp(200, "UPDATE", 3, to_tag="b1", body=G722_ANSWER)),  # ... answered
            (5.0, resp(200, "INVITE", 1, to_tag="b1")),
            (5.1, req("ACK", 1, to_tag="b1")),
        ]
    )
    assert rec.codecs == ("G722", "telephone-event")


def test_2xx_with_sdp_is_the_answer() -> None:
    rec = _early_call(
        [
            (0.5, resp(183, "INVITE", 1, to_tag="b1", body=AMR_ANSWER)),  # unreliable preview
            (5.0, resp(200, "INVITE", 1, to_tag="b1", body=ANSWER)),
            (5.1, req("ACK", 1, to_tag="b1")),
        ]
    )
    assert rec.codecs == ("PCMU", "telephone-event")


def test_unreliable_183_preview_kept_when_2xx_has_no_sdp() -> None:
    rec = _early_call(
        [
            (0.5, resp(183, "INVITE", 1, to_tag="b1", body=AMR_ANSWER)),
            (5.0, resp(200, "INVITE", 1, to_tag="b1")),
            (5.1, req("ACK", 1, to_tag="b1")),
        ]
    )
    assert rec.codecs == ("AMR-WB", "telephone-event")


def test_late_offer_answered_in_prack() -> None:
    t = tracker()
    feed(
        t,
        [
            (0.0, req("INVITE", 1)),  # no offer
            (0.5, resp(183, "INVITE", 1, to_tag="b1", body=AMR_ANSWER, extra=RSEQ)),  # offer
            (0.6, req("PRACK", 2, to_tag="b1", body=G722_ANSWER)),  # answer
            (0.7, resp(200, "PRACK", 2, to_tag="b1")),
            (5.0, resp(200, "INVITE", 1, to_tag="b1")),
            (5.1, req("ACK", 1, to_tag="b1")),
            (60.0, req("BYE", 9, to_tag="b1")),
        ],
    )
    assert one_call(t).codecs == ("G722", "telephone-event")


def test_forked_early_answers_follow_the_acked_fork() -> None:
    rec = _early_call(
        [
            (0.4, resp(183, "INVITE", 1, to_tag="b1", body=AMR_ANSWER, extra=RSEQ)),
            (0.5, resp(183, "INVITE", 1, to_tag="b2", body=G722_ANSWER, extra=RSEQ)),
            (5.0, resp(200, "INVITE", 1, to_tag="b2")),  # first 2xx: fork b2 ...
            (5.1, resp(200, "INVITE", 1, to_tag="b1")),
            (5.2, req("ACK", 1, to_tag="b1")),  # ... but the caller ACKs b1 first
            (5.2, req("ACK", 1, to_tag="b2")),
        ]
    )
    assert rec.forked == 2
    assert rec.codecs == ("AMR-WB", "telephone-event")


def test_update_in_confirmed_dialog_adds_codecs() -> None:
    rec = _early_call(
        [
            (5.0, resp(200, "INVITE", 1, to_tag="b1", body=ANSWER)),
            (5.1, req("ACK", 1, to_tag="b1")),
            (9.0, req("UPDATE", 2, to_tag="b1", body=OFFER)),
            (9.1, resp(200, "UPDATE", 2, to_tag="b1", body=G722_ANSWER)),
        ]
    )
    assert rec.codecs == ("PCMU", "telephone-event", "G722")
