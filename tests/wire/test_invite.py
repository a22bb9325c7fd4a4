"""Tests for bangor.wire.invite."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import InviteError
from bangor.wire.invite import ALPHABET, INVITE_PREFIX, Invite, _b32encode, _checksum

ROOM = bytes(range(8))
SECRET = bytes(range(100, 116))
FP = bytes(range(200, 216))
SAMPLE = Invite("voice.example.org", 7600, ROOM, SECRET, FP)

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
HOSTNAMES = st.lists(LABEL, min_size=1, max_size=5).map(".".join)
IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(str)


def code_chars(invite: Invite) -> str:
    return invite.encode()[len(INVITE_PREFIX) :].replace("-", "")


def test_text_shape() -> None:
    text = SAMPLE.encode()
    assert text.startswith("bangor:0")
    groups = text[len(INVITE_PREFIX) :].split("-")
    assert all(len(g) == 5 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 5
    assert set("".join(groups)) <= set(ALPHABET)
    assert Invite.parse(text) == SAMPLE


def test_binary_layout() -> None:
    raw = SAMPLE.to_bytes()
    host = b"voice.example.org"
    body = bytes([1, len(host)]) + host + (7600).to_bytes(2, "big") + ROOM + SECRET + FP
    assert raw == body + _checksum(body)
    assert len(_checksum(body)) == 4


@given(
    st.one_of(HOSTNAMES, IPV4, IPV6),
    st.integers(min_value=1, max_value=65535),
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
)
def test_round_trip(host: str, port: int, room: bytes, secret: bytes, fp: bytes) -> None:
    invite = Invite(host, port, room, secret, fp)
    assert Invite.parse(invite.encode()) == invite
    assert invite.host == host  # already canonical: unchanged


def test_host_normalisation() -> None:
    assert Invite("bücher.example", 1, ROOM, SECRET, FP).host == "xn--bcher-kva.example"
    assert Invite("[::1]", 1, ROOM, SECRET, FP).host == "::1"
    assert Invite("2001:DB8:0:0::1", 1, ROOM, SECRET, FP).host == "2001:db8::1"
    long_host = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(long_host) == 253
    assert Invite.parse(Invite(long_host, 9, ROOM, SECRET, FP).encode()).host == long_host
    for bad in ("", "a b", "x" * 64, long_host + "c", "ex@mple.com"):
        with pytest.raises(InviteError, match="bad host"):
            Invite(bad, 1, ROOM, SECRET, FP)


def test_field_validation() -> None:
    for port in (0, 65536, -1):
        with pytest.raises(InviteError, match="bad port"):
            Invite("h", port, ROOM, SECRET, FP)
    with pytest.raises(InviteError):
        Invite("h", 1, ROOM[:7], SECRET, FP)
    with pytest.raises(InviteError):
        Invite("h", 1, ROOM, SECRET + b"x", FP)
    with pytest.raises(InviteError):
        Invite("h", 1, ROOM, SECRET, FP[:15])


def test_repr_hides_secret() -> None:
    assert SECRET.hex() not in repr(SAMPLE)


def test_forgiving_parse() -> None:
    chars = code_chars(SAMPLE)
    assert Invite.parse(chars) == SAMPLE  # no prefix
    assert Invite.parse("  BANGOR:" + chars.upper() + "\n") == SAMPLE
    assert Invite.parse("bangor " + " ".join(chars)) == SAMPLE  # prefix without colon
    sloppy = chars.replace("0", "o").replace("1", "l")
    assert Invite.parse(sloppy) == SAMPLE
    assert Invite.parse(chars.replace("1", "I").replace("0", "O")) == SAMPLE
    assert Invite.parse("-".join(chars)) == SAMPLE


@pytest.mark.parametrize("text", ["", "   ", "bangor:", "BANGOR: - -"])
def test_empty(text: str) -> None:
    with pytest.raises(InviteError, match=r"^invite code is empty$"):
        Invite.parse(text)


@pytest.mark.parametrize("bad", ["u", "!", "é", "_", "."])
def test_invalid_characters(bad: str) -> None:
    chars = code_chars(SAMPLE)
    with pytest.raises(InviteError, match=r"^invite code has invalid characters$"):
        Invite.parse(chars[:10] + bad + chars[10:])


def test_every_single_substitution_rejected() -> None:
    chars = code_chars(SAMPLE)
    checksum = "invite code checksum does not match (mistyped or tampered)"
    for pos in range(len(chars)):
        for c in ALPHABET:
            if c == chars[pos]:
                continue
            with pytest.raises(InviteError) as info:
                Invite.parse(chars[:pos] + c + chars[pos + 1 :])
            # Chars 1-3 hold the host length; a larger one reads as a cut-off code. Every
            # invite starts with "0": without the prefix, another first char is no invite.
            allowed = {checksum, "invite code is truncated"} if 1 <= pos <= 3 else {checksum}
            if pos == 0 and c != "o":
                allowed = {NOT_AN_INVITE}
            assert str(info.value) in allowed, (pos, c, str(info.value))


def test_every_truncation_rejected() -> None:
    chars = code_chars(SAMPLE)
    for n in range(1, len(chars)):
        with pytest.raises(InviteError, match=r"^invite code is truncated$"):
            Invite.parse(chars[:n])


NOT_AN_INVITE = "not a Bangor invite code (one starts with 'bangor:0')"


@pytest.mark.parametrize("text", ["hello", "x", "12345", "https://example.org/#x", "alice"])
def test_something_else_is_not_an_invite(text: str) -> None:
    """Not "truncated": nothing was cut off, it was never an invite."""
    with pytest.raises(InviteError) as info:
        Invite.parse(text)
    assert str(info.value) == NOT_AN_INVITE


@pytest.mark.parametrize("n", [1, 2, 9, 40])
def test_a_real_invite_cut_short_is_still_truncated(n: int) -> None:
    """With its prefix, or by its first character, a cut code is recognised as one."""
    text = SAMPLE.encode()
    for cut in (text[: len(INVITE_PREFIX) + n], code_chars(SAMPLE)[:n]):
        with pytest.raises(InviteError, match=r"^invite code is truncated$"):
            Invite.parse(cut)
    with pytest.raises(InviteError, match=r"^invite code is truncated$"):
        Invite.parse("bangor:hello")  # the prefix says it was meant as one


def test_extra_character_rejected() -> None:
    chars = code_chars(SAMPLE)
    with pytest.raises(InviteError, match="checksum"):
        Invite.parse(chars + "0")


def _code(raw: bytes) -> str:
    return _b32encode(raw + _checksum(raw))


def test_unsupported_version() -> None:
    raw = bytearray(SAMPLE.to_bytes()[:-4])
    raw[0] = 2
    with pytest.raises(InviteError, match=r"^unsupported invite version 2$"):
        Invite.parse(_code(bytes(raw)))


def test_bad_port_with_valid_checksum() -> None:
    raw = bytearray(SAMPLE.to_bytes()[:-4])
    pos = 2 + raw[1]
    raw[pos : pos + 2] = b"\0\0"
    with pytest.raises(InviteError, match=r"^invite code has a bad port$"):
        Invite.parse(_code(bytes(raw)))


def test_non_ascii_host_with_valid_checksum() -> None:
    raw = bytearray(SAMPLE.to_bytes()[:-4])
    raw[2] = 0xE9  # "é" in Latin-1: hosts travel as ASCII (IDNA for other names)
    with pytest.raises(InviteError, match=r"^invite code has a bad host$"):
        Invite.parse(_code(bytes(raw)))


def test_inconsistent_length_with_valid_checksum() -> None:
    raw = SAMPLE.to_bytes()[:-4] + b"extra"
    with pytest.raises(InviteError, match=r"^invite code is malformed$"):
        Invite.parse(_code(raw))


def test_ip_literals_survive() -> None:
    for host in ("127.0.0.1", "::1", "fe80::1"):
        got = Invite.parse(Invite(host, 7600, ROOM, SECRET, FP).encode())
        assert ipaddress.ip_address(got.host) == ipaddress.ip_address(host)
