"""The C core's ``b32_head`` spells a digest exactly as ``pseudonym._spell`` does.

Every token and user pseudonym ends in this text, so the compiled copy must give the same
22 characters for any digest (of 14 bytes or more: only the first 110 bits are spelled),
and refuse what the reference cannot spell instead of reading past the buffer.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficguard.fast import available
from trafficguard.privacy import pseudonym
from trafficguard.privacy.pseudonym import _spell

pytestmark = pytest.mark.usefixtures("fast_core")  # fails, not skips, without the core

if available():
    from trafficguard.fast._core import b32_head


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=14, max_size=64))
def test_b32_head_matches_reference(digest: bytes) -> None:
    expected = base64.b32encode(digest[:15])[:22].lower().decode("ascii")
    assert b32_head(digest) == _spell(digest) == expected


def test_b32_head_refuses_short_and_non_bytes() -> None:
    for short in (b"", b"\xff" * 13):
        with pytest.raises(ValueError, match="14 bytes"):
            b32_head(short)
    with pytest.raises(TypeError):
        b32_head(bytearray(32))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        b32_head("a" * 32)  # type: ignore[arg-type]


def test_pseudonyms_use_the_core() -> None:
    assert pseudonym._spell_digest is b32_head
