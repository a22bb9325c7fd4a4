"""Per-member SFrame sender keys for a room: ratchet on join, rotate on leave, sans-I/O.

Every member seals its own voice frames and chat messages with its own sender key
(a 32-byte *base key*); the keys reach the other members over authenticated pairwise
channels (another module). A receiver keeps one :class:`Inbound` per remote sender,
so the KID only has to name the key, not the sender: ``KID = make_kid(0, generation
% 256, step)``.

* **Join**: every sender ratchets its key one step (:func:`sframe.ratchet`), so the
  newcomer, who is given only the new key, cannot open anything sent before it
  joined. Nobody else is sent anything: a receiver that sees a frame whose KID is a
  few steps ahead in the current generation derives the key itself, and commits it
  only once the frame's tag verified (a forged KID changes nothing).
* **Leave**: every sender makes a fresh random key in the next generation and sends
  it to the members that remain, so the one who left cannot open anything sent
  afterwards. Frames of the next generation that arrive before their key are held
  (bounded) and released by :meth:`Inbound.install`, so audio flows through a rekey.
  A replaced receive key still opens late frames for a short grace period.
* **Step limit**: a sender whose step would pass 255 rotates instead, and must then
  hand its new key to everyone (:meth:`Outbound.ratchet` returns True).

Voice and chat are sealed under independent keys derived from the same base key
(``HKDF-Expand(HKDF-Extract("", base_key), "bangor/1 " + purpose, 32)``), each in its
own :class:`SFrameContext`, so their CTR spaces and replay windows never mix and a
voice frame never opens as a chat message.

Times are plain floats passed in by the caller (``now``); nothing here reads a clock.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bangor.errors import LocalProtocolError, PacketError, PeerError
from bangor.settings import ClientSettings
from bangor.wire.sframe import (
    DEFAULT_SUITE,
    GENERATION_BITS,
    RATCHET_STEP_BITS,
    SFrameContext,
    SFrameKey,
    _expand,
    _extract,
    _parse_header,
    make_kid,
    ratchet,
    split_kid,
)

PURPOSE_VOICE = b"voice"
PURPOSE_CHAT = b"chat"
PURPOSES = (PURPOSE_VOICE, PURPOSE_CHAT)
PURPOSE_LABEL = b"bangor/1 "  # HKDF info prefix of a purpose key (versioned domain separation)
PURPOSE_KEY_SIZE = 32

BASE_KEY_SIZE = 32
MAX_STEP = (1 << RATCHET_STEP_BITS) - 1  # 255: the KID has 8 bits of ratchet step
GENERATION_LIMIT = 2**32  # full generation counter; the KID carries it modulo 256
KID_GENERATIONS = 1 << GENERATION_BITS  # 256
KID_SENDER_INDEX = 0  # one Inbound per remote sender: the KID needs no sender index
# Replaced receive keys kept for late frames. The grace period normally bounds them;
# this caps a burst of joins/leaves (or a peer spamming installs) regardless.
MAX_OLD_KEYS = 8

_TAG_SIZE = DEFAULT_SUITE.tag_size

# What open() should do with a KID no live key holds.
_UNKNOWN = -1
_HOLD = 0  # > 0: derive that many ratchet steps forward


# --- keys -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class SenderKey:
    """One sender key: generation, ratchet step and 32-byte base key."""

    generation: int  # full counter 0..2**32-1 (the KID carries generation % 256)
    step: int  # 0..255
    base_key: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.generation < GENERATION_LIMIT:
            raise LocalProtocolError(f"key generation {self.generation} is outside 0..2**32-1")
        if not 0 <= self.step <= MAX_STEP:
            raise LocalProtocolError(f"ratchet step {self.step} is outside 0..{MAX_STEP}")
        if not isinstance(self.base_key, bytes) or len(self.base_key) != BASE_KEY_SIZE:
            raise LocalProtocolError(f"a sender key must be {BASE_KEY_SIZE} bytes")

    def __repr__(self) -> str:
        # Keys never reach logs: only the public coordinates are shown.
        return f"SenderKey(generation={self.generation}, step={self.step}, base_key=<hidden>)"

    @property
    def kid(self) -> int:
        return make_kid(KID_SENDER_INDEX, self.generation % KID_GENERATIONS, self.step)

    def order(self) -> tuple[int, int]:
        """(generation, step): a later key compares greater."""
        return (self.generation, self.step)

    def ratcheted(self) -> SenderKey:
        """The key one ratchet step forward (after a join)."""
        if self.step >= MAX_STEP:
            raise LocalProtocolError("ratchet step limit reached: rotate the key instead")
        return SenderKey(self.generation, self.step + 1, ratchet(self.base_key))

    def purpose_key(self, purpose: bytes) -> bytes:
        """SFrame base key for ``purpose`` (voice or chat), independent of the other."""
        _check_purpose(purpose)
        secret = _extract(self.base_key, DEFAULT_SUITE)
        return _expand(secret, PURPOSE_LABEL + purpose, PURPOSE_KEY_SIZE, DEFAULT_SUITE)


def _check_purpose(purpose: bytes) -> None:
    if purpose not in PURPOSES:
        raise LocalProtocolError(f"unknown key purpose {purpose!r}")


def fresh_sender_key(
    generation: int = 0, token: Callable[[int], bytes] = secrets.token_bytes
) -> SenderKey:
    """A new random key at ``generation``, step 0."""
    return SenderKey(generation, 0, token(BASE_KEY_SIZE))


# --- sending -----------------------------------------------------------------------------


class Outbound:
    """My own sending keys (voice and chat).

    Never build two Outbounds from the same key: both would start at CTR 0 (nonce reuse).
    """

    __slots__ = ("_contexts", "_key", "_kid")

    def __init__(self, key: SenderKey) -> None:
        self._key = key
        self._kid = key.kid
        self._contexts: dict[bytes, SFrameContext] = {}
        self._new_contexts(key)

    @property
    def key(self) -> SenderKey:
        return self._key

    def _new_contexts(self, key: SenderKey) -> None:
        # A fresh context per generation: KIDs repeat every 256 generations (under
        # other keys, so no nonce reuse), and a context refuses a KID it once sent under.
        self._contexts = {p: SFrameContext() for p in PURPOSES}
        for purpose, context in self._contexts.items():
            context.add_send_key(key.kid, key.purpose_key(purpose))

    def ratchet(self, token: Callable[[int], bytes] = secrets.token_bytes) -> bool:
        """One step forward (someone joined).

        Returns True if the step limit forced a rotation instead: the caller must then
        distribute :attr:`key` to every member, as after a leave.
        """
        if self._key.step >= MAX_STEP:
            self.rotate(token)
            return True
        new = self._key.ratcheted()
        new_kid = new.kid
        for purpose, context in self._contexts.items():
            # Drop the old key first: nothing sent from now on may be open-able by it.
            context.remove_send_key(self._kid)
            context.add_send_key(new_kid, new.purpose_key(purpose))
        self._key, self._kid = new, new_kid
        return False

    def rotate(self, token: Callable[[int], bytes] = secrets.token_bytes) -> SenderKey:
        """Fresh random key in the next generation (someone left); old keys forgotten."""
        if self._key.generation + 1 >= GENERATION_LIMIT:
            raise LocalProtocolError("key generations exhausted: start a new sender")
        new = fresh_sender_key(self._key.generation + 1, token)
        self._new_contexts(new)
        self._key, self._kid = new, new.kid
        return new

    def seal(self, purpose: bytes, metadata: bytes, plaintext: bytes) -> bytes:
        """SFrame frame of ``plaintext`` under the current key for ``purpose``."""
        context = self._contexts.get(purpose)
        if context is None:
            raise LocalProtocolError(f"unknown key purpose {purpose!r}")
        return context.encrypt(self._kid, metadata, plaintext)


# --- receiving ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Released:
    """A held frame that opened once its key arrived."""

    purpose: bytes
    plaintext: bytes = field(repr=False)  # chat text stays out of logs too


@dataclass(frozen=True, slots=True)
class _Held:
    seq: int  # arrival order across purposes
    purpose: bytes
    arrived: float
    frame: bytes


class Inbound:
    """One remote sender's keys, as a receiver."""

    def __init__(
        self,
        *,
        grace: float,
        max_ratchet_ahead: int,
        max_pending: dict[bytes, int],
        pending_timeout: float,
        max_generations_ahead: int,
    ) -> None:
        """``max_pending``: held-frame bound per purpose, e.g. ``{voice: 50, chat: 64}``;
        ``max_generations_ahead``: how many generations past the current key a frame may
        be and still be held for its key."""
        if not grace >= 0 or not pending_timeout >= 0:  # also rejects NaN
            raise LocalProtocolError("grace and pending timeout must be >= 0")
        if not 0 <= max_ratchet_ahead <= MAX_STEP:
            raise LocalProtocolError(f"max_ratchet_ahead must be 0..{MAX_STEP}")
        if set(max_pending) != set(PURPOSES) or min(max_pending.values()) < 0:
            raise LocalProtocolError("max_pending needs a bound >= 0 for voice and for chat")
        if not 0 <= max_generations_ahead < KID_GENERATIONS // 2:
            # Past half the KID's generation space "ahead" could not be told from "old".
            raise LocalProtocolError(f"max_generations_ahead must be 0..{KID_GENERATIONS // 2 - 1}")
        self._grace = grace
        self._max_ahead = max_ratchet_ahead
        self._max_pending = dict(max_pending)
        self._pending_timeout = pending_timeout
        self._max_generations = max_generations_ahead
        self._contexts = {p: SFrameContext() for p in PURPOSES}
        self._current: SenderKey | None = None
        self._current_kid = -1
        # Replaced keys still open for late frames: KID -> (key, deadline), oldest first.
        self._old: dict[int, tuple[SenderKey, float]] = {}
        self._key_deadline = math.inf  # earliest deadline in _old
        self._held: dict[bytes, deque[_Held]] = {p: deque() for p in PURPOSES}
        self._seq = 0
        self._dropped = 0
        # Keys ahead of the current one and trial SFrame keys, cached so a stream of
        # forged far-ahead KIDs costs one AEAD check each, not a ratchet chain each.
        # Both are derivable from the current key, so caching them gives nothing away.
        self._ahead: list[SenderKey] = []
        self._trial: dict[tuple[bytes, int], SFrameKey] = {}

    @classmethod
    def from_settings(cls, settings: ClientSettings) -> Inbound:
        return cls(
            grace=settings.old_key_grace,
            max_ratchet_ahead=settings.max_ratchet_ahead,
            max_pending={
                PURPOSE_VOICE: settings.max_pending_frames,
                PURPOSE_CHAT: settings.max_pending_chat,
            },
            pending_timeout=settings.pending_timeout,
            max_generations_ahead=settings.max_generations_ahead,
        )

    @property
    def current(self) -> SenderKey | None:
        return self._current

    @property
    def dropped(self) -> int:
        """Held frames dropped so far (overflow, expiry, failed to open)."""
        return self._dropped

    # --- key changes ---

    def install(
        self, key: SenderKey, metadata_for: Callable[[bytes], bytes], now: float
    ) -> list[Released]:
        """Take ``key`` from this sender's key message; returns held frames it opened.

        PeerError (and no change) if the key is older than or conflicts with ours.
        ``metadata_for(purpose)`` is the SFrame metadata the caller uses for ``purpose``.
        """
        current = self._current
        skipped: list[SenderKey] = []
        if current is not None:
            if key.order() == current.order():
                if hmac.compare_digest(key.base_key, current.base_key):
                    return []  # a duplicate message
                raise PeerError(
                    f"conflicting key: generation {key.generation} step {key.step} "
                    "differs from the one installed"
                )
            if key.order() < current.order():
                raise PeerError(
                    f"stale key: generation {key.generation} step {key.step}, "
                    f"have {current.generation} {current.step}"
                )
            if key.generation == current.generation:
                # Within a generation only the ratchet leads forward; a key that does
                # not follow from ours is a lie (or a bug) on the sender's side.
                chain = self._chain(key.step - current.step)
                if not hmac.compare_digest(chain[-1].base_key, key.base_key):
                    raise PeerError(
                        f"conflicting key: generation {key.generation} step {key.step} "
                        f"does not follow from step {current.step}"
                    )
                skipped = chain[:-1]
        # Ask for metadata before changing anything, so a failing callback leaves no trace.
        metadata = {p: metadata_for(p) for p in PURPOSES if self._held[p]}
        self._advance(key, skipped, now)
        return self._release(metadata, now)

    def _advance(self, key: SenderKey, skipped: list[SenderKey], now: float) -> None:
        """Make ``key`` current; the old current and ``skipped`` keys get the grace period."""
        deadline = now + self._grace
        if self._current is not None:
            self._retire(self._current, deadline)
        for old in skipped[-(MAX_OLD_KEYS - 1) :]:  # older ones would be evicted anyway
            self._add_to_contexts(old)
            self._retire(old, deadline)
        self._add_to_contexts(key)
        self._current, self._current_kid = key, key.kid
        self._ahead.clear()
        self._trial.clear()
        while len(self._old) > MAX_OLD_KEYS:
            self._remove(next(iter(self._old)))
        self._update_deadline()

    def _add_to_contexts(self, key: SenderKey) -> None:
        kid = key.kid
        if kid in self._old:
            # Same KID 256 generations apart: the newer key wins.
            self._remove(kid)
        for purpose, context in self._contexts.items():
            context.add_receive_key(kid, key.purpose_key(purpose))

    def _retire(self, key: SenderKey, deadline: float) -> None:
        self._old[key.kid] = (key, deadline)

    def _remove(self, kid: int) -> None:
        del self._old[kid]
        for context in self._contexts.values():
            context.remove_receive_key(kid)

    def _update_deadline(self) -> None:
        self._key_deadline = min((d for _, d in self._old.values()), default=math.inf)

    def _expire_keys(self, now: float) -> None:
        for kid, (_, deadline) in list(self._old.items()):
            if now >= deadline:
                self._remove(kid)
        self._update_deadline()

    def _chain(self, steps: int) -> list[SenderKey]:
        """The current key ratcheted 1..steps times (cached until the current key changes)."""
        ahead = self._ahead
        assert self._current is not None
        key = ahead[-1] if ahead else self._current
        while len(ahead) < steps:
            key = key.ratcheted()
            ahead.append(key)
        return ahead[:steps]

    # --- frames ---

    def open(self, purpose: bytes, metadata: bytes, frame: bytes, now: float) -> bytes | None:
        """Plaintext of ``frame``, or None if it is held until its key arrives.

        PacketError if malformed, forged, replayed or under a key we do not have.
        """
        plaintext = self._open(purpose, metadata, frame, now)
        if plaintext is None:
            self._hold(purpose, frame, now)
        return plaintext

    def _open(self, purpose: bytes, metadata: bytes, frame: bytes, now: float) -> bytes | None:
        context = self._contexts.get(purpose)
        if context is None:
            raise LocalProtocolError(f"unknown key purpose {purpose!r}")
        # The tuple-returning parser: SFrameHeader.parse's dataclass costs ~1 us a frame.
        kid, ctr, size = _parse_header(frame)
        if len(frame) - size < _TAG_SIZE:
            # Checked here too so a frame that can never open is not held.
            raise PacketError("truncated SFrame frame: shorter than the tag")
        if now >= self._key_deadline:
            self._expire_keys(now)  # an old key past its grace must not open this
        if kid == self._current_kid or kid in self._old:
            return context.decrypt(metadata, frame)[1]
        action = self._classify(kid)
        if action == _HOLD:
            return None
        if action == _UNKNOWN:
            raise PacketError(f"unknown SFrame key id {kid:#x}")
        # The sender ratcheted (someone joined): try the derived key, commit on success.
        chain = self._chain(action)
        target = chain[-1]
        trial = self._trial.get((purpose, action))
        if trial is None:
            trial = SFrameKey(target.kid, target.purpose_key(purpose))
            self._trial[(purpose, action)] = trial
        trial.open(ctr, frame[:size], metadata, frame[size:])  # PacketError: no change
        self._advance(target, chain[:-1], now)
        # Open again through the context so the CTR lands in the new key's replay window.
        return context.decrypt(metadata, frame)[1]

    def _classify(self, kid: int) -> int:
        """_HOLD, _UNKNOWN or the number of ratchet steps ``kid`` is ahead of ours."""
        sender, generation, step = split_kid(kid)
        current = self._current
        if sender != KID_SENDER_INDEX:
            return _UNKNOWN
        if current is None:
            return _HOLD  # its key message is on the way
        if generation == current.generation % KID_GENERATIONS:
            ahead = step - current.step
            return ahead if 1 <= ahead <= self._max_ahead else _UNKNOWN
        if 1 <= (generation - current.generation) % KID_GENERATIONS <= self._max_generations:
            return _HOLD  # the sender rotated (someone left); its key message is on the way
        return _UNKNOWN

    def _hold(self, purpose: bytes, frame: bytes, now: float) -> None:
        held = self._held[purpose]
        limit = self._max_pending[purpose]
        # Nothing can be verified before the key arrives, so anyone on the path can fill
        # this; the bound caps what that costs, dropping the oldest (least useful) first.
        if limit == 0:
            self._dropped += 1
            return
        if len(held) >= limit:
            held.popleft()
            self._dropped += 1
        held.append(_Held(self._seq, purpose, now, bytes(frame)))
        self._seq += 1

    def _release(self, metadata: dict[bytes, bytes], now: float) -> list[Released]:
        """Retry every held frame in arrival order after a key change."""
        entries = sorted((h for p in PURPOSES for h in self._held[p]), key=lambda h: h.seq)
        for held in self._held.values():
            held.clear()
        released: list[Released] = []
        for entry in entries:
            if now >= entry.arrived + self._pending_timeout:  # the sum get_timer gives
                self._dropped += 1
                continue
            try:
                plaintext = self._open(entry.purpose, metadata[entry.purpose], entry.frame, now)
            except PacketError:
                self._dropped += 1
                continue
            if plaintext is None:
                # Still a generation ahead (e.g. we just got our first key mid-rekey):
                # keep waiting, in the same order, without counting against the bound twice.
                self._held[entry.purpose].append(entry)
            else:
                released.append(Released(entry.purpose, plaintext))
        return released

    # --- timers ---

    def expire(self, now: float) -> int:
        """Forget keys past their grace and held frames past the pending timeout.

        Returns how many held frames were dropped.
        """
        if now >= self._key_deadline:
            self._expire_keys(now)
        dropped = 0
        for held in self._held.values():
            while held and now >= held[0].arrived + self._pending_timeout:
                held.popleft()
                dropped += 1
        self._dropped += dropped
        return dropped

    def get_timer(self) -> float | None:
        """Earliest time :meth:`expire` has work, or None."""
        times = [h[0].arrived + self._pending_timeout for h in self._held.values() if h]
        if self._old:
            times.append(self._key_deadline)
        return min(times, default=None)
