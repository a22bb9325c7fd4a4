"""Tests for bangor.server.passwords (Argon2id hashing)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type

from bangor.errors import StoreError
from bangor.server import passwords
from bangor.server.passwords import hash_password, needs_rehash, verify_password


def test_round_trip_and_owasp_parameters() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horsf")
    assert not needs_rehash(stored)


def test_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_unicode_password() -> None:
    stored = hash_password("pässwörd 🔑")
    assert verify_password(stored, "pässwörd 🔑")
    assert not verify_password(stored, "passwort 🔑")


@pytest.mark.parametrize("password", ["", "x" * 1025])
def test_length_limits(password: str) -> None:
    with pytest.raises(StoreError, match=r"^password must be 1 to 1024 characters$"):
        hash_password(password)


def test_longest_password_accepted_and_overlong_never_verifies() -> None:
    stored = hash_password("y" * 1024)
    assert verify_password(stored, "y" * 1024)
    assert not verify_password(stored, "y" * 1025)
    assert not verify_password(stored, "")


def test_needs_rehash_for_weaker_parameters_and_garbage() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID).hash("pw")
    assert needs_rehash(weak)
    assert verify_password(weak, "pw")  # old hashes keep working until rehashed
    assert needs_rehash("not a hash")


def test_corrupt_hash_raises_without_quoting_it() -> None:
    corrupt = "$argon2id$v=19$garbage-SECRETHASH"
    with pytest.raises(StoreError) as info:
        verify_password(corrupt, "pw")
    assert "SECRETHASH" not in str(info.value)


def test_dummy_hash_is_valid_and_of_a_password_nobody_knows() -> None:
    dummy = passwords.new_dummy_hash()
    assert not needs_rehash(dummy)  # same parameters, so the same work as a real check
    assert not verify_password(dummy, "anything")
    assert passwords.new_dummy_hash() != dummy


def test_disabled_marker_is_no_argon2_hash() -> None:
    assert passwords.is_disabled(passwords.DISABLED_HASH)
    assert not passwords.is_disabled(hash_password("pw"))
