"""Every parser of untrusted bytes, fuzzed briefly: nothing escapes but its documented error.

Inputs are random bytes, valid messages mutated (bytes flipped, cut, inserted), and for
the msgpack unions, well-typed maps with hostile field values. In CI each target runs a
fixed, derandomized set of examples in a second or two; set ``BANGOR_FUZZ_EXAMPLES``
(e.g. 20000) to search longer with fresh random inputs, or use ``tests/fuzz/run.py``
(atheris, coverage-guided) for hours.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bangor.errors import DecodeError, PeerError
from bangor.wire import control as msg
from bangor.wire import e2ee
from tests.fuzz.targets import TARGETS, Target, check

LONG_RUN = int(os.environ.get("BANGOR_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=LONG_RUN or 150,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Seeds per target, made once: some need Noise handshakes.
_SEEDS: dict[str, list[bytes]] = {}


def seeds_of(target: Target) -> list[bytes]:
    if target.name not in _SEEDS:
        _SEEDS[target.name] = target.seeds()
    return _SEEDS[target.name]


def _mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    data = bytearray(seed)
    for op, where, chunk in edits:
        pos = where % (len(data) + 1)
        if op == 0:  # overwrite
            data[pos : pos + len(chunk)] = chunk
        elif op == 1:  # insert
            data[pos:pos] = chunk
        elif op == 2:  # cut the tail
            del data[pos:]
        else:  # delete a run
            del data[pos : pos + len(chunk) + 1]
    return bytes(data)


def inputs(target: Target) -> st.SearchStrategy[bytes]:
    edits = st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
        min_size=1,
        max_size=4,
    )
    mutated = st.builds(_mutate, st.sampled_from(seeds_of(target)), edits)
    return st.one_of(st.binary(max_size=512), mutated, st.sampled_from(seeds_of(target)))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_hostile_bytes(name: str) -> None:
    target = TARGETS[name]

    @FUZZ
    @given(data=inputs(target))
    def run(data: bytes) -> None:
        check(target, data)

    run()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_are_valid_input(name: str) -> None:
    """The seeds reach past the parser's first checks (else the fuzzing is shallow)."""
    target = TARGETS[name]
    passed = 0
    for seed in seeds_of(target):
        try:
            target.run(seed)
            passed += 1
        except target.allowed:
            pass
    assert passed, f"no seed of {name} parses"


# --- structured: msgpack maps with the right tag and hostile values ----------------------

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=80),
    st.binary(max_size=80),
)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_CLIENT_TAGS = [
    msg.tag(t)
    for t in (
        msg.Hello,
        msg.CreateRoom,
        msg.JoinRoom,
        msg.LeaveRoom,
        msg.SendChat,
        msg.PeerSend,
        msg.Ping,
        msg.Bye,
    )
]
_SERVER_TAGS = [
    msg.tag(t)
    for t in (
        msg.Welcome,
        msg.RoomCreated,
        msg.RoomJoined,
        msg.RoomLeft,
        msg.MemberJoined,
        msg.MemberLeft,
        msg.Chat,
        msg.PeerReceived,
        msg.Pong,
        msg.Error,
    )
]
_FIELDS = st.sampled_from(
    [
        "version",
        "user",
        "password",
        "nick",
        "name",
        "max_bitrate",
        "room_id",
        "data",
        "to",
        "nonce",
        "session_id",
        "server_version",
        "media_secret",
        "you",
        "members",
        "member",
        "sender",
        "code",
        "message",
        "fatal",
        "ref",
        "zzz",
    ]
)
_encoder = msgspec.msgpack.Encoder()


def _message(tags: list[str]) -> st.SearchStrategy[bytes]:
    fields = st.dictionaries(_FIELDS, _value, max_size=6)
    return st.builds(lambda t, f: _encoder.encode({"t": t, **f}), st.sampled_from(tags), fields)


@FUZZ
@given(data=_message(_CLIENT_TAGS))
def test_client_union_with_hostile_fields(data: bytes) -> None:
    with pytest.raises(DecodeError) if not _valid(msg.decode_client_message, data) else _null():
        msg.decode_client_message(data)


@FUZZ
@given(data=_message(_SERVER_TAGS))
def test_server_union_with_hostile_fields(data: bytes) -> None:
    with pytest.raises(DecodeError) if not _valid(msg.decode_server_message, data) else _null():
        msg.decode_server_message(data)


@FUZZ
@given(data=_message(["key", "rr", "cand"]))
def test_member_payload_with_hostile_fields(data: bytes) -> None:
    with contextlib.suppress(PeerError):
        e2ee._decode(e2ee._payload_decoder, data, "member message")


def _valid(decode: Any, data: bytes) -> bool:
    try:
        decode(data)
    except DecodeError:
        return False
    return True


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- regressions found by fuzzing (each failed before its fix) ----------------------------


def _nested(tag: bytes, depth: int) -> bytes:
    # {"t": tag, "nonce": 1, "x": [[[...]]]}: msgspec skips the unknown field recursively.
    return b"\x83\xa1t\xa4" + tag + b"\xa5nonce\x01\xa1x" + b"\x91" * depth + b"\xc0"


def test_deeply_nested_control_message_is_a_decode_error() -> None:
    # It was a RecursionError, which the server reported as an internal error.
    with pytest.raises(DecodeError, match="nested too deeply"):
        msg.decode_client_message(_nested(b"ping", 60_000))
    with pytest.raises(DecodeError, match="nested too deeply"):
        msg.decode_server_message(_nested(b"pong", 60_000))


def test_deeply_nested_member_payload_is_a_peer_error() -> None:
    data = b"\x82\xa1t\xa2rr\xa1x" + b"\x91" * 4000 + b"\xc0"
    with pytest.raises(PeerError, match="nested too deeply"):
        e2ee._decode(e2ee._payload_decoder, data, "member message")
