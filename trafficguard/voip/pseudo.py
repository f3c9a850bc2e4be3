"""The pseudonymization seam of the VoIP analyzers.

SIP URIs, numbers, display names and Call-IDs are personal data. The VoIP code may read
them while parsing one message, but anything it keeps beyond that (call state, records)
holds only what a ``Pseudonymizer`` returned. The keyed HMAC implementation lives in
``trafficguard/privacy/`` (a later stage, so this module only declares the protocol and
the analyzers take an instance in their constructor); tests use a small HMAC double.
"""

from __future__ import annotations

from typing import Protocol


class Pseudonymizer(Protocol):
    """Keyed one-way mapping from identifiers to stable pseudonyms.

    ``user`` is for subscriber identities (numbers, SIP users, AORs) so that a subject
    lookup by number can recompute the same pseudonym; ``token`` is for opaque protocol
    identifiers (Call-IDs) that must be joinable across records but never reversible.
    Both must be deterministic for one key, so replays give identical records.
    """

    def user(self, value: str) -> str:
        """Pseudonym of a subscriber identity (already normalised by the caller)."""
        ...

    def token(self, value: str) -> str:
        """Pseudonym of an opaque protocol token such as a Call-ID."""
        ...
