"""Blocklist matches: flows to or from addresses/prefixes listed in text files.

Files hold one address or prefix per line (``#`` comments, blank lines ignored); an
unparsable line is counted and skipped, never fatal. ``reload()`` re-reads them (SIGHUP).
Lookup is one set probe per prefix length present, per flow endpoint.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from trafficguard.config import BlocklistConfig
from trafficguard.detect.base import Detector, DetectorEnv
from trafficguard.flow.records import FlowRecord


class PrefixTable:
    """Prefixes by (version, length) -> set of network ints; longest match wins."""

    __slots__ = ("_lengths", "_nets", "_size", "bad_lines")

    def __init__(self) -> None:
        self._nets: dict[tuple[int, int], set[int]] = {}
        self._lengths: dict[int, tuple[int, ...]] = {4: (), 6: ()}
        self._size = 0  # distinct entries: asked per flow record, so kept, not summed
        self.bad_lines = 0

    def add(self, text: str) -> bool:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            self.bad_lines += 1
            return False
        nets = self._nets.setdefault((net.version, net.prefixlen), set())
        before = len(nets)
        nets.add(int(net.network_address))
        self._size += len(nets) - before
        lengths = {p for v, p in self._nets if v == net.version}
        self._lengths[net.version] = tuple(sorted(lengths, reverse=True))
        return True

    def match(self, addr: str) -> int | None:
        """The longest listed prefix length containing ``addr``, or None."""
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return None
        value = int(ip)
        bits = 32 if ip.version == 4 else 128
        for plen in self._lengths[ip.version]:
            masked = value >> (bits - plen) << (bits - plen) if plen else 0
            if masked in self._nets[(ip.version, plen)]:
                return plen
        return None

    def __len__(self) -> int:
        return self._size


def load_prefix_files(paths: tuple[Path, ...]) -> tuple[PrefixTable, int]:
    """Read the files; return the table and how many files could not be read."""
    table = PrefixTable()
    unreadable = 0
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            unreadable += 1
            continue
        for line in text.splitlines():
            item = line.split("#", 1)[0].strip()
            if item:
                table.add(item)
    return table, unreadable


class BlocklistDetector(Detector):
    """A flow whose initiator or responder is on a blocklist."""

    name = "blocklist"

    def __init__(self, env: DetectorEnv, cfg: BlocklistConfig) -> None:
        super().__init__(env)
        self.cfg = cfg
        self.table, self.unreadable_files = load_prefix_files(cfg.files)

    def reload(self) -> None:
        self.table, self.unreadable_files = load_prefix_files(self.cfg.files)

    def takes_flows(self) -> bool:
        """An empty table matches nothing (asked again after ``reload``)."""
        return len(self.table) > 0

    def on_flow(self, rec: FlowRecord) -> None:
        table = self.table
        if not len(table):
            return
        side = "src"
        plen = table.match(rec.src_addr)
        if plen is None:
            side = "dst"
            plen = table.match(rec.dst_addr)
            if plen is None:
                return
        listed = rec.src_addr if side == "src" else rec.dst_addr
        other = rec.dst_addr if side == "src" else rec.src_addr
        self.alerts.report(
            self.name,
            f"{listed}|{other}",
            first_ns=rec.first_seen_ns,
            last_ns=rec.end_ns,
            rule=(
                f"traffic {'from' if side == 'src' else 'to'} an address on a blocklist "
                f"(listed prefix length /{plen})"
            ),
            severity="medium",
            source=rec.src_addr,
            target=rec.dst_addr,
            evidence={
                "listed_side": side,
                "prefix_len": plen,
                "packets": rec.packets_fwd + rec.packets_rev,
                "bytes": rec.bytes_fwd + rec.bytes_rev,
                "entries": len(table),
            },
        )

    def state_keys(self) -> int:
        return len(self.table)
