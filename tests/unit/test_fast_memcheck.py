"""valgrind memcheck over the C core's entry points: no invalid access, no definite leak.

CPython itself reports a few uninitialised-value warnings under valgrind (int.from_bytes,
frame teardown); only errors whose stack passes through ``_core`` count here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _blocks(log: str) -> list[str]:
    """valgrind's log split into one text per reported error or leak."""
    return [b for b in re.split(r"\n==\d+== \n", log) if b.strip()]


def test_core_is_clean_under_valgrind(tmp_path: Path) -> None:
    valgrind = shutil.which("valgrind")
    assert valgrind is not None, "valgrind is a test dependency (scripts/setup.sh)"
    log = tmp_path / "vg.log"
    proc = subprocess.run(
        [valgrind, "--leak-check=full", "--show-leak-kinds=definite", f"--log-file={log}",
         sys.executable, str(REPO / "bench" / "fast_memcheck.py")],
        env={**os.environ, "PYTHONMALLOC": "malloc"}, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "records" in proc.stdout  # the driver ran to the end
    text = log.read_text()
    assert "ERROR SUMMARY" in text
    ours = [b for b in _blocks(text) if "_core.c" in b or "_core.cpython" in b]
    assert ours == []
    assert "Invalid read" not in text
    assert "Invalid write" not in text
    lost = re.search(r"definitely lost: ([\d,]+) bytes", text)
    assert lost is None or lost.group(1) == "0"
