"""Public suffixes of names, from the Public Suffix List, without tldextract at run time.

``public_suffix_list.dat`` next to this module is an unmodified copy of the snapshot that
tldextract 5.4.0 bundles (publicsuffix.org list, VERSION 2025-04-07_15-51-09_UTC, commit
5fc8d12c; Mozilla Public License 2.0, as its header says).
tldextract imports requests and urllib3 (~76 ms of every start-up) for what is a trie
walk over this file; ``PublicSuffixList`` reads only the ICANN section, as
``TLDExtract(include_psl_private_domains=False)`` does, and walks the same trie the same
way — wildcard and exception rules, ``xn--`` labels decoded by ``idna`` — so the splits are
the same (``tests/unit/test_public_suffix.py`` checks it against tldextract over every
rule and hostile names). The list is parsed on first use, not at import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Final

LIST_PATH: Final = Path(__file__).with_name("public_suffix_list.dat")
# tldextract's rule pattern and section mark (suffix_list.py), so both read the same rules
_RULE: Final = re.compile(r"^(?P<suffix>[.*!]*\w[\S]*)", re.UNICODE | re.MULTILINE)
_PRIVATE_SECTION: Final = "// ===BEGIN PRIVATE DOMAINS==="


def icann_rules(text: str) -> list[str]:
    """The rules of the ICANN section of a list's text (``*.ck``, ``!www.ck``, ``co.uk``)."""
    return [m.group("suffix") for m in _RULE.finditer(text.partition(_PRIVATE_SECTION)[0])]


def _match_form(label: str) -> str:
    """A label as rules are written: lower case, punycode decoded (as tldextract does)."""
    lowered = label.lower()
    if lowered.startswith("xn--"):
        import idna  # noqa: PLC0415 - only for punycode labels: most runs never load it

        try:
            return str(idna.decode(lowered))
        except (UnicodeError, IndexError):
            pass
    return lowered


class _Node:
    __slots__ = ("children", "end")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.end = False  # a rule ends here


class PublicSuffixList:
    """A trie of rules, labels in reverse order (tldextract's ``Trie``, ICANN rules)."""

    __slots__ = ("_root",)

    def __init__(self, rules: Iterable[str]) -> None:
        self._root = _Node()
        for rule in rules:
            node = self._root
            for label in reversed(rule.split(".")):
                child = node.children.get(label)
                if child is None:
                    child = node.children[label] = _Node()
                node = child
            node.end = True

    def suffix_index(self, labels: list[str]) -> int | None:
        """Index in ``labels`` where the public suffix starts; None under no rule.

        tldextract's ``_PublicSuffixListTLDExtractor.suffix_index``: the longest matching
        rule, a wildcard taking one more label unless an exception rule names it.
        """
        node = self._root
        suffix = index = len(labels)
        for label in reversed(labels):
            key = _match_form(label)
            child = node.children.get(key)
            if child is not None:
                index -= 1
                node = child
                if node.end:
                    suffix = index
                continue
            if "*" in node.children:
                return index if "!" + key in node.children else index - 1
            break
        return None if suffix == len(labels) else suffix


@cache
def bundled_list() -> PublicSuffixList:
    """The list shipped with trafficguard (never fetched), parsed once per process."""
    return PublicSuffixList(icann_rules(LIST_PATH.read_text(encoding="utf-8")))
