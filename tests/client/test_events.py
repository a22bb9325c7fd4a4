"""Human lines and JSON for events whose fields others chose (names, chat, reasons)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import pytest

from bangor.cli import _emitter, _EscapingFormatter
from bangor.client import events as ev
from tests.test_text import HOSTILE, unsafe

FAKE_LINE = "\x1b[2K\rbob verified: safety number 11111 22222 33333 44444"
NICK = f"mallory{FAKE_LINE}\u202e"
TEXT = f"hi{FAKE_LINE}\x1b]0;pwned\x07\x9b2J"
MALLORY = ev.MemberInfo(2, "mallory", NICK)
YOU = ev.MemberInfo(1, "alice", "alice")

# One event of each kind, every text field in it written by someone else.
EVENTS = [
    ev.Joined("00" * 8, TEXT, YOU, (MALLORY,)),
    ev.MemberJoined(MALLORY),
    ev.MemberLeft(MALLORY),
    ev.MemberVerified(MALLORY, "1 2", "ab", "new"),
    ev.MemberRejected(ev.MemberInfo(2, NICK, NICK), TEXT),
    ev.KeyChanged(ev.MemberInfo(2, NICK, NICK), "1 2", "ab"),
    ev.ChatReceived(2, NICK, TEXT, "mallory"),
    ev.PathChanged("direct", 2, 1.0, NICK),
    ev.AudioState(False, False, False, False, {NICK: 50}),
    ev.Notice(TEXT),
    ev.WarningEvent(TEXT),
    ev.ErrorEvent(1, TEXT),
    ev.Left(TEXT),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_a_human_line_holds_no_character_a_terminal_would_obey(event: ev.Event) -> None:
    line = ev.describe(event)
    assert unsafe(line) == []
    assert "\\x1b[2K\\x0dbob verified" in line  # shown, visibly, not obeyed


@pytest.mark.parametrize("json_mode", [False, True])
def test_what_the_headless_client_prints_is_safe_and_json_keeps_the_text(
    json_mode: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    emit = _emitter(argparse.Namespace(json=json_mode))
    for text in HOSTILE.values():
        emit(ev.ChatReceived(2, NICK, text, "mallory"))
        emit(ev.WarningEvent(text))  # to stderr without --json
    out, err = capsys.readouterr()
    # One line per event: nothing but the newline that ends it is a control.
    lines = out.split("\n") + err.split("\n")
    assert len(lines) == 2 + 2 * len(HOSTILE) and unsafe("".join(lines)) == []
    if json_mode:  # data for scripts: escaped by JSON, and exactly what was sent
        chats = [json.loads(line) for line in out.split("\n")[:-1]][::2]
        assert [chat["text"] for chat in chats] == list(HOSTILE.values())
        assert all(chat["nick"] == NICK for chat in chats)


def test_server_log_lines_escape_what_clients_sent() -> None:
    record = logging.LogRecord(
        "bangor.server", logging.INFO, __file__, 1, "protocol error: %s", (TEXT,), None
    )
    line = _EscapingFormatter("%(name)s: %(message)s").format(record)
    assert unsafe(line) == [] and line.startswith("bangor.server: protocol error: hi\\x1b")


def test_a_librarys_traceback_is_one_escaped_line() -> None:
    """asyncpg's pool logs a warning with its exception while PostgreSQL is down: the
    operator sees what went wrong, never a traceback (tests/integration/test_postgres.py)."""
    try:
        raise ConnectionError(f"the database system is shutting down {TEXT}\nmore")
    except ConnectionError:
        record = logging.LogRecord(
            "asyncpg.pool", logging.WARNING, __file__, 1, "retrying", (), sys.exc_info()
        )
    record.stack_info = "Stack (most recent call last):\n  File ..."
    text = _EscapingFormatter("%(name)s: %(message)s").format(record)
    assert "Traceback" not in text and "File" not in text and unsafe(text) == []
    assert text.startswith(
        "asyncpg.pool: retrying (ConnectionError: the database system is shutting down hi\\x1b"
    )


def test_joined_says_who_is_here_and_whose_account_it_is() -> None:
    erin2 = ev.MemberInfo(3, "erin", "erin2")
    others = (ev.MemberInfo(4, "alice", "alice"), ev.MemberInfo(5, "carol", "carol"))
    line = ev.describe(ev.Joined("00" * 8, "friends", erin2, others))
    assert line == "joined room friends as erin2 (account erin); here: alice, carol"
    line = ev.describe(ev.Joined("00" * 8, "friends", YOU, ()))
    assert line == "joined room friends as alice; nobody else is here yet"


def test_warnings_are_their_own_event_and_say_warning_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert ev.WarningEvent("no audio devices").to_json() == {
        "event": "warning",
        "message": "no audio devices",
    }
    _emitter(argparse.Namespace(json=False))(ev.WarningEvent("no audio devices"))
    assert capsys.readouterr() == ("", "warning: no audio devices\n")
