"""Names checked and remote text escaped before a terminal sees it (``bangor.text``)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bangor.errors import BadNameError
from bangor.text import UNSAFE_CATEGORIES, check_name, escape

# What a member could put in a nickname or a chat line to fool a reader's terminal.
HOSTILE = {
    "erase the line, draw a fake one": "\x1b[2K\rbob verified: safety number 11111 22222",
    "retitle the window": "\x1b]0;pwned\x07",
    "clear the screen": "\x1b[2J\x1b[H",
    "C1 control sequence introducer": "\x9b2J",
    "right-to-left override": "\u202eevil\u202c",
    "isolates": "\u2066x\u2069",
    "zero width space and joiner": "a\u200bb\u200dc",
    "byte order mark": "\ufeffbob",
    "line separator": "one\u2028two",
    "next line": "one\x85two",
    "newline and tab": "one\ntwo\tthree",
    "tag characters": "\U000e0062\U000e006f",
}
SAFE = ["bob", "Zoë", "日本語", "🎧 gamer", "C:\\path", "[bold red]not markup[/]", "a b", ""]


def unsafe(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in UNSAFE_CATEGORIES]


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_every_character_a_terminal_obeys_is_escaped_visibly(text: str) -> None:
    shown = escape(text)
    assert unsafe(shown) == [] and shown != text
    assert shown.encode("ascii", "backslashreplace").decode("unicode_escape") == text


def test_escapes_are_written_like_python_writes_them() -> None:
    assert escape("\x1b[2K\rbob") == "\\x1b[2K\\x0dbob"
    assert escape("\u202eevil") == "\\u202eevil"
    assert escape("\U000e0001") == "\\U000e0001"


@pytest.mark.parametrize("text", SAFE)
def test_printable_text_is_shown_as_it_is(text: str) -> None:
    assert escape(text) == text
    check_name(text, "nickname", 64)


@given(st.text())
def test_escaped_text_never_holds_an_unsafe_character(text: str) -> None:
    shown = escape(text)
    assert unsafe(shown) == []
    assert (shown == text) == (unsafe(text) == [])


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_names_with_such_characters_are_refused(text: str) -> None:
    with pytest.raises(BadNameError, match=r"^nickname must not contain control, format") as info:
        check_name(text, "nickname", 64)
    assert unsafe(str(info.value)) == []  # the message names the character, escaped


def test_names_keep_their_length_limit() -> None:
    check_name("x" * 64, "nickname", 64)
    with pytest.raises(BadNameError, match=r"^user name must be at most 64 characters$"):
        check_name("x" * 65, "user name", 64)
