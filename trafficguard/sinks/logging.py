"""Structured logging: structlog configured once, with an allow-list redaction processor.

Logs are read by more people than the data store, so they carry only what is needed to
run the sensor. Every key not in :data:`SAFE_KEYS` has its value replaced by
``"[redacted]"``; bytes are redacted even under a safe key; exception messages (which
may quote input) are dropped, keeping the type and the traceback frames. Event names
are ``noun.past_verb`` (``flow.evicted``); an event that is not is redacted too, which
stops ``log.info(f"... {addr}")`` from leaking. Debug calls are no-ops below the
configured level (``make_filtering_bound_logger``). No per-packet logging.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterable
from typing import Any, Final, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor

REDACTED: Final = "[redacted]"

SAFE_KEYS: Final[frozenset[str]] = frozenset(
    {
        # structlog's own keys
        "event", "level", "timestamp", "logger", "exception",
        # counts and sizes
        "count", "packets", "bytes", "flows", "records", "frames", "drops", "errors",
        "capacity", "limit", "percent", "budget_bytes", "size_bytes",
        # rates and durations
        "seconds", "rate_pps", "interval_s", "timeout_s", "duration_s", "elapsed_s",
        # where in our own files
        "path", "file", "offset", "line", "key_path",
        # closed-set labels
        "reason", "kind", "sink", "version", "detector", "severity", "state", "stage",
        "linktype", "app", "direction", "purpose", "scope", "scopes", "signal", "format",
        "clock",
        # identifiers we mint ourselves (no subscriber data)
        "grant_id", "alert_id", "rule", "case_ref", "flow_id", "worker", "workers", "pid",
        # our own sockets and errors
        "error", "listen", "port", "interface",
    }
)  # fmt: skip
"""Keys whose values are logged as given. Extend with ``configure_logging(extra_safe_keys=)``."""

EVENT_RE: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS: Final = ("auto", "json", "console")


class Redactor:
    """Allow-list processor: unknown keys keep their name but lose their value."""

    __slots__ = ("_safe",)

    def __init__(self, safe_keys: Iterable[str] = SAFE_KEYS) -> None:
        self._safe = frozenset(safe_keys)

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        safe = self._safe
        out: EventDict = {}
        for key, value in event_dict.items():
            if key not in safe or isinstance(value, bytes | bytearray | memoryview):
                out[key] = REDACTED
            else:
                out[key] = value
        event = out.get("event")
        if event is not None and not (isinstance(event, str) and EVENT_RE.match(event)):
            out["event"] = REDACTED
        return out


def _exception_text(exc_info: Any) -> str | None:
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or len(exc_info) != 3 or exc_info[0] is None:
        return None
    exc_type, _, tb = exc_info
    frames = "".join(traceback.format_list(traceback.extract_tb(tb)))
    name = getattr(exc_type, "__qualname__", "Exception")
    return f"Traceback (most recent call last):\n{frames}{name}: [message redacted]"


def redact_exception(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Replace ``exc_info`` by an ``exception`` text without the message."""
    exc_info = event_dict.pop("exc_info", None)
    event_dict.pop("stack_info", None)
    if exc_info:
        text = _exception_text(exc_info)
        if text is not None:
            event_dict["exception"] = text
    return event_dict


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that remembers the name ``get_logger`` was called with."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    __slots__ = ("_file",)

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "")


def add_logger_name(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """``logger=<module>`` from the name given to :func:`get_logger`."""
    name = getattr(logger, "name", "")
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    extra_safe_keys: Iterable[str] = (),
) -> None:
    """Configure structlog for the whole process (call once at start-up, again on reload).

    ``fmt="auto"`` renders JSON unless ``stream`` (default stderr) is a terminal.
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    out = stream if stream is not None else sys.stderr
    tty = _is_tty(out)
    console = fmt == "console" or (fmt == "auto" and tty)
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=tty)
        if console
        else structlog.processors.JSONRenderer()
    )
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_exception,
        Redactor(SAFE_KEYS | frozenset(extra_safe_keys)),
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        context_class=dict,
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,  # lets a reload change level and stream
    )


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger that tags each event with ``logger=name`` (a module name, not data).

    Safe to call at import time: the configuration is looked up on each use.
    """
    return cast(FilteringBoundLogger, structlog.get_logger(name))
