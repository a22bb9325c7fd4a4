"""End-to-end pairwise channel between two members of a room (sans-I/O).

The server relays pair messages as opaque bytes. It cannot join a channel or sit
in the middle of one because it does not know the room secret (from the invite
code), which enters the handshake as a Noise PSK. Each member's long-term device
identity key (X25519) is its Noise static key, so each side learns and
authenticates the other's identity.

Handshake: ``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s`` with prologue
:func:`pair_prologue` (room id and both session ids: the server cannot splice
handshakes between pairs) and PSK :func:`derive_room_psk`.

Every pair message starts with one :class:`MessageKind` byte::

    HS1     0x01 || Noise msg 1 (-> e)                48 bytes: e(32) tag(16)
    HS2     0x02 || Noise msg 2 (<- e, ee, s, es)     96 bytes: e(32) s(32+16) tag(16)
    HS3     0x03 || Noise msg 3 (-> s, se, psk)       s(32+16) then the encrypted payload:
                    channel secret (32) || initiator hello, + tag(16)
    DATA    0x04 || counter (8, big-endian) || ChaCha20-Poly1305(payload) + tag(16)
    REJECT  0x05                                       no body

HS1 and HS2 carry empty payloads. DATA: the nonce is 4 zero bytes || counter,
the associated data is the first 9 bytes (kind and counter). Each direction has
its own key, ``HKDF-SHA256(ikm=channel secret, salt=Noise handshake hash,
info=b"bangor/1 pair i2r" or b"bangor/1 pair r2i")``, its own counter starting
at 0 that never repeats, and a :class:`ReplayWindow` on the receiving side that
moves only after a tag verified, so duplicated, replayed or reordered DATA is
handled. No pair message is longer than ``settings.MAX_PEER_MESSAGE``.

Why this shape:

* In XXpsk3 the PSK is mixed in at the end of message 3. The initiator proves
  the room secret with HS3; the responder proves it only with its first message
  under keys that depend on HS3. So the responder's first DATA message is its
  key confirmation and carries its hello; the initiator reports the peer as
  verified only when that message decrypts.
* Noise promises the handshake hash is unique, not secret (for plain XX anyone
  can compute it from the transcript), and ``noiseprotocol``'s own transport
  needs in-order delivery. So DATA keys come from a channel secret the initiator
  chooses and sends inside HS3, encrypted under keys that include every DH and
  the PSK; the handshake hash only salts the derivation to bind the keys to
  this handshake.
* REJECT is an unauthenticated "I could not verify you" from the responder when
  HS3 fails to decrypt (different room secret), so the initiator can say so
  instead of waiting for a timeout. A relay can forge one; it could as well drop
  everything. HS1/HS2 failures send no REJECT: the PSK is not involved yet, so
  only tampering or splicing causes them.

Errors: a handshake message that fails to decrypt fails the channel for good
(the Noise state has consumed it). Messages that are malformed, out of place,
forged or replayed raise :class:`PeerError` and change nothing, so a relay that
injects garbage cannot kill a working channel.
"""

from __future__ import annotations

import secrets
import struct
import warnings
from dataclasses import dataclass
from enum import Enum, IntEnum, auto
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from noise.connection import Keypair, NoiseConnection

from bangor import settings
from bangor.errors import LocalProtocolError, PeerAuthError, PeerError
from bangor.wire.noise import KEY_SIZE, TAG_SIZE
from bangor.wire.replay import ReplayWindow

PAIR_PROTOCOL_NAME = b"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s"
CHANNEL_SECRET_SIZE = 32
# X25519 keys are noise.KEY_SIZE and ChaChaPoly tags noise.TAG_SIZE, as in the control channel.
PSK_SIZE = 32  # Noise PSKs are always 32 bytes
DATA_KEY_SIZE = 32  # the ChaCha20-Poly1305 keys of DATA messages
KIND_SIZE = 1
COUNTER_SIZE = 8
DATA_HEADER_SIZE = KIND_SIZE + COUNTER_SIZE
MAX_MESSAGE = settings.MAX_PEER_MESSAGE
MAX_DATA_PAYLOAD = MAX_MESSAGE - DATA_HEADER_SIZE - TAG_SIZE
# HS3 is the tightest fit for a hello: kind, encrypted s, channel secret, tag.
MAX_HELLO = MAX_MESSAGE - KIND_SIZE - (KEY_SIZE + TAG_SIZE) - CHANNEL_SECRET_SIZE - TAG_SIZE
MAX_COUNTER = 2**64 - 1

ROOM_PSK_INFO = b"bangor/1 room psk"
JOIN_TOKEN_INFO = b"bangor/1 join token"
JOIN_TOKEN_SIZE = 32
PAIR_PROLOGUE_PREFIX = b"bangor/1 pair "
PAIR_KDF_INFO_I2R = b"bangor/1 pair i2r"
PAIR_KDF_INFO_R2I = b"bangor/1 pair r2i"

_SESSIONS = struct.Struct(">II")
_COUNTER = struct.Struct(">Q")
_NONCE_PAD = bytes(4)


class MessageKind(IntEnum):
    """First byte of every pair message."""

    HS1 = 1
    HS2 = 2
    HS3 = 3
    DATA = 4
    REJECT = 5


_KINDS: dict[int, MessageKind] = {k.value: k for k in MessageKind}

# Shortest Noise message each handshake step can produce (empty payload). Shorter
# ones are refused before they reach Noise, so they do not consume its state.
_NOISE_MIN: dict[MessageKind, int] = {
    MessageKind.HS1: KEY_SIZE + TAG_SIZE,
    MessageKind.HS2: KEY_SIZE + (KEY_SIZE + TAG_SIZE) + TAG_SIZE,
    MessageKind.HS3: (KEY_SIZE + TAG_SIZE) + TAG_SIZE,
}


def derive_room_psk(secret: bytes, room_id: bytes) -> bytes:
    """The room's Noise PSK: HKDF-SHA256(ikm=secret, salt=room_id, info="bangor/1 room psk")."""
    if not secret:
        raise LocalProtocolError("room secret is empty")
    return HKDF(
        algorithm=hashes.SHA256(), length=PSK_SIZE, salt=room_id, info=ROOM_PSK_INFO
    ).derive(secret)


def derive_join_token(secret: bytes, room_id: bytes) -> bytes:
    """What a joiner shows the server (PROTOCOL.md 3.15): HKDF-SHA256(ikm=secret,
    salt=room_id, info="bangor/1 join token"). One-way, and under its own label, so the
    server that checks it learns neither the secret nor the PSK."""
    if not secret:
        raise LocalProtocolError("room secret is empty")
    return HKDF(
        algorithm=hashes.SHA256(), length=JOIN_TOKEN_SIZE, salt=room_id, info=JOIN_TOKEN_INFO
    ).derive(secret)


def pair_prologue(room_id: bytes, initiator_session: int, responder_session: int) -> bytes:
    """Noise prologue binding a channel to its room and to both members' sessions."""
    try:
        sessions = _SESSIONS.pack(initiator_session, responder_session)
    except struct.error:
        raise LocalProtocolError("session id out of range") from None
    # The session ids have a fixed size at the end, so room ids of any length stay unambiguous.
    return PAIR_PROLOGUE_PREFIX + room_id + sessions


@dataclass(frozen=True)
class PeerVerified:
    """The peer proved the room secret and its identity key; ``hello`` is authenticated."""

    remote_identity: bytes
    hello: bytes


@dataclass(frozen=True)
class PeerMessage:
    """One decrypted DATA message."""

    payload: bytes


PairEvent = PeerVerified | PeerMessage


class _State(Enum):
    IDLE = auto()  # initiator before start()
    AWAIT_HS1 = auto()  # responder
    AWAIT_HS2 = auto()  # initiator
    AWAIT_HS3 = auto()  # responder
    AWAIT_CONFIRM = auto()  # initiator: HS3 sent, waiting for the responder's first DATA
    ESTABLISHED = auto()
    FAILED = auto()


def _hkdf_key(channel_secret: bytes, handshake_hash: bytes, info: bytes) -> ChaCha20Poly1305:
    key = HKDF(
        algorithm=hashes.SHA256(), length=DATA_KEY_SIZE, salt=handshake_hash, info=info
    ).derive(channel_secret)
    return ChaCha20Poly1305(key)


def _check_size(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise LocalProtocolError(f"{name} must be {size} bytes")


class PairChannel:
    """One end of an end-to-end channel with another member of the room."""

    def __init__(
        self,
        *,
        initiator: bool,
        identity_private: bytes,
        psk: bytes,
        prologue: bytes,
        hello: bytes,
        ephemeral_private: bytes | None = None,
        channel_secret: bytes | None = None,
    ) -> None:
        _check_size("identity key", identity_private, KEY_SIZE)
        _check_size("room PSK", psk, PSK_SIZE)
        if len(hello) > MAX_HELLO:
            raise LocalProtocolError(f"hello of {len(hello)} bytes exceeds {MAX_HELLO}")
        if channel_secret is not None:
            if not initiator:
                raise LocalProtocolError("only the initiator chooses the channel secret")
            if len(channel_secret) != CHANNEL_SECRET_SIZE:
                raise LocalProtocolError(f"channel secret must be {CHANNEL_SECRET_SIZE} bytes")
        if ephemeral_private is not None:
            _check_size("ephemeral key", ephemeral_private, KEY_SIZE)
        self._initiator = initiator
        self._hello = bytes(hello)
        self._state = _State.IDLE if initiator else _State.AWAIT_HS1
        self._outgoing: list[bytes] = []
        # The initiator chooses the channel secret; the responder learns it from HS3.
        self._channel_secret = b""
        if initiator:
            self._channel_secret = (
                secrets.token_bytes(CHANNEL_SECRET_SIZE)
                if channel_secret is None
                else bytes(channel_secret)
            )
        self._remote_static: bytes | None = None
        self._peer_hello = b""
        self._handshake_hash = b""
        self._send_aead: ChaCha20Poly1305 | None = None
        self._recv_aead: ChaCha20Poly1305 | None = None
        self._send_counter = 0
        self._window = ReplayWindow()

        conn: Any = NoiseConnection.from_name(PAIR_PROTOCOL_NAME)
        if initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.set_prologue(bytes(prologue))
        conn.set_psks(psk=bytes(psk))
        conn.set_keypair_from_private_bytes(Keypair.STATIC, bytes(identity_private))
        with warnings.catch_warnings():
            # noiseprotocol warns when an ephemeral is fixed; only tests do that.
            warnings.simplefilter("ignore")
            if ephemeral_private is not None:
                conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, bytes(ephemeral_private))
            conn.start_handshake()
        self._conn = conn

    # -- state ---------------------------------------------------------------

    @property
    def initiator(self) -> bool:
        """True on the side that sends HS1 (callers settle simultaneous starts with it)."""
        return self._initiator

    @property
    def established(self) -> bool:
        """The peer is verified and we can send DATA."""
        return self._state is _State.ESTABLISHED

    @property
    def failed(self) -> bool:
        return self._state is _State.FAILED

    @property
    def remote_identity(self) -> bytes | None:
        """The peer's identity (static) public key, once it was verified."""
        return self._remote_static if self.established else None

    # -- hooks (tests override these to replay vectors with other payloads) ---

    def _handshake_payload(self, kind: MessageKind) -> bytes:
        """Payload of the handshake message we write."""
        if kind is MessageKind.HS3:
            return self._channel_secret + self._hello
        return b""

    def _take_handshake_payload(self, kind: MessageKind, payload: bytes) -> None:
        """Check and keep the payload of a handshake message we read."""
        if kind is MessageKind.HS3:
            if len(payload) < CHANNEL_SECRET_SIZE:
                raise PeerError("HS3 carries no channel secret")
            self._channel_secret = payload[:CHANNEL_SECRET_SIZE]
            self._peer_hello = payload[CHANNEL_SECRET_SIZE:]
        elif payload:
            raise PeerError(f"unexpected payload in {kind.name}")

    # -- API -----------------------------------------------------------------

    def start(self) -> None:
        """Initiator only: queue HS1."""
        if not self._initiator:
            raise LocalProtocolError("only the initiator starts a pair handshake")
        if self._state is not _State.IDLE:
            raise LocalProtocolError("pair handshake already started")
        self._write_handshake(MessageKind.HS1)
        self._state = _State.AWAIT_HS2

    def receive(self, data: bytes) -> list[PairEvent]:
        """Handle one whole pair message; return its events (replies are queued)."""
        state = self._state
        if state is _State.FAILED:
            raise PeerError("channel failed")
        if state is _State.IDLE:
            raise LocalProtocolError("call start() before receiving")
        data = bytes(data)
        if not data:
            raise PeerError("empty pair message")
        if len(data) > MAX_MESSAGE:
            raise PeerError("pair message too long")
        kind = _KINDS.get(data[0])
        if kind is None:
            raise PeerError(f"unknown pair message kind {data[0]}")
        body = data[KIND_SIZE:]
        if kind is MessageKind.DATA:
            return self._receive_data(data)
        if kind is MessageKind.REJECT:
            self._receive_reject(body)
        expected = {
            MessageKind.HS1: _State.AWAIT_HS1,
            MessageKind.HS2: _State.AWAIT_HS2,
            MessageKind.HS3: _State.AWAIT_HS3,
        }[kind]
        if state is not expected:
            raise PeerError(f"unexpected {kind.name} message")
        if len(body) < _NOISE_MIN[kind]:
            raise PeerError(f"truncated {kind.name} message")
        if kind is MessageKind.HS1:
            self._receive_hs1(body)
            return []
        if kind is MessageKind.HS2:
            self._receive_hs2(body)
            return []
        return [self._receive_hs3(body)]

    def send(self, payload: bytes) -> None:
        """Queue ``payload`` as one DATA message."""
        if self._state is _State.FAILED:
            raise LocalProtocolError("channel failed")
        if not self.established:
            raise LocalProtocolError("cannot send before the peer is verified")
        self._queue_data(bytes(payload))

    def messages_to_send(self) -> list[bytes]:
        """Whole pair messages to relay to the peer; clears the queue."""
        out, self._outgoing = self._outgoing, []
        return out

    # -- handshake -----------------------------------------------------------

    def _write_handshake(self, kind: MessageKind) -> None:
        conn = self._conn
        # noiseprotocol drops its HandshakeState (and rs) at the split: hold on to it.
        hs = conn.noise_protocol.handshake_state
        try:
            message = conn.write_message(self._handshake_payload(kind))
        except Exception:
            # e.g. the peer's ephemeral was a low-order point and a DH gave zero.
            self._state = _State.FAILED
            raise PeerError(f"pair handshake failed writing {kind.name} (bad peer key)") from None
        self._outgoing.append(bytes([kind]) + bytes(message))
        self._after_handshake_step(hs)

    def _read_handshake(self, body: bytes) -> bytes | None:
        """Noise payload of ``body``, or None if it did not decrypt (channel failed)."""
        conn = self._conn
        hs = conn.noise_protocol.handshake_state
        try:
            payload = bytes(conn.read_message(body))
        except Exception:
            self._state = _State.FAILED
            return None
        self._after_handshake_step(hs)
        return payload

    def _after_handshake_step(self, hs: Any) -> None:
        public = getattr(getattr(hs, "rs", None), "public_bytes", None)
        if isinstance(public, bytes):
            self._remote_static = public
        if self._conn.handshake_finished:
            self._handshake_hash = bytes(self._conn.get_handshake_hash())

    def _take_payload(self, kind: MessageKind, payload: bytes) -> None:
        try:
            self._take_handshake_payload(kind, payload)
        except PeerError:
            self._state = _State.FAILED
            raise

    def _receive_hs1(self, body: bytes) -> None:
        payload = self._read_handshake(body)
        if payload is None:
            raise PeerError("HS1 did not verify (tampered, or meant for another pair or room)")
        self._take_payload(MessageKind.HS1, payload)
        self._write_handshake(MessageKind.HS2)
        self._state = _State.AWAIT_HS3

    def _receive_hs2(self, body: bytes) -> None:
        payload = self._read_handshake(body)
        if payload is None:
            raise PeerError("HS2 did not verify (tampered, or meant for another pair or room)")
        self._take_payload(MessageKind.HS2, payload)
        self._write_handshake(MessageKind.HS3)
        self._derive_keys()
        # We can encrypt now, but the peer has not proved the room secret yet.
        self._state = _State.AWAIT_CONFIRM

    def _receive_hs3(self, body: bytes) -> PeerVerified:
        payload = self._read_handshake(body)
        if payload is None:
            # Wrong PSK looks exactly like tampering here; tell the initiator either way.
            self._outgoing.append(bytes([MessageKind.REJECT]))
            raise PeerAuthError("the member could not prove the room secret")
        self._take_payload(MessageKind.HS3, payload)
        if self._remote_static is None:  # pragma: no cover - XX always sends s
            self._state = _State.FAILED
            raise PeerError("peer sent no identity key")
        self._derive_keys()
        self._state = _State.ESTABLISHED
        # Our first DATA message is the key confirmation the initiator waits for.
        self._queue_data(self._hello)
        return PeerVerified(self._remote_static, self._peer_hello)

    def _receive_reject(self, body: bytes) -> NoReturn:
        if body:
            raise PeerError("malformed REJECT message")
        # Only a responder rejects, and only HS3; once verified the peer cannot mean it.
        if self._state is not _State.AWAIT_CONFIRM:
            raise PeerError("unexpected REJECT message")
        self._state = _State.FAILED
        raise PeerAuthError("the member rejected our handshake: different room secret?")

    def _derive_keys(self) -> None:
        i2r = _hkdf_key(self._channel_secret, self._handshake_hash, PAIR_KDF_INFO_I2R)
        r2i = _hkdf_key(self._channel_secret, self._handshake_hash, PAIR_KDF_INFO_R2I)
        self._send_aead, self._recv_aead = (i2r, r2i) if self._initiator else (r2i, i2r)

    # -- DATA ----------------------------------------------------------------

    def _queue_data(self, payload: bytes) -> None:
        aead = self._send_aead
        if aead is None:  # pragma: no cover - guarded by the callers
            raise LocalProtocolError("no DATA keys yet")
        if len(payload) > MAX_DATA_PAYLOAD:
            raise LocalProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_DATA_PAYLOAD}")
        counter = self._send_counter
        if counter > MAX_COUNTER:
            raise LocalProtocolError("pair counter exhausted; start a new channel")
        self._send_counter = counter + 1
        header = bytes([MessageKind.DATA]) + _COUNTER.pack(counter)
        nonce = _NONCE_PAD + header[KIND_SIZE:]
        self._outgoing.append(header + aead.encrypt(nonce, payload, header))

    def _receive_data(self, data: bytes) -> list[PairEvent]:
        aead = self._recv_aead
        if aead is None or self._state not in (_State.AWAIT_CONFIRM, _State.ESTABLISHED):
            raise PeerError("DATA before the handshake completed")
        if len(data) < DATA_HEADER_SIZE + TAG_SIZE:
            raise PeerError("truncated DATA message")
        header = data[:DATA_HEADER_SIZE]
        (counter,) = _COUNTER.unpack_from(data, KIND_SIZE)
        try:
            payload = aead.decrypt(_NONCE_PAD + header[KIND_SIZE:], data[DATA_HEADER_SIZE:], header)
        except InvalidTag:
            raise PeerError("DATA failed authentication") from None
        if self._state is _State.AWAIT_CONFIRM and counter != 0:
            # The responder's hello is its DATA 0; leave the window alone so a
            # later copy of this message still counts once the hello arrived.
            raise PeerError("DATA before the member's hello")
        # Only now, with the tag verified, may the counter touch the window.
        if not self._window.accept(counter):
            raise PeerError("replayed DATA message")
        if self._state is _State.AWAIT_CONFIRM:
            if self._remote_static is None:  # pragma: no cover - set when HS2 was read
                raise PeerError("peer sent no identity key")
            self._state = _State.ESTABLISHED
            return [PeerVerified(self._remote_static, payload)]
        return [PeerMessage(payload)]
