"""The privacy edge: subscriber addresses become pseudonyms before any sink sees a record.

Detectors and the gate need clear addresses in memory, so the rewrite happens after the
last stage and before the sinks (``tail.Tail.emit`` calls the ``PrivacyEdge``). Which
fields hold addresses is decided once per record type from field names:

* ``ADDRESS_FIELDS`` (``src_addr``, ``dst_addr``, ``source``, ``target``, ...): a string
  that is an IP literal inside ``home_networks`` becomes ``a<epoch>.<Crypto-PAn>``;
  external addresses, pseudonyms and other strings are left as they are;
* ``ENDPOINT_LIST_FIELDS`` (``media``): ``"addr:port"`` / ``"[v6]:port"`` entries, the
  address part rewritten the same way.

The epoch is in every pseudonym's prefix (``a3.``, ``u3.``), so records need no
separate ``key_epoch`` field. A record type with none of these fields passes untouched
at the cost of one dict lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from trafficguard.privacy.pseudonym import Pseudonymizer

ADDRESS_FIELDS: Final = frozenset(
    {
        "src_addr",
        "dst_addr",
        "addr",
        "address",
        "source",
        "target",
        "src",
        "dst",
        "peer",
        "peer_addr",
        "client_addr",
        "server_addr",
        "subscriber_addr",
    }
)
ENDPOINT_LIST_FIELDS: Final = frozenset({"media"})


def _plan(rtype: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        fields = msgspec.structs.fields(rtype)
    except TypeError:
        return (), ()
    names = [f.name for f in fields]
    return (
        tuple(n for n in names if n in ADDRESS_FIELDS),
        tuple(n for n in names if n in ENDPOINT_LIST_FIELDS),
    )


class PrivacyEdge:
    """Callable record transform: ``edge(records) -> records`` with addresses pseudonymized."""

    __slots__ = ("_plans", "_pz", "rewritten")

    def __init__(self, pseudonymizer: Pseudonymizer) -> None:
        self._pz = pseudonymizer
        self._plans: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.rewritten = 0  # addresses replaced (plain int, for metrics/tests)

    def address(self, value: str) -> str:
        """Pseudonym of a subscriber address; anything else unchanged (never raises)."""
        try:
            out = self._pz.address(value)
        except ValueError:
            return value  # not an IP literal (a name, a pseudonym, a number pseudonym)
        if out != value:
            self.rewritten += 1
        return out

    def endpoint(self, value: str) -> str:
        """``addr:port`` or ``[v6]:port`` with the address part pseudonymized."""
        host, sep, port = value.rpartition(":")
        if not sep:
            return self.address(value)
        if host.startswith("[") and host.endswith("]"):
            return f"[{self.address(host[1:-1])}]:{port}"
        if ":" in host:  # bare IPv6 without a port
            return self.address(value)
        return f"{self.address(host)}:{port}"

    def __call__(self, records: Sequence[msgspec.Struct]) -> Sequence[msgspec.Struct]:
        plans = self._plans
        out: list[msgspec.Struct] | None = None
        for i, rec in enumerate(records):
            rtype = type(rec)
            plan = plans.get(rtype)
            if plan is None:
                plan = plans[rtype] = _plan(rtype)
            scalars, lists = plan
            if not scalars and not lists:
                continue
            changes: dict[str, object] = {}
            for name in scalars:
                value = getattr(rec, name)
                if isinstance(value, str):
                    new = self.address(value)
                    if new != value:
                        changes[name] = new
            for name in lists:
                value = getattr(rec, name)
                if isinstance(value, tuple | list):
                    new_list = tuple(self.endpoint(v) if isinstance(v, str) else v for v in value)
                    if new_list != tuple(value):
                        changes[name] = type(value)(new_list)
            if changes:
                if out is None:
                    out = list(records)
                out[i] = msgspec.structs.replace(rec, **changes)
        return records if out is None else out
