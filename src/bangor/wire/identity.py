"""Member identity: safety numbers and fingerprints (pure functions, no I/O).

Each device has a long-term X25519 identity key. Two members check that they
talk to each other (and not to someone in between) by comparing a *safety
number* out of band, e.g. reading it aloud on the call. It is built like
Signal's NumericFingerprint: each side's half comes from that side's public key
alone, so both ends compute the same two halves and, sorted, the same string.

Security level: a half is 4 groups of 5 decimal digits, 10**20 values, about
66.4 bits. To pass as Alice to Bob, a man in the middle needs a key pair whose
half equals Alice's half (a second preimage, not a collision: Alice's key is
fixed before the attacker starts), and one for Bob too. Each try costs an X25519
key generation plus ITERATIONS (5200, about 2**12.3) SHA-512 calls, so about
2**78 work per side, and both sides must be matched. That is short enough to
read out in a few seconds yet far beyond a practical search, even with months to
prepare against long-term keys. (An attacker content to impersonate *any* of N
members gains a factor N; for the small groups Bangor is built for, that is small.)
"""

from __future__ import annotations

import hashlib

from bangor.errors import LocalProtocolError
from bangor.wire.noise import KEY_SIZE, fingerprint, format_fingerprint

# Bumped if the derivation changes, so old and new numbers never look comparable.
VERSION = 0
VERSION_BYTES = VERSION.to_bytes(2, "big")
ITERATIONS = 5200  # Signal's work factor: slows a search for a matching half
GROUP_BYTES = 5  # 40 bits reduced mod 10**5: bias is under 1 in 10**7
GROUP_DIGITS = 5
GROUP_MODULUS = 10**GROUP_DIGITS
HALF_GROUPS = 4  # per side: 20 digits, ~66 bits
GROUPS = 2 * HALF_GROUPS


def _check_public(public: bytes) -> None:
    if len(public) != KEY_SIZE:
        raise LocalProtocolError(f"identity public key must be {KEY_SIZE} bytes, not {len(public)}")


def _half(public: bytes) -> str:
    """One side's 20 digits, from its own public key only."""
    # Like Signal: h starts as version || key, then h = SHA512(h || key), ITERATIONS
    # times. Signal also hashes a stable user id; we have none that both
    # sides agree on (names are per server), so the key stands alone.
    digest = VERSION_BYTES + public
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + public).digest()
    groups = []
    for i in range(HALF_GROUPS):
        chunk = digest[i * GROUP_BYTES : (i + 1) * GROUP_BYTES]
        groups.append(f"{int.from_bytes(chunk, 'big') % GROUP_MODULUS:0{GROUP_DIGITS}d}")
    return " ".join(groups)


def safety_number(local_public: bytes, remote_public: bytes) -> str:
    """The safety number two members compare: 8 groups of 5 digits, same on both ends."""
    _check_public(local_public)
    _check_public(remote_public)
    # Sorted so that each side, which passes its own key first, gets the same string.
    return " ".join(sorted((_half(local_public), _half(remote_public))))


def identity_fingerprint(public: bytes) -> str:
    """A member's key fingerprint in the same printed form as server fingerprints."""
    _check_public(public)
    return format_fingerprint(fingerprint(public))
