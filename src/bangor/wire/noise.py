"""Noise XX control session over ``noiseprotocol`` (sans-I/O).

Bytes in (:meth:`NoiseSession.receive_data`), events out (:meth:`NoiseSession.next_event`),
framed bytes to send (:meth:`NoiseSession.data_to_send`). The handshake runs by itself:
the responder answers message 1, the initiator answers message 2. Handshake payloads
are empty; the prologue binds the protocol name and Bangor's version so a mismatch fails
the handshake instead of confusing the session later.

``noiseprotocol`` drops its HandshakeState (and with it the remote static key)
at the split, so we keep our own reference to the HandshakeState across each
handshake step and read ``rs`` from it.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection

from bangor.errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from bangor.wire.framing import MAX_FRAME_SIZE, FrameDecoder, encode_frame

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2s"
PROLOGUE = b"bangor/1 " + PROTOCOL_NAME
KEY_SIZE = 32  # X25519 private and public keys (Noise's DHLEN)
TAG_SIZE = 16  # ChaChaPoly's
MAX_PLAINTEXT = MAX_FRAME_SIZE - TAG_SIZE
FINGERPRINT_SIZE = 16
FINGERPRINT_GROUP = 4  # hex digits per group in the printed form


def generate_static_key() -> bytes:
    """A fresh X25519 private key (32 bytes)."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key(private: bytes) -> bytes:
    """The X25519 public key of ``private``."""
    if len(private) != KEY_SIZE:
        raise LocalProtocolError(f"X25519 private key must be {KEY_SIZE} bytes")
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def fingerprint(public: bytes) -> bytes:
    """First 16 bytes of BLAKE2s-256 of a public key: what invites pin."""
    return hashlib.blake2s(public).digest()[:FINGERPRINT_SIZE]


def format_fingerprint(fp: bytes) -> str:
    """Lowercase hex in groups of four, e.g. ``ab12:cd34:...``."""
    text = fp.hex()
    return ":".join(text[i : i + FINGERPRINT_GROUP] for i in range(0, len(text), FINGERPRINT_GROUP))


@dataclass(frozen=True)
class NoiseEvent:
    """Base of what a :class:`NoiseSession` reports."""


@dataclass(frozen=True)
class HandshakeComplete(NoiseEvent):
    """The handshake finished; the peer proved ownership of ``remote_static``."""

    remote_static: bytes
    handshake_hash: bytes


@dataclass(frozen=True)
class MessageReceived(NoiseEvent):
    """A decrypted transport message."""

    payload: bytes


class NoiseSession:
    """One end of a Noise XX session carried in 2-byte length-prefixed frames."""

    def __init__(
        self,
        initiator: bool,
        static_private: bytes,
        *,
        prologue: bytes = PROLOGUE,
        ephemeral_private: bytes | None = None,
    ) -> None:
        if len(static_private) != KEY_SIZE:
            raise LocalProtocolError(f"static key must be {KEY_SIZE} bytes")
        self._initiator = initiator
        self._decoder = FrameDecoder()
        self._outgoing = bytearray()
        self._events: deque[NoiseEvent] = deque()
        self._initiated = False
        self._failed = False
        self._remote_static: bytes | None = None
        self._handshake_hash: bytes | None = None
        self._handshake_read = 0
        self._keys = (static_private, prologue, ephemeral_private)

    @cached_property
    def _conn(self) -> Any:
        """The library's state, made at the first handshake step: deriving our public
        key costs about 0.1 ms, which a server should not spend on connections that
        never send a byte (a flood)."""
        static_private, prologue, ephemeral_private = self._keys
        conn: Any = NoiseConnection.from_name(PROTOCOL_NAME)
        if self._initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.set_prologue(prologue)
        conn.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
        with warnings.catch_warnings():
            # noiseprotocol warns when an ephemeral is fixed; only test vectors do that.
            warnings.simplefilter("ignore")
            if ephemeral_private is not None:
                conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral_private)
            conn.start_handshake()
        return conn

    # -- state ---------------------------------------------------------------

    @property
    def handshake_complete(self) -> bool:
        return self._handshake_hash is not None

    @property
    def handshake_messages_read(self) -> int:
        """Whole handshake messages read from the peer (a server's admission uses it)."""
        return self._handshake_read

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once the handshake completed."""
        return self._remote_static if self.handshake_complete else None

    @property
    def handshake_hash(self) -> bytes | None:
        """Noise handshake hash h: unique per session but NOT secret (computable from
        the transcript), so never a source of keys."""
        return self._handshake_hash

    # -- hooks (tests override these to replay vectors with payloads) --------

    def _handshake_payload(self) -> bytes:
        """Payload for the next handshake message we write."""
        return b""

    def _check_handshake_payload(self, payload: bytes) -> None:
        """Bangor's handshake messages carry no payload; anything else is an error."""
        if payload:
            raise HandshakeError("unexpected payload in handshake message")

    # -- API -----------------------------------------------------------------

    def initiate(self) -> None:
        """Initiator only: queue handshake message 1."""
        if not self._initiator:
            raise LocalProtocolError("only the initiator starts the handshake")
        if self._initiated:
            raise LocalProtocolError("handshake already started")
        self._initiated = True
        self._write_handshake()

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the stream; what they complete comes from :meth:`next_event`.

        Raises HandshakeError, FramingError or RemoteProtocolError on bad input; events
        of the frames before the bad one stay queued. ``now`` is unused (Noise has no
        timers); every sans-I/O core takes it, so their inputs read alike.
        """
        if self._failed:
            raise LocalProtocolError("noise session failed earlier; close it")
        if self._initiator and not self._initiated:
            raise LocalProtocolError("call initiate() before receiving data")
        events = self._events
        try:
            for frame in self._decoder.feed(data):
                if self.handshake_complete:
                    events.append(MessageReceived(self._decrypt(frame)))
                else:
                    done = self._read_handshake(frame)
                    if done is not None:
                        events.append(done)
        except Exception:
            self._failed = True
            raise

    def next_event(self) -> NoiseEvent | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def send(self, payload: bytes) -> None:
        """Encrypt ``payload`` as one transport message and queue it."""
        if self._failed:
            raise LocalProtocolError("noise session failed earlier; close it")
        if not self.handshake_complete:
            raise LocalProtocolError("cannot send before the handshake completes")
        if len(payload) > MAX_PLAINTEXT:
            raise LocalProtocolError(f"message of {len(payload)} bytes exceeds {MAX_PLAINTEXT}")
        try:
            ciphertext = self._conn.encrypt(bytes(payload))
        except Exception:
            # Only nonce exhaustion can get here: 2**64 messages.
            self._failed = True
            raise LocalProtocolError("noise transport nonce exhausted") from None
        self._outgoing += encode_frame(bytes(ciphertext))

    def data_to_send(self) -> bytes:
        """Framed bytes to write to the stream; clears the queue."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    # -- internals -----------------------------------------------------------

    def _write_handshake(self) -> HandshakeComplete | None:
        conn = self._conn
        state = conn.noise_protocol.handshake_state
        message = conn.write_message(self._handshake_payload())
        self._outgoing += encode_frame(bytes(message))
        return self._after_handshake_step(state)

    def _read_handshake(self, frame: bytes) -> HandshakeComplete | None:
        conn = self._conn
        state = conn.noise_protocol.handshake_state
        try:
            payload = conn.read_message(frame)
        except Exception:
            # Do not leak library internals: any failure here is a bad handshake.
            raise HandshakeError("noise handshake failed (bad message or wrong key)") from None
        self._check_handshake_payload(bytes(payload))
        self._handshake_read += 1
        done = self._after_handshake_step(state)
        if done is None:
            # XX alternates strictly: after each message we read, one is ours to write.
            try:
                done = self._write_handshake()
            except HandshakeError:
                raise
            except Exception:
                # e.g. the peer's ephemeral was a low-order point and DH gave zero.
                raise HandshakeError("noise handshake failed (bad message or wrong key)") from None
        return done

    def _after_handshake_step(self, state: Any) -> HandshakeComplete | None:
        rs = getattr(state, "rs", None)
        public = getattr(rs, "public_bytes", None)
        if isinstance(public, bytes):
            self._remote_static = public
        if not self._conn.handshake_finished:
            return None
        if self._remote_static is None:
            raise HandshakeError("peer did not send a static key")
        self._handshake_hash = bytes(self._conn.get_handshake_hash())
        return HandshakeComplete(self._remote_static, self._handshake_hash)

    def _decrypt(self, frame: bytes) -> bytes:
        try:
            return bytes(self._conn.decrypt(frame))
        except Exception:
            raise RemoteProtocolError("noise transport message failed authentication") from None
