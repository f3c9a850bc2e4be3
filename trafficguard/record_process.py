"""The record process: detectors, the privacy edge and the sinks on a second core.

Why: in a full-pipeline replay the packet process spent about a third of its time after
the packet-facing stages — the detectors (~8 µs per record), encoding rows and handing
them to the store writer (which still waited for SQLite's ~8 µs per row at every burst).
None of that needs packets, only finished records, and Python runs one core per process.
So ``replay`` hands each round of records, as msgpack, to a second process that runs a
``tail.Tail`` with the detect stage, the sensor-loss marks, the privacy edge and every
sink (SQLite committed in that process, JSON lines, IPFIX). The calls arrive in the order
the in-process tail would get them, so the records, alerts and their order are the same.

Used by ``replay`` when ``store.record_process`` is on, escalation is off (the gate reads
the detectors' alerts and taps packets, so both stay in the packet process), no
``--purge`` (which reads the store in this process), and there are detectors or a SQLite
store to run (``usable``). The live daemon does not use it.

Frames are ``store_writer``'s ``<u32 length><msgpack>``. Parent to child (stdin):

* ``["start", config, keys, overrides, logging]`` once; the child answers ``["ready"]``
  or ``["error", class, message, path, problems]`` (a store that does not open, say)
* ``["types", {kind: "module:qualname"}]`` before the first record of a new type
* ``["tick", now_ns]``, ``["route", runs]``, ``["pass", runs]``, ``["loss", from, to, newest]``
  where ``runs`` are ``[kind, <msgpack of [record, ...]>]`` in order (the records of a run
  are bytes of their own, so the child decodes them straight into their type)
* ``["finish", now_ns, chunk, metrics]``, ``["flush", metrics]``, ``["close", metrics]``:
  each answered by a status ``[error, written, store_errors, loss_windows, families]`` —
  the first store error since the last status (None if none), ``[[sink, kind, n], ...]``,
  the counters, and, if ``metrics`` asked for them (a ``/metrics`` endpoint is up), the
  pickled metric families of the tail's stages and sinks (else None).

End of input without ``close`` (the packet process was killed) closes the sinks, which
commits every record that arrived. The child ignores SIGINT, SIGTERM and SIGHUP (a
terminal or service manager signals the whole group) and ends when its input does.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import select
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import msgspec

from trafficguard.errors import ConfigError, StoreError
from trafficguard.gc_tuning import packet_loop_gc, startup_gc
from trafficguard.sinks.child_pipe import (
    child_stdio,
    error_reason,
    read_frame,
    start_child,
    stop_child,
    write_frame,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from trafficguard.config import Config
    from trafficguard.privacy.keys import SensorKeys
    from trafficguard.tail import Tail
    from trafficguard.wiring import SinkOverrides

Runs = list[list[Any]]  # [[kind, msgpack of [record, ...]], ...]


def usable(cfg: Config, purge: bool = False, sqlite: bool = True) -> bool:
    """Whether ``replay`` runs the tail in a record process (see the module docstring).

    Only when the tail has work worth a core — the detectors or a SQLite store (``sqlite``:
    the replay writes one): JSON lines or IPFIX alone cost about what sending the records
    to the child would, and metadata mode measured slower with it (0.91× vs 1.2×
    softflowd on the 2M workload).
    """
    if not cfg.store.record_process or cfg.escalation.enabled or purge:
        return False
    return cfg.detect.enabled or sqlite


# -- the packet process's side ---------------------------------------------------------------
class RemoteTail:
    """``tail.Tail``'s interface, carried out by a record process.

    ``tick``, ``route``, ``pass_on`` and ``note_sensor_loss`` do not wait (the pipe's 1 MB
    is the queue; a slower child makes them wait). ``flush``, ``finish`` and ``close`` wait
    for the child's status and raise the first store error it met since the last one, so a
    full disk stops a replay at the next flush with the sink's own message.
    """

    def __init__(
        self,
        cfg: Config,
        keys: SensorKeys,
        overrides: SinkOverrides,
        log_level: str | None = None,
    ) -> None:
        self.records_written: dict[tuple[str, str], int] = {}
        self.store_errors = 0
        self.sensor_loss_windows = 0
        self._metrics: list[Metric] = []
        self._types: dict[type, str] = {}
        self._want_metrics = False
        self._encoder = msgspec.msgpack.Encoder()
        self._closed = False
        try:
            self._proc = start_child([sys.executable, "-m", "trafficguard.record_process"])
        except OSError as err:
            raise StoreError(f"cannot start the record process: {error_reason(err)}") from None
        assert self._proc.stdin is not None and self._proc.stdout is not None  # PIPE
        self._in: IO[bytes] = self._proc.stdin
        self._out: IO[bytes] = self._proc.stdout
        start = [
            "start",
            cfg.model_dump(mode="json"),
            {str(epoch): key for epoch, key in keys.pseudonym_keys.items()},
            _overrides_dict(overrides),
            [log_level or cfg.logging.level, cfg.logging.format],
        ]  # fmt: skip
        self._ready = False
        write_frame(self._in, start)  # the child reads it first; nothing to wait for yet

    def wait_ready(self, block: bool = True) -> None:
        """Wait until the child has opened its sinks; raise what stopped it (a store that
        does not open, say). Frames may be sent before: the child reads them once ready,
        so ``replay`` does not wait (the child's start-up, ~0.3 s, overlaps the first
        packets); each send asks without blocking (``block=False``) and a request or a
        dead pipe waits, so a start-up error surfaces within a tick or two."""
        if self._ready:
            return
        if not block and not select.select([self._out], [], [], 0)[0]:
            return
        reply = read_frame(self._out)
        if reply is None or reply[0] != "ready":
            self._closed = True
            self._stop()
            if reply is None:
                raise StoreError(f"the record process exited with status {self._proc.wait()}")
            _, cls, message, path, problems = reply
            if cls == "ConfigError":
                raise ConfigError(path, problems)
            raise StoreError(message)
        self._ready = True

    # -- Tail's interface --------------------------------------------------------------
    def tick(self, now_ns: int) -> None:
        self._send(["tick", now_ns])

    def route(self, records: list[msgspec.Struct]) -> None:
        self._send(["route", self._runs(records)])

    def pass_on(self, records: Sequence[msgspec.Struct]) -> None:
        if records:
            self._send(["pass", self._runs(records)])

    def note_sensor_loss(self, from_ns: int, to_ns: int, newest_ns: int) -> None:
        self._send(["loss", from_ns, to_ns, newest_ns])

    def finish(self, now_ns: int, chunk: int) -> None:
        self._request(["finish", now_ns, chunk, self._want_metrics])

    def flush(self) -> None:
        if not self._closed:
            self._request(["flush", self._want_metrics])

    def close(self) -> None:
        """Close the sinks in the child (commit, stop); idempotent."""
        if self._closed:
            return
        try:
            self._request(["close", self._want_metrics])
        finally:
            self._closed = True
            self._stop()

    def collectors(self) -> list[Callable[[], Iterable[Any]]]:
        """The tail's metric families, as of the last status (every flush). Asking for
        them makes every later status carry them (without a ``/metrics`` endpoint the
        child never builds them)."""
        self._want_metrics = True
        return [lambda: list(self._metrics)]

    # -- frames --------------------------------------------------------------------------
    def _runs(self, records: Sequence[msgspec.Struct]) -> Runs:
        """Records as ``[kind, msgpack of [record, ...]]`` runs of one type, in order."""
        runs: list[tuple[str, list[msgspec.Struct]]] = []
        types = self._types
        last: type | None = None
        current: list[msgspec.Struct] = []
        for rec in records:
            cls = type(rec)
            if cls is not last:
                kind = types.get(cls)
                if kind is None:
                    kind = types[cls] = cls.kind  # type: ignore[attr-defined]
                    self._send(["types", {kind: f"{cls.__module__}:{cls.__qualname__}"}])
                current = []
                runs.append((kind, current))
                last = cls
            current.append(rec)
        encode = self._encoder.encode
        return [[kind, encode(run)] for kind, run in runs]

    def _send(self, message: object) -> None:
        if not self._ready:
            self.wait_ready(block=False)
        if self._closed:
            raise StoreError("the record process is closed")
        try:
            write_frame(self._in, message)
        except OSError:
            self._died()

    def _request(self, message: object) -> None:
        self._send(message)
        self.wait_ready()
        status = read_frame(self._out)
        if status is None:
            self._died()
        assert status is not None
        error, written, store_errors, loss_windows, metrics = status
        self.records_written = {(sink, kind): n for sink, kind, n in written}
        self.store_errors = store_errors
        self.sensor_loss_windows = loss_windows
        if metrics is not None:
            self._metrics = pickle.loads(metrics)
        if error is not None:
            raise StoreError(error)

    def _died(self) -> NoReturn:
        if not self._ready:
            self.wait_ready()  # raises the start-up error the child sent before it exited
        self._closed = True
        code = self._proc.wait()
        self._stop()
        raise StoreError(
            f"the record process exited with status {code}; records not yet committed "
            "there are lost"
        )

    def _stop(self) -> None:
        stop_child(self._proc)


def _overrides_dict(overrides: SinkOverrides) -> dict[str, Any]:
    return {
        "store": None if overrides.store is None else str(overrides.store),
        "no_store": overrides.no_store,
        "jsonl": overrides.jsonl,
        "ipfix": overrides.ipfix,
    }


# -- the record process's side ---------------------------------------------------------------
class RecordServer:
    """Decodes the parent's frames and calls a ``Tail`` in the same order."""

    def __init__(self, tail: Tail, out: IO[bytes]) -> None:
        self.tail = tail
        self.out = out
        self.decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {}
        self.error: str | None = None

    def records(self, runs: list[list[Any]]) -> list[msgspec.Struct]:
        """Each run's records, decoded to their own type (exact field types), in order."""
        out: list[msgspec.Struct] = []
        decoders = self.decoders
        for kind, encoded in runs:
            out.extend(decoders[kind].decode(encoded))
        return out

    def declare(self, types: dict[str, str]) -> None:
        for kind, where in types.items():
            module, _, qualname = where.partition(":")
            cls: Any = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            self.decoders[kind] = msgspec.msgpack.Decoder(list[cls])

    def guarded(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a tail call; a store error is kept for the next status (the sink keeps
        the rows it could not commit and retries them with the next ones)."""
        try:
            fn(*args)
        except StoreError as err:
            if self.error is None:
                self.error = str(err)

    def status(self, metrics: bool) -> None:
        tail = self.tail
        families = None
        if metrics:
            families = pickle.dumps([m for collect in tail.collectors() for m in collect()])
        written = [[sink, kind, n] for (sink, kind), n in tail.records_written.items()]
        write_frame(
            self.out,
            [self.error, written, tail.store_errors, tail.sensor_loss_windows, families],
        )
        self.error = None

    def serve(self, src: IO[bytes]) -> None:
        """Apply frames until ``close`` or end of input (then close the sinks anyway)."""
        tail = self.tail
        while (msg := read_frame(src)) is not None:
            op = msg[0]
            if op == "route":
                self.guarded(tail.route, self.records(msg[1]))
            elif op == "tick":
                tail.tick(msg[1])
            elif op == "pass":
                self.guarded(tail.pass_on, self.records(msg[1]))
            elif op == "types":
                self.declare(msg[1])
            elif op == "loss":
                tail.note_sensor_loss(msg[1], msg[2], msg[3])
            elif op == "finish":
                self.guarded(tail.finish, msg[1], msg[2])
                self.status(msg[3])
            elif op == "flush":
                self.guarded(tail.flush)
                self.status(msg[1])
            elif op == "close":
                self.guarded(tail.close)
                self.status(msg[1])
                return
        self.guarded(tail.close)  # the parent is gone: commit what it handed over


def build_tail(start: list[Any]) -> Tail:
    """The child's ``Tail`` from the ``start`` frame: config, keys, sinks, detect stage."""
    from trafficguard.config import Config  # noqa: PLC0415 (the child's imports, not the parent's)
    from trafficguard.privacy.edge import PrivacyEdge  # noqa: PLC0415
    from trafficguard.privacy.pseudonym import Pseudonymizer  # noqa: PLC0415
    from trafficguard.sensor_loss import LossWindows, loss_horizon_ns  # noqa: PLC0415
    from trafficguard.sinks.logging import configure_logging  # noqa: PLC0415
    from trafficguard.tail import Tail  # noqa: PLC0415
    from trafficguard.wiring import SinkOverrides, build_record_stages, build_sinks  # noqa: PLC0415

    _, config, keys, overrides, (level, fmt) = start
    configure_logging(level=level, fmt=fmt)
    cfg = Config.model_validate(config)
    # this process is the store's writer: commit here, no writer process of its own
    cfg = cfg.model_copy(
        update={
            "store": cfg.store.model_copy(
                update={"sqlite": cfg.store.sqlite.model_copy(update={"writer": "inline"})}
            )
        }
    )
    store = overrides.get("store")
    sink_overrides = SinkOverrides(
        store=None if store is None else Path(store),
        no_store=overrides["no_store"],
        jsonl=overrides["jsonl"],
        ipfix=overrides["ipfix"],
    )
    pz = Pseudonymizer({int(epoch): key for epoch, key in keys.items()}, cfg.home_networks)
    sinks = build_sinks(cfg, sink_overrides)
    edge = PrivacyEdge(pz) if cfg.home_networks else None
    return Tail(sinks, LossWindows(loss_horizon_ns(cfg)), edge, build_record_stages(cfg, pz))


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m trafficguard.record_process",
        description="trafficguard's record process, started by 'trafficguard replay' "
        "(store.record_process): reads a start frame and then framed rounds of records "
        "on stdin, runs the detectors, the privacy edge and the sinks, and replies with "
        "its status on stdout. Not meant to be run by hand.",
    ).parse_args(argv)
    out = child_stdio()
    src = sys.stdin.buffer
    start = read_frame(src)
    if start is None or start[0] != "start":
        return 2
    try:
        with startup_gc():  # the packet process's cycle-collector settings (gc_tuning)
            tail = build_tail(start)
    except ConfigError as err:
        write_frame(out, ["error", "ConfigError", str(err), err.path, err.problems])
        return 1
    except Exception as err:  # any start-up failure goes back to the parent
        write_frame(out, ["error", type(err).__name__, str(err), "", []])
        return 1
    write_frame(out, ["ready"])
    with packet_loop_gc():
        RecordServer(tail, out).serve(src)
    # The sinks are closed and the status is sent: nothing is left to flush or release,
    # and tearing down the detectors' state object by object cost ~0.1 s of the packet
    # process's wait at the end of a replay.
    out.close()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
