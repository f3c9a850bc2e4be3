"""Re-identification by confirmation: a grant names a candidate, we check the pseudonym.

There is deliberately no table from pseudonyms back to identities, and no inverse of
the pseudonym functions is offered (Crypto-PAn is invertible with the key; we do not
expose it). To re-identify, an analyst needs an active grant that targets the subscriber
and has ``allow_reveal`` (which policy must permit for the purpose). ``reveal`` computes
the target's pseudonym under the pseudonym's epoch and says whether they match. So a
reveal can only ever confirm an identity a signed grant already named; it cannot
enumerate who is behind arbitrary pseudonyms. Every call, match or not, is audited
(``pseudonym.revealed``) before the answer is returned: if the audit write fails, no
answer is given.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from trafficguard.errors import EscalationError
from trafficguard.escalation.audit import AuditLog
from trafficguard.escalation.grants import LoadedGrant
from trafficguard.privacy.pseudonym import Pseudonymizer, normalize_user, pseudonym_epoch

RevealOutcome = Literal["match", "no_match", "in_target_prefix"]


class RevealError(EscalationError):
    """The grant does not permit this reveal (inactive, no allow_reveal, bad candidate)."""


@dataclass(frozen=True, slots=True)
class RevealResult:
    outcome: RevealOutcome
    identity: str | None  # the grant's target (or candidate) when it matched
    epoch: int


def _compare(
    pseudonym: str, grant: LoadedGrant, pz: Pseudonymizer, epoch: int, candidate: str | None
) -> tuple[RevealOutcome, str | None]:
    t = grant.grant.target
    kind = pseudonym[0]
    if kind == "u" and t.kind in ("number", "sip_uri"):
        user = normalize_user(t.value)
        return ("match", t.value) if pz.user(user, epoch) == pseudonym else ("no_match", None)
    if kind == "t" and t.kind == "sip_uri":
        return ("match", t.value) if pz.token(t.value, epoch) == pseudonym else ("no_match", None)
    if kind == "a" and t.kind == "address":
        return ("match", t.value) if pz.address(t.value, epoch) == pseudonym else ("no_match", None)
    if kind == "a" and t.kind == "prefix":
        net = ipaddress.ip_network(t.value)
        if candidate is not None:
            addr = ipaddress.ip_address(candidate)
            if addr not in net:
                raise RevealError("candidate address is outside the grant's target prefix")
            if pz.address(str(addr), epoch) == pseudonym:
                return "match", str(addr)
            return "no_match", None
        anon = ipaddress.ip_network(pz.address_prefix(t.value, epoch).split(".", 1)[1])
        inside = ipaddress.ip_address(pseudonym.split(".", 1)[1]) in anon
        return ("in_target_prefix" if inside else "no_match"), None
    return "no_match", None


def reveal(
    pseudonym: str,
    grant: LoadedGrant,
    pseudonymizer: Pseudonymizer,
    now_ns: int,
    audit: AuditLog,
    *,
    requested_by: str,
    candidate: str | None = None,
) -> RevealResult:
    """Check whether ``pseudonym`` belongs to the grant's target (see module docstring).

    ``candidate`` names one address inside a prefix target; for other targets the
    target itself is the only candidate. Raises RevealError if the grant does not allow
    it, AuditWriteError if the audit entry cannot be written.
    """
    if not grant.active(now_ns):
        raise RevealError(f"grant {grant.id} is not active at this time")
    if not grant.grant.allow_reveal:
        raise RevealError(f"grant {grant.id} does not allow reveal")
    try:
        epoch = pseudonym_epoch(pseudonym)
        outcome, identity = _compare(pseudonym, grant, pseudonymizer, epoch, candidate)
    except ValueError as err:
        raise RevealError(str(err)) from None
    audit.append(
        "pseudonym.revealed",
        now_ns,
        {
            "grant": grant.id,
            "pseudonym": pseudonym,
            "outcome": outcome,
            "requested_by": requested_by,
        },
    )
    return RevealResult(outcome, identity, epoch)
