"""Logging: JSON lines that parse, level filtering, and the allow-list redaction."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from trafficguard.sinks.logging import REDACTED, SAFE_KEYS, configure_logging, get_logger

CANARY = "CANARY-7f3a9c-198.51.100.23-sip:bob@example.org"


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_output_parses_with_iso_utc_timestamp_and_level() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    get_logger("trafficguard.flow").info("flow.evicted", flows=3, reason="capacity")
    (entry,) = lines(out)
    assert entry["event"] == "flow.evicted"
    assert entry["level"] == "info"
    assert entry["flows"] == 3 and entry["reason"] == "capacity"
    assert entry["logger"] == "trafficguard.flow"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", entry["timestamp"])


def test_canary_under_non_allowed_keys_never_appears() -> None:
    out = io.StringIO()
    configure_logging("debug", stream=out)
    log = get_logger("t")
    structlog.contextvars.bind_contextvars(subscriber=CANARY)
    log.info("sip.parsed", count=1, caller=CANARY, payload=CANARY.encode(), uri=CANARY)
    log.warning("dns.seen", qname=CANARY, packets=2)
    log.bind(src_addr=CANARY).error("flow.evicted", flows=1)
    log.info("sink.failed", bytes=CANARY.encode())  # bytes are redacted even under a safe key
    text = out.getvalue()
    assert CANARY not in text
    assert "CANARY" not in text
    entries = lines(out)
    assert len(entries) == 4
    assert entries[0]["caller"] == REDACTED
    assert entries[0]["payload"] == REDACTED
    assert entries[0]["subscriber"] == REDACTED
    assert entries[0]["count"] == 1
    assert entries[1]["qname"] == REDACTED and entries[1]["packets"] == 2
    assert entries[2]["src_addr"] == REDACTED
    assert entries[3]["bytes"] == REDACTED


def test_exception_message_is_dropped_but_type_and_frames_kept() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    log = get_logger("t")
    try:
        int(CANARY)
    except ValueError:
        log.exception("decode.failed", reason="bad_int")
    (entry,) = lines(out)
    assert CANARY not in out.getvalue()
    assert "ValueError: [message redacted]" in entry["exception"]
    assert "test_logging.py" in entry["exception"]
    assert entry["level"] == "error"


def test_event_not_in_noun_past_verb_form_is_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    get_logger("t").info(f"call from {CANARY} failed")
    get_logger("t").info("grant.rejected", reason="bad_signature")
    first, second = lines(out)
    assert first["event"] == REDACTED
    assert second["event"] == "grant.rejected"
    assert CANARY not in out.getvalue()


def test_level_filter_makes_lower_levels_no_ops_and_reconfigure_applies() -> None:
    out = io.StringIO()
    log = get_logger("t")  # created before configuration, like module-level loggers
    configure_logging("warning", stream=out)
    log.debug("flow.seen", count=1)
    log.info("flow.seen", count=2)
    log.warning("capture.dropped", count=3)
    assert [e["count"] for e in lines(out)] == [3]
    configure_logging("debug", stream=out)
    log.debug("flow.seen", count=4)
    assert [e["count"] for e in lines(out)] == [3, 4]


def test_console_renderer_on_a_tty_and_when_forced() -> None:
    tty = TtyStream()
    configure_logging("info", stream=tty)
    get_logger("t").info("daemon.started", port=9108, secret=CANARY)
    text = tty.getvalue()
    assert "daemon.started" in text and "9108" in text
    assert CANARY not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
    forced = io.StringIO()
    configure_logging("info", fmt="console", stream=forced)
    get_logger("t").info("daemon.started", port=1)
    assert "daemon.started" in forced.getvalue()
    assert not forced.getvalue().lstrip().startswith("{")
    as_json = TtyStream()
    configure_logging("info", fmt="json", stream=as_json)
    get_logger("t").info("daemon.started", port=1)
    assert json.loads(as_json.getvalue())["port"] == 1


def test_documented_safe_keys_include_the_operational_ones() -> None:
    for key in ("event", "level", "timestamp", "count", "path", "reason", "grant_id", "port"):
        assert key in SAFE_KEYS
    for key in ("src_addr", "dst_addr", "caller", "callee", "uri", "payload", "qname", "sni"):
        assert key not in SAFE_KEYS


def test_extra_safe_keys_and_bad_arguments() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out, extra_safe_keys=("queue_depth",))
    get_logger("t").info("pipeline.stalled", queue_depth=17)
    assert lines(out)[0]["queue_depth"] == 17
    with pytest.raises(ValueError, match="level"):
        configure_logging("loud")
    with pytest.raises(ValueError, match="format"):
        configure_logging("info", fmt="xml")
