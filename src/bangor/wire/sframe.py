"""SFrame (RFC 9605) end-to-end media encryption, sans-I/O.

A frame is ``header || AEAD(plaintext)``; the header carries the key id (KID) and
the per-key counter (CTR) in the variable-length form of RFC 9605 section 4.3::

    config byte:  X(1) K(3) Y(1) C(3)
    X=0: KID = K (0..7)      X=1: KID follows in K+1 bytes, big-endian
    Y=0: CTR = C (0..7)      Y=1: CTR follows in C+1 bytes, big-endian

Keys come from a base key per KID (section 4.4.2): ``secret = HKDF-Extract("",
base_key)``, then key and salt are HKDF-Expanded with labels that bind the KID and
the cipher suite. The nonce is the salt XOR the CTR, and the AEAD's associated
data is the header followed by the caller's metadata (section 4.4.3).

Only AES_128_GCM_SHA256_128 (0x0004) is implemented; :class:`CipherSuite` holds
everything that differs between suites so another could be added as one value.

Bangor's KID layout (DESIGN.md "End-to-end") is ``sender index | generation | ratchet
step``, see :func:`make_kid`. Encryption and decryption run for every 20 ms voice
frame, so per-key state (AEAD object, salt as an int, encoded KID) is built once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from bangor.errors import LocalProtocolError, PacketError
from bangor.wire.replay import REPLAY_WINDOW, ReplayWindow

# --- wire limits (RFC 9605 section 4.3) ---------------------------------------
VALUE_LIMIT = 2**64  # KID and CTR are uint64
MAX_VALUE_BYTES = 8  # extended KID/CTR fields are 1..8 bytes
INLINE_LIMIT = 8  # values below this live in the config byte itself
CONFIG_SIZE = 1
MAX_HEADER_SIZE = CONFIG_SIZE + 2 * MAX_VALUE_BYTES
_X_BIT = 0x80  # KID is extended
_Y_BIT = 0x08  # CTR is extended
_K_SHIFT = 4
_LOW3 = 0x07

# --- key schedule labels (RFC 9605 sections 4.4.2 and 5.1) ---------------------
KEY_LABEL = b"SFrame 1.0 Secret key "
SALT_LABEL = b"SFrame 1.0 Secret salt "
RATCHET_LABEL = b"SFrame 1.0 Ratchet"
KID_LABEL_SIZE = 8
SUITE_LABEL_SIZE = 2
MIN_BASE_KEY_SIZE = 16  # anything shorter is too weak to be a base key

# --- Bangor's KID layout (DESIGN.md: KID = (generation << R) | ratchet step) -----
# Receivers look keys up by KID alone, so every sender in a room needs its own KID
# range: the room-assigned sender index takes the high bits. Eight bits of ratchet
# step allow 255 joins per generation (a leave always starts a new generation with
# fresh keys), and eight bits of generation are plenty because a receiver only
# keeps the current and just-previous keys; generations wrap modulo 256. Low
# indexes keep the KID short on the wire (sender 0..255 fits in 3 bytes).
RATCHET_STEP_BITS = 8
GENERATION_BITS = 8
SENDER_INDEX_BITS = 64 - GENERATION_BITS - RATCHET_STEP_BITS
_GENERATION_SHIFT = RATCHET_STEP_BITS
_SENDER_SHIFT = GENERATION_BITS + RATCHET_STEP_BITS


class _Aead(Protocol):
    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CipherSuite:
    """One row of the SFrame cipher suite registry (RFC 9605 section 4.5)."""

    suite_id: int
    key_size: int  # Nk
    nonce_size: int  # Nn
    tag_size: int  # Nt
    hash_size: int  # Nh
    hash: Callable[[], hashes.HashAlgorithm]
    aead: Callable[[bytes], _Aead]


AES_128_GCM_SHA256_128 = CipherSuite(
    suite_id=0x0004,
    key_size=16,
    nonce_size=12,
    tag_size=16,
    hash_size=32,
    hash=hashes.SHA256,
    aead=AESGCM,
)
CIPHER_SUITES: dict[int, CipherSuite] = {
    AES_128_GCM_SHA256_128.suite_id: AES_128_GCM_SHA256_128,
}
DEFAULT_SUITE = AES_128_GCM_SHA256_128


# --- header -------------------------------------------------------------------


def _check_value(name: str, value: int) -> None:
    if not 0 <= value < VALUE_LIMIT:
        raise LocalProtocolError(f"SFrame {name} {value} is outside 0..2**64-1")


def _encode_value(value: int, shift: int, ext_bit: int) -> tuple[int, bytes]:
    """Config-byte bits and extension bytes for one KID or CTR value."""
    if value < INLINE_LIMIT:
        return value << shift, b""
    size = (value.bit_length() + 7) >> 3
    return ext_bit | ((size - 1) << shift), value.to_bytes(size, "big")


def _parse_header(data: bytes) -> tuple[int, int, int]:
    """(kid, ctr, header length) from the start of ``data``; PacketError if malformed."""
    if not data:
        raise PacketError("truncated SFrame header: empty frame")
    config = data[0]
    pos = CONFIG_SIZE
    k = (config >> _K_SHIFT) & _LOW3
    if config & _X_BIT:
        end = pos + k + 1
        if len(data) < end:
            raise PacketError("truncated SFrame header: KID cut short")
        kid = int.from_bytes(data[pos:end], "big")
        # Only the minimal encoding is accepted, so each (KID, CTR) has one header.
        if kid < INLINE_LIMIT or data[pos] == 0:
            raise PacketError("malformed SFrame header: KID not minimally encoded")
        pos = end
    else:
        kid = k
    c = config & _LOW3
    if config & _Y_BIT:
        end = pos + c + 1
        if len(data) < end:
            raise PacketError("truncated SFrame header: CTR cut short")
        ctr = int.from_bytes(data[pos:end], "big")
        if ctr < INLINE_LIMIT or data[pos] == 0:
            raise PacketError("malformed SFrame header: CTR not minimally encoded")
        pos = end
    else:
        ctr = c
    return kid, ctr, pos


@dataclass(frozen=True, slots=True)
class SFrameHeader:
    """An SFrame header: key id and counter, both uint64."""

    kid: int
    ctr: int

    def __post_init__(self) -> None:
        _check_value("KID", self.kid)
        _check_value("CTR", self.ctr)

    def serialize(self) -> bytes:
        kid_bits, kid_bytes = _encode_value(self.kid, _K_SHIFT, _X_BIT)
        ctr_bits, ctr_bytes = _encode_value(self.ctr, 0, _Y_BIT)
        return bytes((kid_bits | ctr_bits,)) + kid_bytes + ctr_bytes

    @classmethod
    def parse(cls, data: bytes) -> tuple[SFrameHeader, int]:
        """Header at the start of ``data`` and its length in bytes."""
        kid, ctr, size = _parse_header(data)
        return cls(kid, ctr), size


# --- key schedule ---------------------------------------------------------------


def _extract(base_key: bytes, suite: CipherSuite) -> bytes:
    # HKDF-Extract with an empty salt is HMAC keyed with the empty string.
    mac = hmac.HMAC(b"", suite.hash())
    mac.update(base_key)
    return mac.finalize()


def _expand(secret: bytes, label: bytes, length: int, suite: CipherSuite) -> bytes:
    return HKDFExpand(suite.hash(), length, label).derive(secret)


def derive_key_salt(
    base_key: bytes, kid: int, suite: CipherSuite = DEFAULT_SUITE
) -> tuple[bytes, bytes]:
    """(sframe_key, sframe_salt) for ``kid`` per RFC 9605 section 4.4.2."""
    _check_value("KID", kid)
    secret = _extract(base_key, suite)
    context = kid.to_bytes(KID_LABEL_SIZE, "big") + suite.suite_id.to_bytes(SUITE_LABEL_SIZE, "big")
    key = _expand(secret, KEY_LABEL + context, suite.key_size, suite)
    salt = _expand(secret, SALT_LABEL + context, suite.nonce_size, suite)
    return key, salt


def ratchet(base_key: bytes, suite: CipherSuite = DEFAULT_SUITE) -> bytes:
    """Next base key in a sender's hash ratchet (one step forward, never back).

    RFC 9605 section 5.1 (in the spirit of MLS's secret-tree ratchets) gives
    ``base_key[i+1] = HKDF-Expand(HKDF-Extract("", base_key[i]), "SFrame 1.0
    Ratchet", Nh)``; this follows it exactly (extract first, Nh = 32 bytes out) so
    a member who joins after step i cannot recover keys before it.
    """
    return _expand(_extract(base_key, suite), RATCHET_LABEL, suite.hash_size, suite)


# --- Bangor KID layout ----------------------------------------------------------


def make_kid(sender_index: int, generation: int, step: int) -> int:
    """KID = sender_index << 16 | generation << 8 | ratchet step."""
    if not 0 <= sender_index < 1 << SENDER_INDEX_BITS:
        raise LocalProtocolError(f"sender index {sender_index} does not fit in a KID")
    if not 0 <= generation < 1 << GENERATION_BITS:
        raise LocalProtocolError(f"key generation {generation} does not fit in a KID")
    if not 0 <= step < 1 << RATCHET_STEP_BITS:
        raise LocalProtocolError(f"ratchet step {step} does not fit in a KID")
    return (sender_index << _SENDER_SHIFT) | (generation << _GENERATION_SHIFT) | step


def split_kid(kid: int) -> tuple[int, int, int]:
    """(sender index, generation, ratchet step) of a KID built by :func:`make_kid`."""
    _check_value("KID", kid)
    return (
        kid >> _SENDER_SHIFT,
        (kid >> _GENERATION_SHIFT) & ((1 << GENERATION_BITS) - 1),
        kid & ((1 << RATCHET_STEP_BITS) - 1),
    )


# --- per-key state --------------------------------------------------------------


class SFrameKey:
    """Derived key material for one KID, with the AEAD object built once."""

    __slots__ = ("_aead", "_kid_bits", "_kid_bytes", "_nonce_size", "_salt", "kid", "suite")

    def __init__(self, kid: int, base_key: bytes, suite: CipherSuite = DEFAULT_SUITE) -> None:
        if len(base_key) < MIN_BASE_KEY_SIZE:
            raise LocalProtocolError(f"SFrame base key must be at least {MIN_BASE_KEY_SIZE} bytes")
        key, salt = derive_key_salt(base_key, kid, suite)
        self.kid = kid
        self.suite = suite
        self._aead = suite.aead(key)
        self._salt = int.from_bytes(salt, "big")
        self._nonce_size = suite.nonce_size
        self._kid_bits, self._kid_bytes = _encode_value(kid, _K_SHIFT, _X_BIT)

    def nonce(self, ctr: int) -> bytes:
        """salt XOR CTR (left-padded to the nonce size), RFC 9605 section 4.4.3."""
        return (self._salt ^ ctr).to_bytes(self._nonce_size, "big")

    def header(self, ctr: int) -> bytes:
        """Encoded header for this KID and ``ctr`` (same bytes as SFrameHeader.serialize)."""
        if ctr < INLINE_LIMIT:
            return bytes((self._kid_bits | ctr,)) + self._kid_bytes
        size = (ctr.bit_length() + 7) >> 3
        return (
            bytes((self._kid_bits | _Y_BIT | (size - 1),))
            + self._kid_bytes
            + ctr.to_bytes(size, "big")
        )

    def seal(self, ctr: int, metadata: bytes, plaintext: bytes) -> bytes:
        """Complete frame: header || ciphertext || tag. The caller owns CTR uniqueness."""
        _check_value("CTR", ctr)
        header = self.header(ctr)
        return header + self._aead.encrypt(self.nonce(ctr), plaintext, header + metadata)

    def open(self, ctr: int, header: bytes, metadata: bytes, ciphertext: bytes) -> bytes:
        """Plaintext of ``ciphertext`` (with tag); PacketError if it does not verify."""
        if len(ciphertext) < self.suite.tag_size:
            raise PacketError("truncated SFrame frame: shorter than the tag")
        try:
            return self._aead.decrypt(self.nonce(ctr), ciphertext, header + metadata)
        except InvalidTag:
            raise PacketError("SFrame authentication failed") from None


class _SendState:
    __slots__ = ("ctr", "key")

    def __init__(self, key: SFrameKey) -> None:
        self.key = key
        self.ctr = 0


class _ReceiveState:
    __slots__ = ("base_key", "key", "window")

    def __init__(self, key: SFrameKey, base_key: bytes, window: int) -> None:
        self.key = key
        self.base_key = base_key
        self.window = ReplayWindow(window)


class SFrameContext:
    """Send and receive keys of one participant, indexed by KID.

    A send key's CTR starts at 0 and must never repeat under the same key, so a
    KID once used for sending can never be added again to this context, and a
    base key must never be used for sending by two contexts.
    """

    __slots__ = ("_receive", "_replay_window", "_retired_send", "_send", "_send_limit", "suite")

    def __init__(
        self,
        suite: CipherSuite = DEFAULT_SUITE,
        *,
        send_limit: int = VALUE_LIMIT,
        replay_window: int = REPLAY_WINDOW,
    ) -> None:
        """``send_limit``: frames per send key (lower it to rotate keys sooner)."""
        if not 0 < send_limit <= VALUE_LIMIT:
            raise LocalProtocolError("SFrame send limit must be in 1..2**64")
        self.suite = suite
        self._send_limit = send_limit
        self._replay_window = replay_window
        self._send: dict[int, _SendState] = {}
        self._retired_send: set[int] = set()
        self._receive: dict[int, _ReceiveState] = {}

    def add_send_key(self, kid: int, base_key: bytes) -> None:
        if kid in self._send or kid in self._retired_send:
            raise LocalProtocolError(f"SFrame send key {kid} was already used (nonce reuse)")
        self._send[kid] = _SendState(SFrameKey(kid, base_key, self.suite))

    def remove_send_key(self, kid: int) -> None:
        """Forget a send key (forward secrecy); its KID stays unusable for sending."""
        if self._send.pop(kid, None) is None:
            raise LocalProtocolError(f"no SFrame send key {kid}")
        self._retired_send.add(kid)

    def add_receive_key(self, kid: int, base_key: bytes) -> None:
        """Install a receive key; re-adding the same key keeps its replay window."""
        old = self._receive.get(kid)
        if old is not None:
            if old.base_key == base_key:
                return
            raise LocalProtocolError(f"SFrame receive key {kid} exists with other key material")
        key = SFrameKey(kid, base_key, self.suite)
        self._receive[kid] = _ReceiveState(key, bytes(base_key), self._replay_window)

    def remove_receive_key(self, kid: int) -> None:
        if self._receive.pop(kid, None) is None:
            raise LocalProtocolError(f"no SFrame receive key {kid}")

    def encrypt(self, kid: int, metadata: bytes, plaintext: bytes) -> bytes:
        state = self._send.get(kid)
        if state is None:
            raise LocalProtocolError(f"no SFrame send key {kid}")
        ctr = state.ctr
        if ctr >= self._send_limit:
            raise LocalProtocolError(f"SFrame send key {kid} is exhausted: add a new key")
        state.ctr = ctr + 1
        return state.key.seal(ctr, metadata, plaintext)

    def decrypt(self, metadata: bytes, frame: bytes) -> tuple[int, bytes]:
        """(KID, plaintext) of ``frame``; PacketError if unknown, forged or replayed."""
        kid, ctr, size = _parse_header(frame)
        state = self._receive.get(kid)
        if state is None:
            raise PacketError("unknown SFrame key id")
        plaintext = state.key.open(ctr, frame[:size], metadata, frame[size:])
        # Only after the tag verified, so forgeries cannot move the window.
        if not state.window.accept(ctr):
            raise PacketError("replayed SFrame counter")
        return kid, plaintext
