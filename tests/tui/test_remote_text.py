"""The call screen shows what others wrote literally: no markup, no terminal controls.

No server: ``join_call`` is replaced by one that reports what a hostile room would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from textual.widgets import DataTable, Label, Static
from textual.widgets._toast import Toast

from bangor.client import events as ev
from bangor.tui import BangorApp, Launch
from bangor.tui.forms import JoinScreen
from bangor.wire.invite import Invite
from tests.test_text import unsafe
from tests.tui.conftest import call_screen, chat_text, fill, plain, wait_until

INVITE = Invite("127.0.0.1", 7600, bytes(8), bytes(16), bytes(16)).encode()
MARKUP = "[bold red]loud[/] [@click=app.quit]quit[/] [link=http://x]y[/link]"
NICK = f"mal{MARKUP}\x1b[2K\u202e"
ROOM = f"room{MARKUP}"
CHAT = f"{MARKUP} \x1b[31mred\x1b[0m \x1b]0;pwned\x07"
ERROR = f"server says {MARKUP}\x1b[2J"
MALLORY = ev.MemberInfo(2, "mallory", NICK)


async def hostile_call(
    invite: Invite, login: Any, emit: Any, *, stop: asyncio.Event, **_: Any
) -> None:
    """What a hostile room (or server) tells the UI, then the call goes on until left."""
    emit(ev.Joined("00" * 8, ROOM, ev.MemberInfo(1, "alice", "alice"), (MALLORY,)))
    emit(ev.ChatReceived(2, NICK, CHAT, "mallory"))
    emit(ev.MemberRejected(MALLORY, ERROR))
    emit(ev.ErrorEvent(1, ERROR))
    emit(ev.WarningEvent(ERROR))
    await stop.wait()


def shown(widget: Static) -> str:
    return plain(widget.render())


async def test_markup_and_controls_from_others_are_shown_as_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bangor.tui.app.join_call", hostile_call)
    app = BangorApp(Launch(invite=INVITE, user="alice", password="pw", auto_join=True))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        call = call_screen(app)
        await wait_until(pilot, lambda: "server says" in chat_text(app), "the error line")
        title = shown(call.query_one("#title", Label))
        assert f"room {'room' + MARKUP} as alice" in title
        table = call.query_one("#members", DataTable)
        name = plain(table.get_cell("2", "name"))
        assert name == f"mal{MARKUP}\\x1b[2K\\u202e (mallory)"
        chat = chat_text(app)
        assert f"{MARKUP} \\x1b[31mred\\x1b[0m \\x1b]0;pwned\\x07" in chat
        # Room and nick on joining, sender and text of the chat, nick and reason of the
        # rejection, the error, the warning: each shown whole, none taken as markup.
        assert chat.count(MARKUP) == 8
        await wait_until(pilot, lambda: app.screen.query(Toast), "the error's notification")
        toasts = [shown(toast) for toast in app.screen.query(Toast)]
        assert any(f"server says {MARKUP}\\x1b[2J" in toast for toast in toasts), toasts
        for text in [title, name, chat, *toasts]:
            assert unsafe(text.replace("\n", "")) == []
        await pilot.press("f10")


async def test_a_nickname_with_controls_is_refused_on_the_join_screen() -> None:
    app = BangorApp(Launch())
    async with app.run_test(size=(80, 24)) as pilot:
        fill(app, invite=INVITE, user="alice", password="pw", nick="bob\u202e")
        await pilot.press("enter")
        assert isinstance(app.screen, JoinScreen)  # no call started
        error = shown(app.screen.query_one(".error-line", Static))
        assert "nickname must not contain control, format or line-break characters" in error
