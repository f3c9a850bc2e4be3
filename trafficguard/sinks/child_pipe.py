"""Framed msgpack over pipes, between trafficguard and the child processes it starts.

The store writer (``sinks/store_writer.py``) and the record process
(``record_process.py``) read and write ``<u32 little-endian length><msgpack>`` frames on
their stdin/stdout. Only the standard library and msgspec here, so a child that imports
this starts in tens of milliseconds.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import IO, Any, Final

import msgspec

FRAME_HEADER: Final = struct.Struct("<I")
PIPE_BYTES: Final = 1 << 20  # a whole batch of wide rows fits: the parent rarely waits
_F_SETPIPE_SZ: Final = 1031  # fcntl.F_SETPIPE_SZ (Linux); not named by Python 3.11


def error_reason(err: BaseException) -> str:
    """Short, data-free reason for an sqlite3/OS error (messages name no record values)."""
    name = getattr(err, "sqlite_errorname", None)
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
    return f"{text} ({name})" if name else text


def enlarge_pipe(fd: int) -> None:
    """Ask for a 1 MB pipe buffer (best effort: the default 64 KB still works)."""
    import fcntl  # noqa: PLC0415 (POSIX only, and only here)

    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        return


def child_env() -> dict[str, str]:
    """The environment of a child process (``python -m trafficguard....``): this one's,
    with the root of the trafficguard package this process runs put first on
    ``PYTHONPATH``, so the child imports the same code wherever it came from."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def write_frame(out: IO[bytes], message: object) -> None:
    body = msgspec.msgpack.encode(message)
    out.write(FRAME_HEADER.pack(len(body)))
    out.write(body)
    out.flush()


def read_frame(src: IO[bytes]) -> Any | None:
    """The next message, or None at end of input (a torn frame counts as the end)."""
    head = src.read(FRAME_HEADER.size)
    if len(head) < FRAME_HEADER.size:
        return None
    (size,) = FRAME_HEADER.unpack(head)
    body = src.read(size)
    if len(body) < size:
        return None
    return msgspec.msgpack.decode(body)
