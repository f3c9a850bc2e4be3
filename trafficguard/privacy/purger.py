"""The periodic retention purge of a running sensor's SQLite store (``privacy.purge_interval_s``).

:class:`StorePurger` deletes, per record table of the store, the rows older than their
record type's retention period (``retention_plan``: flows, calls and registrations, RTP
streams, alerts; other kinds follow the flow period), all in one transaction, and for each
purge that deleted rows:

* appends one ``retention.purged`` audit entry (counts per table, no values) *before* the
  transaction commits when an audit log is configured: if the entry cannot be written,
  nothing is deleted (fail closed) and the purge is retried at the next interval;
* logs ``retention.purged`` (always);
* counts the rows in ``trafficguard_retention_purged_records_total{kind}``.

Which clock: the caller passes ``now_ns``. The daemon passes the wall clock (live packet
time *is* the kernel's wall clock), ``replay`` the packet time of the newest packet replayed
(``docs/privacy.md``, "Retention timing"). The interval between purges is measured on the
monotonic clock. The purge uses its own connection with a busy timeout; the SQLite sink
commits in explicit transactions, so a purge between two flushes never waits long.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol

import structlog

from trafficguard.privacy.retention import RetentionPolicy, purge_tables
from trafficguard.privacy.subject import retention_plan

if TYPE_CHECKING:  # prometheus_client pulls in http.server: only a scrape needs it
    from prometheus_client.core import Metric

DEFAULT_BUSY_TIMEOUT_S: Final = 10.0

# structlog directly: the sinks layer (which configures it) comes after this one
log = structlog.get_logger("trafficguard.retention")

PurgeClock = Literal["wall", "packet"]
DetailValue = str | int | float | bool | None | list[str] | list[int]


class AuditAppender(Protocol):
    """What the purger needs of ``escalation.audit.AuditLog``."""

    def append(
        self, event: Literal["retention.purged"], ts_ns: int, details: Mapping[str, DetailValue]
    ) -> int: ...

    def close(self, ts_ns: int | None = None) -> None: ...


class StorePurger:
    """Purges one store every ``interval_s`` (monotonic clock); see the module docstring."""

    __slots__ = (
        "_audit_opener",
        "_busy_timeout_s",
        "_clock_name",
        "_interval_s",
        "_monotonic",
        "_next_due",
        "errors",
        "path",
        "policy",
        "purged",
        "runs",
    )

    def __init__(
        self,
        path: str | Path,
        policy: RetentionPolicy,
        interval_s: float,
        *,
        clock: PurgeClock,
        audit_opener: Callable[[], AuditAppender] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self.path = Path(path)
        self.policy = policy
        self._interval_s = interval_s
        self._clock_name = clock
        self._audit_opener = audit_opener
        self._monotonic = monotonic
        self._busy_timeout_s = busy_timeout_s
        # the first purge is due at once (a sensor restarted more often than every
        # interval_s must still purge); it deletes nothing and audits nothing when nothing
        # is past retention
        self._next_due = monotonic()
        self.purged: dict[str, int] = {}  # table (record kind) -> rows deleted, for /metrics
        self.runs = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self._interval_s > 0

    def due(self) -> bool:
        return self.enabled and self._monotonic() >= self._next_due

    def maybe_purge(self, now_ns: Callable[[], int]) -> dict[str, int] | None:
        """Purge when the interval has passed (``now_ns`` is only read then); else None."""
        if not self.due():
            return None
        self._next_due = self._monotonic() + self._interval_s
        return self.purge(now_ns())

    def purge(self, now_ns: int) -> dict[str, int]:
        """Purge now as of ``now_ns``; rows deleted per table (empty if there is no store).

        Errors (store busy or broken, audit not writable) are logged as
        ``retention.failed`` and counted; nothing is deleted then, and the next interval
        tries again. A purge never stops the sensor.
        """
        if not self.path.is_file():
            return {}
        self.runs += 1
        try:
            counts = self._purge(now_ns)
        except (sqlite3.Error, OSError) as err:
            self.errors += 1
            log.error("retention.failed", path=str(self.path), error=str(err))
            return {}
        except Exception as err:  # an audit failure (AuditWriteError, integrity, ...)
            self.errors += 1
            log.error("retention.failed", path=str(self.path), error=f"{type(err).__name__}: {err}")
            return {}
        deleted = {t: n for t, n in counts.items() if n}
        for table, n in deleted.items():
            self.purged[table] = self.purged.get(table, 0) + n
        if deleted:
            log.info(
                "retention.purged",
                path=str(self.path),
                clock=self._clock_name,
                records=sum(deleted.values()),
                kind=sorted(deleted),
                count=[deleted[t] for t in sorted(deleted)],
            )
        return counts

    def _purge(self, now_ns: int) -> dict[str, int]:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        audit: AuditAppender | None = None
        try:
            plan = retention_plan(conn)
            cutoffs = [(t, col, self.policy.cutoff_ns(rtype, now_ns)) for t, col, rtype in plan]
            if not cutoffs:
                return {}
            types = {t: rtype for t, _, rtype in plan}

            def audit_first(counts: dict[str, int]) -> None:
                nonlocal audit
                if self._audit_opener is None:
                    return
                tables = sorted(t for t, n in counts.items() if n)
                audit = self._audit_opener()
                audit.append(
                    "retention.purged",
                    now_ns,
                    {
                        "tables": tables,
                        "rows": [counts[t] for t in tables],
                        "record_types": [types[t] for t in tables],
                        "total": sum(counts.values()),
                        "clock": self._clock_name,
                    },
                )

            return purge_tables(conn, cutoffs, before_commit=audit_first)
        finally:
            conn.close()
            if audit is not None:
                try:
                    audit.close(now_ns)  # signs a checkpoint over the new entry
                except Exception as err:  # the entry itself is written and fsynced
                    log.error("audit.failed", path=str(self.path), error=type(err).__name__)

    def collect(self) -> Iterator[Metric]:
        """Counters for ``/metrics`` (the stage ``collect`` contract)."""
        from prometheus_client.core import CounterMetricFamily  # noqa: PLC0415 (scrape only)

        c = CounterMetricFamily(
            "trafficguard_retention_purged_records",
            "Stored records deleted by the periodic retention purge, by record kind",
            labels=["kind"],
        )
        for kind, n in sorted(self.purged.items()):
            c.add_metric([kind], n)
        yield c
        yield CounterMetricFamily(
            "trafficguard_retention_purge_failures",
            "Retention purges that failed (store busy or broken, audit not writable)",
            value=self.errors,
        )
