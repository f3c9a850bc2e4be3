"""Hand a classic pcap file's byte stream to the C framer instead of its Frame parser."""

from __future__ import annotations

from trafficguard.capture.pcap import read_pcap
from trafficguard.capture.pcapfile import ChunkReader, FileFrameSource


def claim_pcap_stream(source: FileFrameSource) -> tuple[ChunkReader, bytes] | None:
    """The byte stream of a classic pcap source not yet iterated, or None (pcapng).

    Reaches into ``FileFrameSource`` (its reader and first chunk) so that the C framer
    reads the same decompressed chunks the Python parser would; the source then counts
    as iterated and is still closed by its context manager.
    """
    first = source._first
    if first is None or source._parser is not read_pcap:
        return None
    source._first = None
    return source._reader, first
