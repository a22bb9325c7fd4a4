"""Password hashing: Argon2id with the OWASP-recommended parameters.

Hashing is slow on purpose (tens of milliseconds, 19 MiB); async callers run these
functions through :class:`bangor.server.hashing.HashPool`, a few at a time, so the event
loop keeps serving and memory stays bounded.
Neither passwords nor hashes ever appear in an exception message.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bangor.errors import StoreError

# OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1.
MEMORY_COST_KIB = 19_456
TIME_COST = 2
PARALLELISM = 1
HASH_LEN = 32
SALT_LEN = 16

MIN_PASSWORD_LEN = 1
# A cap keeps a hostile client from making the server hash megabytes.
MAX_PASSWORD_LEN = 1024

_hasher = PasswordHasher(
    time_cost=TIME_COST,
    memory_cost=MEMORY_COST_KIB,
    parallelism=PARALLELISM,
    hash_len=HASH_LEN,
    salt_len=SALT_LEN,
    type=Type.ID,
)


def check_password(password: str) -> None:
    """Raise :class:`StoreError` unless the password has an acceptable length."""
    if not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        raise StoreError(f"password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters")


def hash_password(password: str) -> str:
    """Return an encoded Argon2id hash (PHC string with salt and parameters)."""
    check_password(password)
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Tell whether the password matches; False on any mismatch, never raises for one.

    A corrupt stored hash raises :class:`StoreError` (without quoting the hash),
    since that is a broken database, not a wrong password.
    """
    if not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        # Such a password can never have been stored.
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except VerifyMismatchError:
        return False
    except (InvalidHashError, VerificationError):
        # libargon2 could not decode the hash: a broken row, not a wrong password.
        raise StoreError("a stored password hash is corrupt") from None


def needs_rehash(stored_hash: str) -> bool:
    """Tell whether the hash was made with other parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except (InvalidHashError, ValueError):
        return True


# Stored instead of a hash for names that cannot log in with a password (open-mode
# users): no Argon2 output starts with "!", and making one costs no hash.
DISABLED_HASH = "!no password"


def is_disabled(stored_hash: str) -> bool:
    """Tell whether a stored value is :data:`DISABLED_HASH` (no password can match)."""
    return stored_hash.startswith("!")


def new_dummy_hash() -> str:
    """A hash of a random password nobody knows, verified against for unknown users.

    Spending one verify on a missing account keeps login timing from telling whether a
    user name exists. The store makes one when it starts serving logins, not at the
    first unknown name (a burst of those would each make one).
    """
    return _hasher.hash(secrets.token_urlsafe(24))
