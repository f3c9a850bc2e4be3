"""Framed msgpack over pipes, between trafficguard and the child processes it starts.

The store writer (``sinks/store_writer.py``) and the record process
(``record_process.py``) read and write ``<u32 little-endian length><msgpack>`` frames on
their stdin/stdout. Only the standard library and msgspec here, so a child that imports
this starts in tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
from pathlib import Path
from typing import IO, Any, Final

import msgspec

FRAME_HEADER: Final = struct.Struct("<I")
PIPE_BYTES: Final = 1 << 20  # a whole batch of wide rows fits: the parent rarely waits
_F_SETPIPE_SZ: Final = 1031  # fcntl.F_SETPIPE_SZ (Linux); not named by Python 3.11
STOP_TIMEOUT_S: Final = 30.0  # a child told to stop that has not exited by then is killed


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


def start_child(args: list[str]) -> subprocess.Popen[bytes]:
    """Start ``args`` (``python -m trafficguard....``) with piped stdin/stdout, a 1 MB
    stdin pipe, and its own process group: a terminal's Ctrl-C or a service manager's
    SIGTERM reaches this process, which then closes the child in order. OSError if it
    cannot be started."""
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), process_group=0
    )
    assert proc.stdin is not None  # PIPE
    enlarge_pipe(proc.stdin.fileno())
    return proc


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Close the pipes (end of input: the child finishes and exits) and reap it; killed
    after ``STOP_TIMEOUT_S``."""
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):  # a dead child: nothing left to tell it
                pipe.close()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_stdio() -> IO[bytes]:
    """In the child: ignore the signals sent to a whole group (its parent closes it) and
    return a private copy of stdout for replies; anything else printed goes to stderr."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return out
