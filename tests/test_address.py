"""bangor.address: the one parser and the one formatter of HOST:PORT."""

from __future__ import annotations

import pytest

from bangor.address import format_address, parse_address, parse_listen


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("127.0.0.1", 7600, "127.0.0.1:7600"),
        ("voice.example.org", 1, "voice.example.org:1"),
        ("::1", 7611, "[::1]:7611"),
        ("2001:db8::1", 65535, "[2001:db8::1]:65535"),
        ("[::1]", 7611, "[::1]:7611"),  # already bracketed: not twice
    ],
)
def test_format_brackets_ipv6_only(host: str, port: int, text: str) -> None:
    assert format_address(host, port) == text


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("h:1", ("h", 1)),
        ("127.0.0.1:7611", ("127.0.0.1", 7611)),
        ("[::1]:7611", ("::1", 7611)),
        ("[fe80::1%eth0]:9", ("fe80::1%eth0", 9)),
        ("myhost", ("myhost", 7600)),
        ("[::1]", ("::1", 7600)),
        (" myhost:7601\n", ("myhost", 7601)),
    ],
)
def test_parse_with_a_default_port(text: str, parsed: tuple[str, int]) -> None:
    assert parse_address(text, 7600) == parsed


def test_parse_round_trips_the_formatted_text() -> None:
    for host in ("::1", "10.0.0.2", "example.org", "2001:db8::7600"):
        assert parse_address(format_address(host, 7611)) == (host, 7611)
        assert parse_address(format_address(host, 7611), 7600) == (host, 7611)


def test_an_unbracketed_ipv6_address_is_ambiguous_where_the_port_is_optional() -> None:
    """``::1:7611`` is itself an IPv6 address: was 7611 meant as the port? Say how to
    write it instead of guessing (it used to become host ``::1:7611``, port 7600)."""
    for text in ("::1:7611", "::1", "2001:db8::1"):
        with pytest.raises(ValueError, match=r"in brackets, \[ADDRESS\]:PORT"):
            parse_address(text, 7600)


def test_where_the_port_is_required_the_last_colon_separates_it() -> None:
    assert parse_address("::1:7611") == ("::1", 7611)
    assert parse_address("10.0.0.2:7878") == ("10.0.0.2", 7878)


@pytest.mark.parametrize(
    "text",
    ["", "nowhere", ":7878", "host:0", "host:99999", "h:x", "h:", "[::1", "[::1]x", "[]:1", "h:٣"],
)
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="bad"):
        parse_address(text)


def test_port_zero_only_where_asked_for() -> None:
    assert parse_address("127.0.0.1:0", min_port=0) == ("127.0.0.1", 0)
    with pytest.raises(ValueError):
        parse_address("127.0.0.1:0")
    with pytest.raises(ValueError):
        parse_address("myhost:70000", 7600)


def test_a_listening_place_may_be_a_port_alone() -> None:
    assert parse_listen("9100", "127.0.0.1") == ("127.0.0.1", 9100)
    assert parse_listen(":0", "::1") == ("::1", 0)  # 0: the system chooses
    assert parse_listen("0.0.0.0:8443", "127.0.0.1") == ("0.0.0.0", 8443)
    assert parse_listen("[::]:8443", "127.0.0.1") == ("::", 8443)
    for bad in ("٣", "host:", "70000"):  # a non-ASCII digit is no port
        with pytest.raises(ValueError):
            parse_listen(bad, "127.0.0.1")
