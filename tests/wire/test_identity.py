"""Safety numbers and identity fingerprints."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from bangor.errors import LocalProtocolError
from bangor.wire.identity import identity_fingerprint, safety_number
from bangor.wire.noise import fingerprint, format_fingerprint, generate_static_key, public_key

# X25519 public keys of Alice and Bob from RFC 7748 section 6.1.
ALICE = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
# Pinned once from the implementation, and checked against _reference() below.
ALICE_BOB = "06702 77904 88299 08348 61971 47012 11510 59606"

SHAPE = re.compile(r"\d{5}( \d{5}){7}")


def _reference(a: bytes, b: bytes) -> str:
    """Straight from the description: Signal's NumericFingerprint, no user id, 4 groups."""

    def half(key: bytes) -> list[str]:
        h = b"\x00\x00" + key
        for _ in range(5200):
            h = hashlib.sha512(h + key).digest()
        return [str(int.from_bytes(h[i : i + 5], "big") % 100000).zfill(5) for i in (0, 5, 10, 15)]

    first, second = sorted([half(a), half(b)])
    return " ".join(first + second)


def test_known_answer() -> None:
    assert safety_number(ALICE, BOB) == ALICE_BOB
    assert _reference(ALICE, BOB) == ALICE_BOB


def test_matches_reference_for_random_keys() -> None:
    for _ in range(3):
        a, b = os.urandom(32), os.urandom(32)
        assert safety_number(a, b) == _reference(a, b)


def test_symmetric_and_shaped() -> None:
    a = public_key(generate_static_key())
    b = public_key(generate_static_key())
    assert safety_number(a, b) == safety_number(b, a)
    assert SHAPE.fullmatch(safety_number(a, b))
    assert SHAPE.fullmatch(safety_number(a, a))


def test_either_key_changes_the_number() -> None:
    base = safety_number(ALICE, BOB)
    other = public_key(generate_static_key())
    assert safety_number(other, BOB) != base
    assert safety_number(ALICE, other) != base
    flipped = bytes([BOB[0] ^ 1]) + BOB[1:]  # one bit is enough
    assert safety_number(ALICE, flipped) != base


def _halves(number: str) -> set[str]:
    groups = number.split()
    return {" ".join(groups[:4]), " ".join(groups[4:])}


def test_each_half_depends_on_one_key_only() -> None:
    # Alice's half is in every number she is part of: a MITM must match it exactly.
    with_bob = _halves(safety_number(ALICE, BOB))
    with_other = _halves(safety_number(ALICE, os.urandom(32)))
    assert len(with_bob & with_other) == 1


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_wrong_key_length_refused(bad: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        safety_number(bad, BOB)
    with pytest.raises(LocalProtocolError):
        safety_number(ALICE, bad)
    with pytest.raises(LocalProtocolError):
        identity_fingerprint(bad)


def test_identity_fingerprint() -> None:
    assert identity_fingerprint(ALICE) == format_fingerprint(fingerprint(ALICE))
    assert identity_fingerprint(ALICE) == "156c:329c:9ca9:dea7:d5cd:d2c4:e5c3:b25f"
