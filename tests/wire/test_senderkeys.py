"""Tests for bangor.wire.senderkeys (join ratchet, leave rotation, held frames, grace)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import LocalProtocolError, PacketError, PeerError
from bangor.settings import ClientSettings
from bangor.wire.senderkeys import (
    BASE_KEY_SIZE,
    GENERATION_LIMIT,
    MAX_OLD_KEYS,
    MAX_STEP,
    PURPOSE_CHAT,
    PURPOSE_VOICE,
    PURPOSES,
    Inbound,
    Outbound,
    Released,
    SenderKey,
    fresh_sender_key,
)
from bangor.wire.sframe import SFrameHeader, SFrameKey, make_kid, ratchet

SETTINGS = ClientSettings()
GRACE = SETTINGS.old_key_grace
TIMEOUT = SETTINGS.pending_timeout
META = {PURPOSE_VOICE: b"room 7 / voice / member 3", PURPOSE_CHAT: b"room 7 / chat / member 3"}
PAYLOAD = bytes(range(90))  # about one 20 ms Opus frame at 40 kbit/s
KEY = bytes(range(BASE_KEY_SIZE))


def metadata_for(purpose: bytes) -> bytes:
    return META[purpose]


def tokens(seed: int) -> Callable[[int], bytes]:
    """Deterministic stand-in for secrets.token_bytes (distinct output per call)."""
    counter = itertools.count()
    return lambda n: hashlib.sha256(b"%d/%d" % (seed, next(counter))).digest()[:n]


def make_inbound(**overrides: object) -> Inbound:
    args: dict[str, object] = {
        "grace": GRACE,
        "max_ratchet_ahead": SETTINGS.max_ratchet_ahead,
        "max_pending": {
            PURPOSE_VOICE: SETTINGS.max_pending_frames,
            PURPOSE_CHAT: SETTINGS.max_pending_chat,
        },
        "pending_timeout": TIMEOUT,
        "max_generations_ahead": SETTINGS.max_generations_ahead,
    }
    args.update(overrides)
    return Inbound(**args)  # type: ignore[arg-type]


def setup(generation: int = 0, **overrides: object) -> tuple[Outbound, Inbound]:
    out = Outbound(fresh_sender_key(generation, tokens(generation)))
    inb = make_inbound(**overrides)
    assert inb.install(out.key, metadata_for, 0.0) == []
    return out, inb


def seal(out: Outbound, payload: bytes = PAYLOAD, purpose: bytes = PURPOSE_VOICE) -> bytes:
    return out.seal(purpose, META[purpose], payload)


def open_(
    inb: Inbound, frame: bytes, now: float = 0.0, purpose: bytes = PURPOSE_VOICE
) -> bytes | None:
    return inb.open(purpose, META[purpose], frame, now)


def kid_of(frame: bytes) -> int:
    return SFrameHeader.parse(frame)[0].kid


def forge(kid: int, ctr: int = 0, key: bytes = bytes(32)) -> bytes:
    """A well-formed frame under ``kid`` that no real key opens."""
    return SFrameKey(kid, key).seal(ctr, META[PURPOSE_VOICE], PAYLOAD)


# --- keys -----------------------------------------------------------------------------------------


def test_sender_key_kid_and_order() -> None:
    key = SenderKey(300, 5, KEY)
    assert key.kid == make_kid(0, 300 % 256, 5) == (44 << 8) | 5
    assert key.order() == (300, 5)
    assert SenderKey(0, 0, KEY).kid == 0
    assert SenderKey(2, 0, KEY).order() > SenderKey(1, MAX_STEP, KEY).order()


@pytest.mark.parametrize(
    ("generation", "step", "base_key"),
    [
        (-1, 0, KEY),
        (GENERATION_LIMIT, 0, KEY),
        (0, -1, KEY),
        (0, MAX_STEP + 1, KEY),
        (0, 0, KEY[:-1]),
        (0, 0, KEY + b"\x00"),
        (0, 0, bytearray(KEY)),
    ],
)
def test_sender_key_validation(generation: int, step: int, base_key: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        SenderKey(generation, step, base_key)


def test_sender_key_repr_hides_key() -> None:
    key = SenderKey(3, 4, KEY)
    for text in (repr(key), str(key), repr([key]), repr(Outbound(key))):
        assert KEY.hex() not in text
        assert repr(KEY) not in text
        assert repr(KEY)[2:20] not in text
    assert "generation=3" in repr(key)
    assert "step=4" in repr(key)
    released = Released(PURPOSE_CHAT, b"secret chat text")
    assert "secret" not in repr(released)


def test_ratcheted() -> None:
    key = SenderKey(7, 3, KEY)
    nxt = key.ratcheted()
    assert nxt == SenderKey(7, 4, ratchet(KEY))
    assert nxt.kid == key.kid + 1
    with pytest.raises(LocalProtocolError, match="rotate"):
        SenderKey(7, MAX_STEP, KEY).ratcheted()


def test_purpose_keys() -> None:
    key = SenderKey(0, 0, KEY)
    # HKDF-Expand(HKDF-Extract("", base_key), "bangor/1 " + purpose, 32) with SHA-256:
    # one block of Expand is HMAC(prk, info || 0x01).
    prk = hmac.new(b"", KEY, hashlib.sha256).digest()
    for purpose in PURPOSES:
        expected = hmac.new(prk, b"bangor/1 " + purpose + b"\x01", hashlib.sha256).digest()
        assert key.purpose_key(purpose) == expected
    assert key.purpose_key(PURPOSE_VOICE) != key.purpose_key(PURPOSE_CHAT)
    assert KEY not in (key.purpose_key(PURPOSE_VOICE), key.purpose_key(PURPOSE_CHAT))
    with pytest.raises(LocalProtocolError):
        key.purpose_key(b"video")


def test_fresh_sender_key() -> None:
    a, b = fresh_sender_key(), fresh_sender_key(5)
    assert (a.generation, a.step, b.generation, b.step) == (0, 0, 5, 0)
    assert a.base_key != b.base_key
    assert len(a.base_key) == BASE_KEY_SIZE
    with pytest.raises(LocalProtocolError):
        fresh_sender_key(0, lambda n: bytes(n - 1))


# --- round trips ----------------------------------------------------------------------------------


def test_round_trip_voice_and_chat() -> None:
    out, inb = setup()
    for i in range(5):
        assert open_(inb, seal(out, bytes([i]) * 80)) == bytes([i]) * 80
        text = f"message {i}".encode()
        assert open_(inb, seal(out, text, PURPOSE_CHAT), purpose=PURPOSE_CHAT) == text
    assert inb.dropped == 0


@given(
    metadata=st.binary(max_size=64),
    payloads=st.lists(st.tuples(st.sampled_from(PURPOSES), st.binary(max_size=300)), max_size=8),
)
def test_round_trip_any(metadata: bytes, payloads: list[tuple[bytes, bytes]]) -> None:
    out = Outbound(fresh_sender_key())
    inb = make_inbound()
    inb.install(out.key, metadata_for, 0.0)
    for purpose, payload in payloads:
        frame = out.seal(purpose, metadata, payload)
        assert inb.open(purpose, metadata, frame, 0.0) == payload


def test_voice_and_chat_keys_differ() -> None:
    out, inb = setup()
    voice = [seal(out) for _ in range(3)]
    chat = seal(out, b"hello", PURPOSE_CHAT)
    assert kid_of(voice[0]) == kid_of(chat)  # same KID: only the purpose key tells them apart
    assert SFrameHeader.parse(chat)[0].ctr == 0  # chat's CTR space is its own
    for frame in voice:
        with pytest.raises(PacketError, match="authentication failed"):
            inb.open(PURPOSE_CHAT, META[PURPOSE_VOICE], frame, 0.0)
    with pytest.raises(PacketError, match="authentication failed"):
        inb.open(PURPOSE_VOICE, META[PURPOSE_CHAT], chat, 0.0)
    # Separate replay windows: voice CTR 0 being seen does not block chat CTR 0.
    assert open_(inb, voice[0]) == PAYLOAD
    assert open_(inb, chat, purpose=PURPOSE_CHAT) == b"hello"


def test_metadata_is_authenticated() -> None:
    out, inb = setup()
    frame = seal(out)
    with pytest.raises(PacketError, match="authentication failed"):
        inb.open(PURPOSE_VOICE, META[PURPOSE_VOICE] + b"x", frame, 0.0)
    assert open_(inb, frame) == PAYLOAD


def test_unknown_purpose() -> None:
    out, inb = setup()
    with pytest.raises(LocalProtocolError):
        out.seal(b"video", b"", b"x")
    with pytest.raises(LocalProtocolError):
        inb.open(b"video", b"", seal(out), 0.0)


# --- join: ratchet --------------------------------------------------------------------------------


def test_join_receiver_derives_forward() -> None:
    out, inb = setup()
    before = seal(out)
    assert open_(inb, seal(out)) == PAYLOAD
    old_key = out.key
    assert out.ratchet() is False
    assert out.key == old_key.ratcheted()
    after = seal(out)
    assert kid_of(after) == kid_of(before) + 1
    assert inb.current == old_key
    assert open_(inb, after, 0.1) == PAYLOAD
    assert inb.current == out.key
    # The derived key serves the other purpose too, from its own CTR 0.
    assert open_(inb, seal(out, b"hi", PURPOSE_CHAT), 0.1, PURPOSE_CHAT) == b"hi"
    # The replaced key still opens a late frame within the grace period.
    assert open_(inb, before, 0.1 + GRACE - 0.01) == PAYLOAD
    # Committing the derived key recorded the frame's CTR: a replay is caught.
    with pytest.raises(PacketError, match="replayed"):
        open_(inb, after, 0.2)


def test_newcomer_cannot_open_frames_before_join() -> None:
    out, old_member = setup()
    earlier = [seal(out) for _ in range(3)]
    out.ratchet()
    newcomer = make_inbound()
    newcomer.install(out.key, metadata_for, 0.0)
    for frame in earlier:
        with pytest.raises(PacketError):
            open_(newcomer, frame)
    assert newcomer.dropped == 0
    later = seal(out)
    assert open_(newcomer, later) == PAYLOAD
    assert open_(old_member, later) == PAYLOAD
    for frame in earlier:  # still nothing: the ratchet only goes forward
        with pytest.raises(PacketError):
            open_(newcomer, frame)


def test_forged_ahead_kid_changes_nothing() -> None:
    out, inb = setup()
    start = inb.current
    assert start is not None
    for ahead in (1, 5, SETTINGS.max_ratchet_ahead):
        for ctr in (0, 1, 10**6):
            with pytest.raises(PacketError, match="authentication failed"):
                open_(inb, forge(make_kid(0, 0, ahead), ctr))
    for ahead in (SETTINGS.max_ratchet_ahead + 1, MAX_STEP):
        with pytest.raises(PacketError, match="unknown SFrame key id"):
            open_(inb, forge(make_kid(0, 0, ahead)))
    assert inb.current == start
    assert inb.get_timer() is None  # no key was retired
    assert open_(inb, seal(out)) == PAYLOAD
    # The sender really ratchets to a step a forgery tried: the genuine frame opens.
    for _ in range(5):
        out.ratchet()
    assert open_(inb, seal(out, b"real")) == b"real"
    assert inb.current == out.key


def test_ratchet_too_far_ahead_rejected() -> None:
    out, inb = setup(max_ratchet_ahead=3)
    for _ in range(4):
        out.ratchet()
    too_far = seal(out)
    with pytest.raises(PacketError, match="unknown SFrame key id"):
        open_(inb, too_far)
    assert inb.current is not None
    assert inb.current.step == 0
    # Exactly max_ratchet_ahead is still followed.
    out2, inb2 = setup(max_ratchet_ahead=3)
    for _ in range(3):
        out2.ratchet()
    assert open_(inb2, seal(out2)) == PAYLOAD
    assert inb2.current == out2.key


def test_skipped_steps_keep_late_frames_within_grace() -> None:
    out, inb = setup()
    out.ratchet()
    step1 = seal(out)
    out.ratchet()
    step2 = seal(out)
    assert open_(inb, step2, 1.0) == PAYLOAD  # two steps at once
    assert open_(inb, step1, 1.5) == PAYLOAD  # the skipped step got the grace period
    assert inb.current == out.key  # the late step-1 frame did not move us back
    assert open_(inb, seal(out), 1.5) == PAYLOAD
    assert inb.get_timer() == 1.0 + GRACE
    inb.expire(1.0 + GRACE)
    assert inb.get_timer() is None


def test_derived_steps_in_a_row() -> None:
    out, inb = setup()
    for step in range(1, 40):
        out.ratchet()
        assert open_(inb, seal(out), float(step)) == PAYLOAD
        assert inb.current is not None
        assert inb.current.order() == (0, step)


# --- leave: rotate --------------------------------------------------------------------------------


def test_removed_member_never_opens_after_rotate() -> None:
    out, removed = setup()
    assert open_(removed, seal(out)) == PAYLOAD
    new = out.rotate(tokens(99))
    assert (new.generation, new.step) == (1, 0)
    assert out.key == new
    results = [open_(removed, seal(out), 0.01 * i) for i in range(60)]
    results += [open_(removed, seal(out, b"chat", PURPOSE_CHAT), 0.6, PURPOSE_CHAT)]
    assert results == [None] * 61  # held: it cannot tell a rekey from a lost key message
    assert removed.dropped == 60 - SETTINGS.max_pending_frames  # bounded
    assert removed.expire(0.6 + TIMEOUT) == SETTINGS.max_pending_frames + 1
    assert removed.get_timer() is None
    # Nor later: the new generation's frames only ever wait, and time out again.
    assert open_(removed, seal(out), 7.0) is None
    assert removed.expire(7.0 + TIMEOUT) == 1
    assert removed.current is not None
    assert removed.current.generation == 0


def test_remaining_member_holds_then_releases_in_order() -> None:
    out, inb = setup()
    out.rotate(tokens(1))
    frames = [
        (PURPOSE_VOICE, seal(out, b"v0")),
        (PURPOSE_VOICE, seal(out, b"v1")),
        (PURPOSE_CHAT, seal(out, b"c0", PURPOSE_CHAT)),
        (PURPOSE_VOICE, seal(out, b"v2")),
    ]
    for i, (purpose, frame) in enumerate(frames):
        assert open_(inb, frame, 0.1 + 0.02 * i, purpose) is None
    assert inb.get_timer() == pytest.approx(0.1 + TIMEOUT)
    released = inb.install(out.key, metadata_for, 0.3)
    assert released == [
        Released(PURPOSE_VOICE, b"v0"),
        Released(PURPOSE_VOICE, b"v1"),
        Released(PURPOSE_CHAT, b"c0"),
        Released(PURPOSE_VOICE, b"v2"),
    ]
    assert inb.dropped == 0
    assert inb.current == out.key
    assert open_(inb, seal(out, b"v3"), 0.31) == b"v3"
    # A released frame is in the replay window like any other.
    with pytest.raises(PacketError, match="replayed"):
        open_(inb, frames[0][1], 0.32)
    assert inb.install(out.key, metadata_for, 0.4) == []


def test_old_key_grace_then_gone() -> None:
    out, inb = setup()
    late = [seal(out, bytes([i])) for i in range(3)]
    out.rotate(tokens(2))
    inb.install(out.key, metadata_for, 10.0)
    assert inb.get_timer() == 10.0 + GRACE
    assert open_(inb, late[0], 10.0 + GRACE - 0.01) == b"\x00"
    assert inb.expire(10.0 + GRACE - 0.01) == 0
    assert open_(inb, late[1], 10.0 + GRACE - 0.01) == b"\x01"
    assert inb.expire(10.0 + GRACE) == 0
    assert inb.get_timer() is None
    with pytest.raises(PacketError, match="unknown SFrame key id"):
        open_(inb, late[2], 10.0 + GRACE)
    # Removed from the SFrame context, not merely past a deadline: even a caller whose
    # clock goes backwards cannot open with it any more.
    with pytest.raises(PacketError, match="unknown SFrame key id"):
        open_(inb, late[2], 10.0)
    assert open_(inb, seal(out), 10.0 + GRACE) == PAYLOAD


def test_old_key_expires_without_expire_call() -> None:
    out, inb = setup()
    late = seal(out)
    out.rotate(tokens(3))
    inb.install(out.key, metadata_for, 0.0)
    with pytest.raises(PacketError, match="unknown SFrame key id"):
        open_(inb, late, GRACE)  # open() itself honours the deadline


def test_rotate_forgets_old_send_keys() -> None:
    out, inb = setup()
    first = seal(out)
    out.rotate(tokens(4))
    frame = seal(out)
    assert SFrameHeader.parse(frame)[0].ctr == 0  # new key, new CTR space
    assert kid_of(frame) == make_kid(0, 1, 0)
    assert open_(inb, first) == PAYLOAD
    assert open_(inb, frame) is None  # held until the key message


def test_held_next_generation_frames_derive_after_install() -> None:
    out, inb = setup()
    new = out.rotate(tokens(6))
    step0 = seal(out, b"s0")
    out.ratchet()
    step1 = seal(out, b"s1")
    assert open_(inb, step1, 0.1) is None
    assert open_(inb, step0, 0.2) is None
    released = inb.install(new, metadata_for, 0.3)
    assert released == [Released(PURPOSE_VOICE, b"s1"), Released(PURPOSE_VOICE, b"s0")]
    assert inb.current == out.key


def test_generation_wraps_in_kid() -> None:
    out, inb = setup(generation=255)
    out.rotate(tokens(7))
    assert out.key.generation == 256
    frame = seal(out)
    assert kid_of(frame) == make_kid(0, 0, 0)
    assert open_(inb, frame) is None
    assert inb.install(out.key, metadata_for, 0.1) == [Released(PURPOSE_VOICE, PAYLOAD)]


def test_same_kid_256_generations_apart() -> None:
    inb = make_inbound()
    a = Outbound(SenderKey(1, 0, KEY))
    b = Outbound(SenderKey(257, 0, bytes(32)))
    inb.install(a.key, metadata_for, 0.0)
    old = seal(a)
    inb.install(b.key, metadata_for, 0.1)  # must not trip over the equal KID
    assert open_(inb, seal(b)) == PAYLOAD
    with pytest.raises(PacketError):
        open_(inb, old)


def test_expired_key_is_gone_from_the_context() -> None:
    # An expired key must leave the SFrame context, not just the bookkeeping: a key
    # 256 generations later reuses its KID, which the context would refuse otherwise.
    inb = make_inbound()
    inb.install(SenderKey(1, 0, KEY), metadata_for, 0.0)
    inb.install(SenderKey(2, 0, KEY), metadata_for, 0.0)
    inb.expire(GRACE)
    later = Outbound(SenderKey(257, 0, bytes(32)))
    assert inb.install(later.key, metadata_for, GRACE) == []
    assert open_(inb, seal(later), GRACE) == PAYLOAD


def test_old_keys_are_capped() -> None:
    out, inb = setup()
    late = []
    for _ in range(MAX_OLD_KEYS + 4):
        late.append(seal(out))
        out.rotate(tokens(8))
        inb.install(out.key, metadata_for, 0.0)  # all within grace
    opened = []
    for frame in late:
        try:
            opened.append(open_(inb, frame, 0.1) == PAYLOAD)
        except PacketError:
            opened.append(False)
    assert opened == [False] * 4 + [True] * MAX_OLD_KEYS


def test_rotate_generation_limit() -> None:
    out = Outbound(SenderKey(GENERATION_LIMIT - 1, 0, KEY))
    with pytest.raises(LocalProtocolError, match="exhausted"):
        out.rotate()
    assert out.key.generation == GENERATION_LIMIT - 1


# --- step limit -----------------------------------------------------------------------------------


def test_step_limit_rotates_and_must_be_distributed() -> None:
    out, inb = setup(generation=4)
    first = out.key
    for _ in range(MAX_STEP):
        assert out.ratchet() is False
        assert open_(inb, seal(out)) == PAYLOAD  # the receiver follows every step
    assert out.key.order() == (4, MAX_STEP)
    assert inb.current == out.key
    assert out.ratchet(tokens(10)) is True
    assert out.key.order() == (5, 0)
    assert out.key.base_key != first.base_key
    frame = seal(out)
    assert open_(inb, frame) is None  # next generation: waits for the distributed key
    assert inb.install(out.key, metadata_for, 0.1) == [Released(PURPOSE_VOICE, PAYLOAD)]


# --- install --------------------------------------------------------------------------------------


def test_install_duplicate_is_a_no_op() -> None:
    out, inb = setup()
    frame = seal(out)
    assert open_(inb, frame) == PAYLOAD
    assert inb.install(out.key, metadata_for, 1.0) == []
    assert inb.install(SenderKey(0, 0, out.key.base_key), metadata_for, 1.0) == []
    assert inb.get_timer() is None  # nothing retired
    with pytest.raises(PacketError, match="replayed"):  # replay window kept
        open_(inb, frame)


def test_install_conflicting() -> None:
    out, inb = setup()
    with pytest.raises(PeerError, match="conflicting key"):
        inb.install(SenderKey(0, 0, bytes(32)), metadata_for, 1.0)
    # A later step of the same generation must follow by the ratchet.
    with pytest.raises(PeerError, match="conflicting key"):
        inb.install(SenderKey(0, 2, bytes(32)), metadata_for, 1.0)
    assert inb.current == out.key
    assert inb.get_timer() is None
    assert open_(inb, seal(out)) == PAYLOAD
    ahead = out.key.ratcheted().ratcheted()
    assert inb.install(ahead, metadata_for, 1.0) == []
    assert inb.current == ahead


def test_install_stale_leaves_state_unchanged() -> None:
    out, inb = setup()
    old = out.key
    out.rotate(tokens(11))
    inb.install(out.key, metadata_for, 0.0)
    inb.expire(GRACE)
    with pytest.raises(PeerError, match="stale key: generation 0 step 0, have 1 0"):
        inb.install(old, metadata_for, GRACE)
    assert inb.current == out.key
    assert inb.get_timer() is None
    assert open_(inb, seal(out), GRACE) == PAYLOAD
    # Stale against a derived key too.
    out.ratchet()
    out.ratchet()
    assert open_(inb, seal(out), GRACE) == PAYLOAD
    with pytest.raises(PeerError, match="stale key: generation 1 step 1, have 1 2"):
        inb.install(SenderKey(1, 1, bytes(32)), metadata_for, GRACE)


def test_reordered_installs() -> None:
    out, inb = setup(max_generations_ahead=1)
    gen1 = out.rotate(tokens(12))
    gen1_frame = seal(out)
    gen2 = out.rotate(tokens(13))
    gen2_frames = [seal(out, bytes([i])) for i in range(3)]
    with pytest.raises(PacketError, match="unknown"):  # two generations ahead: not held
        open_(inb, gen2_frames[0])
    assert inb.install(gen2, metadata_for, 0.1) == []
    with pytest.raises(PeerError, match="stale key: generation 1 step 0, have 2 0"):
        inb.install(gen1, metadata_for, 0.2)
    assert inb.current == gen2
    for i, frame in enumerate(gen2_frames):
        assert open_(inb, frame, 0.3) == bytes([i])
    with pytest.raises(PacketError):
        open_(inb, gen1_frame, 0.3)


def test_held_frames_before_the_first_key() -> None:
    out = Outbound(fresh_sender_key(0, tokens(14)))
    inb = make_inbound()
    assert inb.current is None
    gen0 = seal(out, b"g0")
    out.rotate(tokens(15))
    gen1 = seal(out, b"g1")
    assert open_(inb, gen0, 0.0) is None
    assert open_(inb, gen1, 0.1) is None
    # Got the old key first (joined mid-rekey): gen 1 keeps waiting, not dropped.
    first = SenderKey(0, 0, tokens(14)(32))
    assert inb.install(first, metadata_for, 0.2) == [Released(PURPOSE_VOICE, b"g0")]
    assert inb.dropped == 0
    assert inb.install(out.key, metadata_for, 0.3) == [Released(PURPOSE_VOICE, b"g1")]


def test_metadata_for_is_used_for_held_frames() -> None:
    out, inb = setup()
    out.rotate(tokens(16))
    assert open_(inb, seal(out)) is None
    assert inb.install(out.key, lambda purpose: b"other metadata", 0.1) == []
    assert inb.dropped == 1


# --- held-frame bounds ----------------------------------------------------------------------------


def test_pending_overflow_drops_oldest() -> None:
    out, inb = setup(max_pending={PURPOSE_VOICE: 3, PURPOSE_CHAT: 2})
    out.rotate(tokens(17))
    for i in range(5):
        assert open_(inb, seal(out, b"v%d" % i), 0.01 * i) is None
    assert inb.dropped == 2
    for i in range(2):  # chat has its own bound: the voice overflow did not touch it
        assert open_(inb, seal(out, b"c%d" % i, PURPOSE_CHAT), 0.1, PURPOSE_CHAT) is None
    assert inb.dropped == 2
    released = inb.install(out.key, metadata_for, 0.2)
    assert released == [
        Released(PURPOSE_VOICE, b"v2"),
        Released(PURPOSE_VOICE, b"v3"),
        Released(PURPOSE_VOICE, b"v4"),
        Released(PURPOSE_CHAT, b"c0"),
        Released(PURPOSE_CHAT, b"c1"),
    ]
    assert inb.dropped == 2


def test_pending_zero_holds_nothing() -> None:
    out, inb = setup(max_pending={PURPOSE_VOICE: 0, PURPOSE_CHAT: 1})
    out.rotate(tokens(18))
    assert open_(inb, seal(out)) is None
    assert inb.dropped == 1
    assert inb.get_timer() is None
    assert inb.install(out.key, metadata_for, 0.1) == []


def test_pending_expiry() -> None:
    out, inb = setup()
    out.rotate(tokens(19))
    assert inb.get_timer() is None
    assert open_(inb, seal(out, b"a"), 0.0) is None
    assert open_(inb, seal(out, b"b", PURPOSE_CHAT), 1.0, PURPOSE_CHAT) is None
    assert open_(inb, seal(out, b"c"), 2.0) is None
    assert inb.get_timer() == TIMEOUT
    assert inb.expire(TIMEOUT - 0.01) == 0
    assert inb.expire(TIMEOUT) == 1
    assert inb.get_timer() == 1.0 + TIMEOUT
    assert inb.expire(1.0 + TIMEOUT) == 1
    assert inb.dropped == 2
    # Past the timeout at install time: dropped, not released.
    assert inb.install(out.key, metadata_for, 2.0 + TIMEOUT) == []
    assert inb.dropped == 3
    assert inb.get_timer() == 2.0 + TIMEOUT + GRACE  # only the old key remains


def test_a_held_frame_is_dropped_at_the_time_get_timer_gives() -> None:
    # arrived + timeout rounds so that (arrived + timeout) - arrived < timeout: a check
    # written as `now - arrived >= timeout` did nothing at the timer's own time, and the
    # timer stayed due for ever (found by the TypeScript port's review).
    arrived, timeout = 48312.06397341265, 0.1
    assert (arrived + timeout) - arrived < timeout
    out, inb = setup(pending_timeout=timeout)
    out.rotate(tokens(23))
    assert open_(inb, seal(out, b"a"), arrived) is None
    when = inb.get_timer()
    assert when == arrived + timeout
    assert inb.expire(when) == 1
    assert inb.get_timer() != when
    assert open_(inb, seal(out, b"b"), arrived) is None
    assert inb.install(out.key, metadata_for, arrived + timeout) == []  # due: dropped


def test_held_garbage_is_dropped_at_install() -> None:
    out, inb = setup()
    out.rotate(tokens(20))
    genuine = seal(out)
    assert open_(inb, forge(make_kid(0, 1, 0)), 0.1) is None
    assert open_(inb, genuine, 0.2) is None
    assert open_(inb, genuine, 0.3) is None  # a duplicate: held too, then a replay
    assert inb.install(out.key, metadata_for, 0.4) == [Released(PURPOSE_VOICE, PAYLOAD)]
    assert inb.dropped == 2


# --- malformed, replayed, tampered ----------------------------------------------------------------


def test_replay_rejected() -> None:
    out, inb = setup()
    frame = seal(out)
    assert open_(inb, frame) == PAYLOAD
    with pytest.raises(PacketError, match="replayed"):
        open_(inb, frame)


def test_unknown_kids_rejected() -> None:
    _, inb = setup(generation=3)
    too_far = make_kid(0, 3 + SETTINGS.max_generations_ahead + 1, 0)
    for kid in (make_kid(1, 3, 0), make_kid(0, 2, 0), too_far, make_kid(0, 3, 0) + 1):
        if kid == make_kid(0, 3, 1):
            with pytest.raises(PacketError, match="authentication failed"):
                open_(inb, forge(kid))
        else:
            with pytest.raises(PacketError, match="unknown SFrame key id"):
                open_(inb, forge(kid))
    assert inb.dropped == 0


def sample_frame() -> tuple[Outbound, Inbound, bytes]:
    out, inb = setup(generation=3)
    out.ratchet()
    for _ in range(300):  # a multi-byte CTR and KID, so the header has every part
        frame = seal(out)
    return out, inb, frame


def test_every_truncation_rejected() -> None:
    _, inb, frame = sample_frame()
    for n in range(len(frame)):
        with pytest.raises(PacketError):
            open_(inb, frame[:n])
    assert inb.current is not None
    assert inb.current.step == 0  # no truncation committed the derived key
    assert open_(inb, frame) == PAYLOAD


def test_truncated_next_generation_frames() -> None:
    out, inb = setup()
    out.rotate(tokens(21))
    frame = seal(out)
    _, size = SFrameHeader.parse(frame)
    results: list[bytes | None] = []
    for n in range(len(frame)):
        try:
            results.append(open_(inb, frame[:n]))
        except PacketError:
            results.append(b"rejected")
    # Too short to ever open: rejected at once; longer cut-offs wait but never open.
    assert results[: size + 16] == [b"rejected"] * (size + 16)
    assert results[size + 16 :] == [None] * (len(frame) - size - 16)
    assert inb.install(out.key, metadata_for, 0.1) == []
    assert inb.dropped == len(frame) - size - 16


def test_every_bit_flip_rejected() -> None:
    _, inb, frame = sample_frame()
    held = 0
    for i in range(len(frame) * 8):
        forged = bytearray(frame)
        forged[i // 8] ^= 1 << (i % 8)
        try:
            opened = open_(inb, bytes(forged))
        except PacketError:
            continue
        # A KID flipped into a generation just ahead is held for its key, never opened.
        assert opened is None
        held += 1
    assert held == 1  # generation 3 -> 7 (bit 2): within max_generations_ahead
    assert inb.current is not None
    assert inb.current.step == 0
    assert inb.dropped == 0
    assert open_(inb, frame) == PAYLOAD


def test_flips_never_yield_plaintext_even_when_held() -> None:
    out = Outbound(fresh_sender_key(1, tokens(22)))
    frame = seal(out)
    inb = make_inbound(max_pending={PURPOSE_VOICE: 10_000, PURPOSE_CHAT: 1})  # no key yet
    for i in range(len(frame) * 8):
        forged = bytearray(frame)
        forged[i // 8] ^= 1 << (i % 8)
        with contextlib.suppress(PacketError):
            assert open_(inb, bytes(forged)) is None
    assert inb.install(out.key, metadata_for, 0.1) == []
    assert open_(inb, frame, 0.1) == PAYLOAD


# --- constructor ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"grace": -1.0},
        {"grace": float("nan")},
        {"pending_timeout": -1.0},
        {"max_ratchet_ahead": -1},
        {"max_ratchet_ahead": MAX_STEP + 1},
        {"max_pending": {PURPOSE_VOICE: 50}},
        {"max_pending": {PURPOSE_VOICE: 50, PURPOSE_CHAT: -1}},
        {"max_pending": {PURPOSE_VOICE: 50, PURPOSE_CHAT: 64, b"video": 1}},
    ],
)
def test_inbound_settings_validated(overrides: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        make_inbound(**overrides)


def test_frames_a_few_generations_ahead_wait_for_their_keys() -> None:
    """Churn: the sender rotated three times before its first new key reached us."""
    out, inb = setup()
    keys = [out.rotate(tokens(30 + i)) for i in range(3)]
    frames = [seal(out, b"gen 3 #%d" % i) for i in range(4)]
    assert [open_(inb, f, 0.01) for f in frames] == [None] * 4  # held, not dropped
    assert inb.install(keys[0], metadata_for, 0.02) == []  # still two ahead: kept waiting
    assert inb.install(keys[1], metadata_for, 0.03) == []
    released = inb.install(keys[2], metadata_for, 0.04)
    assert [r.plaintext for r in released] == [b"gen 3 #%d" % i for i in range(4)]
    assert inb.dropped == 0
    # Beyond max_generations_ahead a frame is dropped at once: not held, not counted.
    ahead = SETTINGS.max_generations_ahead
    far = [out.rotate(tokens(40 + i)) for i in range(ahead + 1)][-1]
    with pytest.raises(PacketError, match="unknown SFrame key id"):
        open_(inb, seal(out), 0.05)
    assert far.generation == keys[2].generation + ahead + 1


def test_max_generations_ahead_is_checked() -> None:
    with pytest.raises(LocalProtocolError, match="max_generations_ahead"):
        make_inbound(max_generations_ahead=128)
    assert make_inbound(max_generations_ahead=0).current is None
