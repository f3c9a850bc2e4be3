"""Crypto-PAn: prefix-preserving address pseudonymization (Xu, Fan, Ammar, Moon 2002).

Follows the reference implementation bit for bit so outputs match its published sample
trace: AES-128 keyed with the first 16 key bytes, pad = AES(key[16:32]). Output bit ``i``
is input bit ``i`` XOR the top bit of AES(first ``i`` input bits ‖ pad bits ``i``..127), so
two addresses sharing a ``k``-bit prefix map to addresses sharing exactly a ``k``-bit
prefix. All 32 (IPv4) or 128 (IPv6) AES blocks depend only on the input, so they are
encrypted in one ECB call.

Whoever holds the key can invert the mapping bit by bit; the key is as sensitive as the
addresses it protects. trafficguard deliberately offers no inverse (see ``reveal``).
"""

from __future__ import annotations

import ipaddress
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES: Final = 32
_MASK128: Final = (1 << 128) - 1


class CryptoPAn:
    """One Crypto-PAn key; ``anonymize`` maps IPv4 to IPv4 and IPv6 to IPv6."""

    __slots__ = ("_enc", "_pad", "_pad_masks")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("Crypto-PAn needs a 32-byte key")
        cipher = Cipher(algorithms.AES(key[:16]), modes.ECB())
        self._enc = cipher.encryptor()
        pad = int.from_bytes(self._enc.update(key[16:]), "big")
        self._pad = pad
        # pad bits kept below position i: pad & (MASK >> i)
        self._pad_masks = tuple(pad & (_MASK128 >> i) for i in range(128))

    def anonymize_int(self, addr: int, bits: int) -> int:
        """Pseudonymize an address given as an int of ``bits`` (32 or 128) bits."""
        if bits not in (32, 128):
            raise ValueError("bits must be 32 or 128")
        ext = addr << (128 - bits)
        pads = self._pad_masks
        blocks = bytearray()
        for pos in range(bits):
            prefix = (ext >> (128 - pos)) << (128 - pos) if pos else 0
            blocks += (prefix | pads[pos]).to_bytes(16, "big")
        out = self._enc.update(bytes(blocks))
        flips = 0
        for pos in range(bits):
            flips = (flips << 1) | (out[pos * 16] >> 7)
        return addr ^ flips

    def anonymize(
        self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """Pseudonymize one address, keeping its family."""
        if addr.version == 4:
            return ipaddress.IPv4Address(self.anonymize_int(int(addr), 32))
        return ipaddress.IPv6Address(self.anonymize_int(int(addr), 128))
