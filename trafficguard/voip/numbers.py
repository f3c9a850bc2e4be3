"""Subscriber identities in SIP: extract the user part, normalise it, classify it.

The class of a number (premium, international, emergency...) is what fraud and abuse
detection needs, and it must be decided *before* the number is pseudonymized, because a
keyed hash hides the prefix. So the tracker calls ``NumberClassifier.classify`` on the
raw user part, keeps the class and the pseudonym of the canonical form, and drops the
raw value.

Default plan (``NumberPlan()``), documented here because operators will tune it:

* visual separators ``- . ( ) space`` (RFC 3966) are removed first;
* ``emergency``: exactly one of 112, 911, 999, 110, 000 (after separators);
* ``premium``: starts with a configured prefix (900, 0900, 1900, +1900 by default),
  tested on the dialled form and on the canonical form;
* ``international``: starts with ``+`` or the international access prefix (``00``),
  unless ``country_code`` is set and the number is in that country;
* ``short_code``: at most ``short_code_max_digits`` (6) digits, ``*`` and ``#`` allowed
  (feature codes such as ``*67``);
* ``domestic``: any other all-digit number;
* ``non_numeric``: a SIP user name (``alice``); ``unknown``: no user part at all.

Canonical form (what gets pseudonymized): international numbers become ``+`` followed by
digits whichever way they were dialled (``+49 30 1234`` and ``0049301234`` give the same
pseudonym); with ``country_code`` set, a domestic number with the trunk prefix is also
written in E.164 (``030 1234`` → ``+49301234``). Non-numeric users are kept as written
(SIP user parts are case-sensitive).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

DOMESTIC: Final = "domestic"
INTERNATIONAL: Final = "international"
PREMIUM: Final = "premium"
EMERGENCY: Final = "emergency"
SHORT_CODE: Final = "short_code"
NON_NUMERIC: Final = "non_numeric"
UNKNOWN: Final = "unknown"
NUMBER_CLASSES: Final = (
    DOMESTIC,
    INTERNATIONAL,
    PREMIUM,
    EMERGENCY,
    SHORT_CODE,
    NON_NUMERIC,
    UNKNOWN,
)

_VISUAL_SEPARATORS: Final = str.maketrans("", "", "-.() \t")
_DIAL_CHARS: Final = frozenset("0123456789*#")


class NumberPlan(BaseModel):
    """Prefix table for classifying numbers; goes into the main config as is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    emergency: tuple[str, ...] = Field(
        ("112", "911", "999", "110", "000"), description="numbers that are emergency calls"
    )
    premium_prefixes: tuple[str, ...] = Field(
        ("900", "0900", "1900", "+1900"), description="premium-rate prefixes"
    )
    international_prefix: str = Field("00", description="international access prefix")
    country_code: str = Field(
        "", pattern=r"^[0-9]{0,3}$", description="home country code; '' = none"
    )
    trunk_prefix: str = Field("0", pattern=r"^[0-9]{0,2}$", description="national trunk prefix")
    short_code_max_digits: int = Field(6, ge=0, le=15)


def extract_user(value: str) -> str:
    """The user part of a ``sip:``/``sips:``/``tel:`` URI, name-addr or addr-spec.

    ``"Alice" <sip:+1-555-0100@example.com;user=phone>;tag=x`` → ``+1-555-0100``;
    ``tel:+15550100;phone-context=...`` → ``+15550100``; ``sip:example.com`` → ``""``.
    Percent-escapes are decoded; the password (``user:pw@``) is dropped.
    """
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt + 1)
        uri = value[lt + 1 : gt if gt >= 0 else len(value)]
    else:
        uri = value.split(";", 1)[0]
    uri = uri.strip()
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return ""
    scheme = scheme.lower()
    if scheme == "tel":
        return unquote(rest.split(";", 1)[0].strip())
    if scheme not in ("sip", "sips"):
        return ""
    at = rest.rfind("@")
    if at < 0:
        return ""
    userinfo = rest[:at]
    user = userinfo.split(":", 1)[0]  # drop a password
    user = user.split(";", 1)[0]  # drop user-parameters (RFC 3261 §19.1.1)
    return unquote(user)


def strip_separators(user: str) -> str:
    """Remove RFC 3966 visual separators (``- . ( )`` and spaces)."""
    return user.translate(_VISUAL_SEPARATORS)


class NumberClassifier:
    """Classifies a raw user part and gives the canonical form to pseudonymize.

    Everything derived from the plan (sorted prefix tuples) is built once here, so
    ``classify`` does no per-call setup.
    """

    __slots__ = ("_cc", "_emergency", "_intl", "_premium", "_short_max", "_trunk")

    def __init__(self, plan: NumberPlan | None = None) -> None:
        plan = plan or NumberPlan()
        self._emergency = frozenset(plan.emergency)
        # Longest prefixes first only matters for reporting; startswith on a tuple is OR.
        self._premium = tuple(sorted(plan.premium_prefixes, key=len, reverse=True))
        self._intl = plan.international_prefix
        self._cc = plan.country_code
        self._trunk = plan.trunk_prefix
        self._short_max = plan.short_code_max_digits

    def classify(self, user: str) -> tuple[str, str]:
        """(class, canonical form) of a raw user part; see the module docstring."""
        dialled = strip_separators(user)
        if not dialled:
            return UNKNOWN, ""
        plus = dialled[0] == "+"
        digits = dialled[1:] if plus else dialled
        if not digits or not _DIAL_CHARS.issuperset(digits):
            return NON_NUMERIC, user
        if "*" in digits or "#" in digits:
            if len(digits) <= self._short_max:
                return SHORT_CODE, digits
            return NON_NUMERIC, user
        intl = plus or bool(self._intl and digits.startswith(self._intl))
        if intl:
            national = digits if plus else digits[len(self._intl) :]
            canonical = "+" + national
        elif self._cc and self._trunk and digits.startswith(self._trunk):
            canonical = "+" + self._cc + digits[len(self._trunk) :]
        else:
            canonical = digits
        if not plus and digits in self._emergency:
            return EMERGENCY, digits
        if self._premium and (
            dialled.startswith(self._premium) or canonical.startswith(self._premium)
        ):
            return PREMIUM, canonical
        if intl:
            if self._cc and canonical.startswith("+" + self._cc):
                return DOMESTIC, canonical
            return INTERNATIONAL, canonical
        if len(digits) <= self._short_max:
            return SHORT_CODE, digits
        return DOMESTIC, canonical
