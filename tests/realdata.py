"""Where the real public captures live inside the checkout (see the SOURCES.md files).

``tests/data/real`` holds the BSD-licensed ones, ``tests/data/real-ext`` the copyleft or
custom-licensed ones; tests address both by file name through :func:`real_pcap`.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
REAL_DIR = DATA_DIR / "real"
REAL_EXT_DIR = DATA_DIR / "real-ext"
REAL_DIRS = (REAL_DIR, REAL_EXT_DIR)


def real_pcap(name: str) -> Path:
    """Path of a real capture by file name; a missing file is a test-setup error."""
    for directory in REAL_DIRS:
        path = directory / name
        if path.exists():
            return path
    raise FileNotFoundError(f"{name} is in neither {REAL_DIR} nor {REAL_EXT_DIR}")


def all_real_pcaps() -> list[Path]:
    """Every real capture, sorted by name."""
    found = [p for d in REAL_DIRS for p in d.iterdir() if p.suffix in (".pcap", ".pcapng")]
    return sorted(found, key=lambda p: p.name)


def sources_lines() -> list[str]:
    """The table rows of both SOURCES.md files."""
    rows: list[str] = []
    for d in REAL_DIRS:
        rows += (d / "SOURCES.md").read_text().splitlines()
    return rows
