"""The screens and keys of the terminal UI, driven by Textual's pilot, on a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from bangor.tui import BangorApp, Launch
from bangor.tui.app import SPEAKING
from bangor.tui.forms import CreateScreen, JoinScreen
from bangor.wire.invite import Invite
from tests.integration.conftest import PASSWORD, ServerProcess
from tests.tui.conftest import call_screen, chat_text, fill, plain, screenshot, wait_until

pytestmark = pytest.mark.integration


def quiet_app(**launch: object) -> BangorApp:
    """An app that sends silence and plays nothing (no sound card on test machines)."""
    return BangorApp(Launch(source="silence", sink="null", **launch))  # type: ignore[arg-type]


async def test_create_room_screen_shows_invite_and_joins_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    server.add_user("alice")
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, JoinScreen)
        await pilot.press("f9")
        assert isinstance(app.screen, CreateScreen)
        fill(app, server=server.address, user="alice", password=PASSWORD, room="friends")
        await pilot.press("enter")
        create = app.screen
        await wait_until(pilot, lambda: create.invite_code, "the invite code")
        code = create.invite_code
        invite = Invite.parse(code)
        assert (invite.host, invite.port) == (server.host, server.port)
        screenshot(app, "tui-create", tmp_path)
        await pilot.press("f11")
        assert app.clipboard == code
        await pilot.click("#join")
        assert isinstance(app.screen, JoinScreen)
        assert app.screen.value("#invite") == code
        # The profile remembers the server and user for next time.
        assert app.profile.server == server.address and app.profile.user == "alice"


async def test_call_screen_members_speaking_chat_safety_and_volume(
    server: ServerProcess, tmp_path: Path
) -> None:
    for user in ("alice", "bob"):
        server.add_user(user)
    code = server.create_room("alice")
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        fill(app, invite=code, user="alice", password=PASSWORD)
        await pilot.press("enter")
        call = call_screen(app)
        await wait_until(pilot, lambda: call.state.you is not None, "joining")
        assert "room friends as alice" in plain(call.query_one("#title").render())

        bob = server.join(
            code, "bob", *("--input", "tone:440", "--vad", "off", "--output", "null"), stdin=""
        )
        try:
            await wait_until(pilot, lambda: len(call.state.members) == 1, "bob in the list")
            (bob_id,) = call.state.members
            table = call.query_one("#members")
            row = [plain(cell) for cell in table.get_row(str(bob_id))]  # type: ignore[attr-defined]
            assert row[1] == "bob"
            await wait_until(
                pilot,
                lambda: plain(table.get_cell(str(bob_id), "speaking")) == SPEAKING,  # type: ignore[attr-defined]
                "bob's speaking indicator",
            )
            assert "path relay" in plain(call.query_one("#status").render())

            # Safety numbers: the one alice's UI shows is the one bob printed.
            verified = bob.event("member_verified")
            await wait_until(
                pilot, lambda: call.state.members[bob_id].safety_number, "bob verified"
            )
            assert call.state.members[bob_id].safety_number == verified["safety_number"]
            await pilot.press("f6")
            shown = "\n".join(plain(s.render()) for s in app.screen.query(".member-safety"))
            groups = str(verified["safety_number"]).split()
            assert " ".join(groups[:4]) in shown and " ".join(groups[4:]) in shown
            screenshot(app, "tui-safety", tmp_path)
            await pilot.press("escape")
            assert app.screen is call

            # Chat both ways.
            fill(app, say="hello bob")
            await pilot.press("enter")
            assert bob.event("chat")["text"] == "hello bob"
            assert bob.proc.stdin is not None
            bob.proc.stdin.write("hi alice\n")
            bob.proc.stdin.flush()
            await wait_until(pilot, lambda: "<bob> hi alice" in chat_text(app), "bob's chat")
            assert "<alice> hello bob" in chat_text(app)

            # Volume of the selected member: F8 up, F7 down, in 10 % steps.
            await pilot.press("tab")  # to the member list
            await pilot.press("down")  # from yourself to bob
            assert call.selected_id() == bob_id
            await pilot.press("f8")
            await wait_until(pilot, lambda: call.state.members[bob_id].volume == 110, "110 %")
            await pilot.press("f7", "f7")
            await wait_until(pilot, lambda: call.state.members[bob_id].volume == 90, "90 %")
            assert plain(table.get_cell(str(bob_id), "volume")) == "90"  # type: ignore[attr-defined]
            screenshot(app, "tui-call", tmp_path)

            await pilot.press("f10")
            await wait_until(pilot, lambda: isinstance(app.screen, JoinScreen), "left")
            assert bob.event("member_left")["member"]["user"] == "alice"  # type: ignore[index]
        finally:
            bob.proc.terminate()
            bob.wait()
