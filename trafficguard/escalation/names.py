"""Names of the escalation vocabulary: purposes, scopes and the revocation file.

Kept apart from ``policy`` and ``grants`` (which pull in pydantic and cryptography) so
the command-line parsers can offer them as choices without that import cost; both
modules re-export them.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Purpose = Literal[
    "fraud",
    "harassment",
    "troubleshooting",
    "customer_request",
    "legal_process",
    "attack_mitigation",
]
Scope = Literal["dns", "http", "tls", "sip", "smtp", "pcap"]

PURPOSES: Final[tuple[str, ...]] = get_args(Purpose)
SCOPES: Final[tuple[str, ...]] = get_args(Scope)
REVOCATION_FILE: Final = "revoked.yaml"  # in the grants directory
