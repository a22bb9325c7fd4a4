"""The screens and keys of the terminal UI, driven by Textual's pilot, on a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Checkbox, DataTable, Input, Label, OptionList, Static
from textual.widgets._toast import Toast

from bangor.client import events as ev
from bangor.errors import BangorError
from bangor.io.devices import DeviceInfo, list_devices
from bangor.settings import ClientSettings
from bangor.tui import BangorApp, Launch
from bangor.tui.app import SILENT, SPEAKING
from bangor.tui.config import load_profile
from bangor.tui.dialogs import DeviceChoice, DevicesScreen, HelpScreen
from bangor.tui.forms import CreateScreen, JoinScreen
from bangor.wire.invite import Invite
from tests.integration.conftest import PASSWORD, ServerProcess
from tests.tui.conftest import (
    MemoryKeyring,
    call_screen,
    chat_text,
    fill,
    plain,
    screenshot,
    wait_until,
)

pytestmark = pytest.mark.integration


def rendered_lines(widget: Widget) -> list[str]:
    """What ``widget`` shows, line by line, trailing blanks cut."""
    region = Region(0, 0, widget.size.width, widget.size.height)
    return [strip.text.rstrip() for strip in widget.render_lines(region)]


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
        assert "".join(rendered_lines(create.query_one("#invite-code", Static))) == code
        assert (invite.host, invite.port) == (server.host, server.port)
        await pilot.pause()  # let the footer catch up with the focus
        screenshot(app, "tui-create", tmp_path)
        await pilot.press("f11")
        assert app.clipboard == code
        await pilot.click("#join")
        assert isinstance(app.screen, JoinScreen)
        assert app.screen.value("#invite") == code
        fill(app, user="alice")
        screenshot(app, "tui-join", tmp_path)
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
            # Both on this machine: bob's voice path comes up direct (the relay first).
            await wait_until(
                pilot,
                lambda: "path direct |" in plain(call.query_one("#status").render()),
                "a direct path to bob in the status bar",
            )

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


async def test_call_keys_talk_mute_deafen_help_devices_and_errors(
    server: ServerProcess, tmp_path: Path
) -> None:
    server.add_user("alice")
    code = server.create_room("alice")
    # A tone without voice activity detection: voice goes out whenever the keys allow.
    app = BangorApp(Launch(source="tone:440", sink="null", settings=ClientSettings(vad=False)))
    async with app.run_test(size=(80, 24)) as pilot:
        fill(app, invite=code, user="alice", password=PASSWORD)
        app.screen.query_one("#ptt", Checkbox).value = True
        await pilot.press("enter")
        call = call_screen(app)
        await wait_until(pilot, lambda: call.state.audio is not None, "the audio state")

        def audio() -> ev.AudioState:
            assert call.state.audio is not None
            return call.state.audio

        def status() -> str:
            return plain(call.query_one("#status").render())

        def own_indicator() -> str:
            return plain(call.query_one("#members").get_cell_at((0, 0)))  # type: ignore[attr-defined]

        assert audio().push_to_talk and not audio().talking
        assert "push-to-talk" in status()
        await wait_until(pilot, lambda: call.state.bitrate is not None, "the first stats")
        assert not call.state.sending_voice and own_indicator() == SILENT
        await pilot.press("f4")
        await wait_until(pilot, lambda: audio().talking, "talking")
        assert "TALKING" in status()
        await wait_until(pilot, lambda: own_indicator() == SPEAKING, "our voice going out")
        await pilot.press("f2")
        await wait_until(pilot, lambda: audio().muted, "muted")
        assert "MUTED" in status()
        assert plain(call.query_one("#members").get_cell_at((0, 2))) == "MUTE"  # type: ignore[attr-defined]
        await wait_until(pilot, lambda: own_indicator() == SILENT, "muted: no voice out")
        await pilot.press("f2")
        await wait_until(pilot, lambda: not audio().muted, "unmuted")
        await pilot.press("f4")
        await wait_until(pilot, lambda: not audio().talking, "not talking")
        await wait_until(pilot, lambda: own_indicator() == SILENT, "released: no voice out")
        await pilot.press("f3")
        await wait_until(pilot, lambda: audio().deafened, "deafened")
        assert "DEAFENED" in status()
        await pilot.press("f3")
        await wait_until(pilot, lambda: not audio().deafened, "undeafened")

        # Volume keys with only yourself selected: a hint, nothing sent.
        await pilot.press("f8")
        assert audio().volumes == {}

        # A command the client refuses: the error shows in the chat pane.
        fill(app, say="/volume nobody 50")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "no member called 'nobody'" in chat_text(app), "error")

        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        keys = plain(app.screen.query_one("#help-keys", Static).render())
        assert all(key in keys for key in ("F2", "F3", "F4", "F10", "Ctrl+Q"))
        assert "NEW! changed" in plain(app.screen.query_one("#help-legend", Static).render())
        screenshot(app, "tui-help", tmp_path)
        await pilot.press("escape")
        assert app.screen is call

        # Other devices: the call rejoins with them, keeping mute on.
        await pilot.press("f2")
        await wait_until(pilot, lambda: audio().muted, "muted")
        await pilot.press("f5")
        picker = app.screen
        assert isinstance(picker, DevicesScreen)
        await check_device_picker(pilot, picker, "default", "null")
        assert app.screen is call
        assert (app.profile.input, app.profile.output) == ("default", "null")
        assert load_profile().input == "default"  # saved in the config file
        await wait_until(
            pilot, lambda: chat_text(app).count("joined room friends") == 2, "the rejoin"
        )
        if not list_devices_or_none():  # no sound card here: said so, the call goes on
            assert "joining without a microphone" in chat_text(app)
        await wait_until(pilot, lambda: audio().muted and call.state.you is not None, "muted")

        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, JoinScreen), "back to joining")


def list_devices_or_none() -> list[DeviceInfo]:
    try:
        return list_devices()
    except BangorError:
        return []


async def check_device_picker(
    pilot: Pilot[Any], picker: DevicesScreen, source: str, sink: str
) -> None:
    """The picker lists what PortAudio sees, or says clearly that it sees nothing."""
    devices = list_devices_or_none()
    inputs = picker.query_one("#inputs", OptionList)
    # default, silence, and the spec in use when it is none of those (tone:440, say)
    builtin = 2 + (picker.current.input not in ("default", "silence"))
    highlighted = inputs.get_option_at_index(inputs.highlighted or 0)
    assert highlighted.id == picker.current.input
    if devices:
        assert inputs.option_count > builtin
    else:  # no sound card on the test machine: a clear message, and the call still works
        problem = plain(picker.query_one("#devices-problem", Static).render())
        assert "no audio devices" in problem or "PortAudio" in problem
        assert inputs.option_count == builtin
    inputs.highlighted = inputs.get_option_index(source)
    outputs = picker.query_one("#outputs", OptionList)
    outputs.highlighted = outputs.get_option_index(sink)
    await pilot.click("#use")


async def test_join_errors_show_in_the_form(server: ServerProcess) -> None:
    server.add_user("alice")
    code = server.create_room("alice")
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        join = app.screen
        assert isinstance(join, JoinScreen)

        def error_line() -> str:
            return plain(join.query_one(".error-line", Static).render())

        fill(app, invite="bangor:not-an-invite", user="alice", password=PASSWORD)
        await pilot.press("enter")
        assert error_line().startswith("invite:")
        fill(app, invite=code, password="wrong")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "could not join" in error_line(), "the login error")
        assert app.screen is join and app.exit_code == 3

        await pilot.press("f9")
        create = app.screen
        assert isinstance(create, CreateScreen)
        fill(app, server=server.address, user="alice", password="wrong", room="other")
        await pilot.press("enter")
        await wait_until(
            pilot,
            lambda: "could not create" in plain(create.query_one(".error-line", Static).render()),
            "the create error",
        )
        assert not create.invite_code
        await pilot.press("escape")
        await pilot.press("ctrl+q")
    assert app.return_code == 3  # as `bangor join` exits on a wrong password


async def test_auto_join_leaves_and_exits_0(server: ServerProcess, tmp_path: Path) -> None:
    server.add_user("alice")
    code = server.create_room("alice")
    app = quiet_app(invite=code, user="alice", password=PASSWORD, auto_join=True)
    async with app.run_test(size=(80, 24)) as pilot:
        call = call_screen(app)
        await wait_until(pilot, lambda: call.state.you is not None, "joining")
        await pilot.press("f10")
        await wait_until(pilot, lambda: app.return_code is not None, "the app to exit")
    assert app.return_code == 0


async def test_remembered_password_comes_from_the_keyring(
    server: ServerProcess, tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    server.add_user("alice")
    code = server.create_room("alice")
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        join = app.screen
        assert isinstance(join, JoinScreen)
        assert "OS keyring (MemoryKeyring)" in plain(join.query(".hint").last().render())
        join.query_one("#remember", Checkbox).value = True
        fill(app, invite=code, user="alice", password="mistyped")
        await pilot.press("enter")
        error = join.query_one(".error-line", Static)
        await wait_until(pilot, lambda: "could not join" in plain(error.render()), "refusal")
        assert memory_keyring.passwords == {}  # a password that failed is not kept
        fill(app, password=PASSWORD)
        await pilot.press("enter")
        call = call_screen(app)
        await wait_until(pilot, lambda: call.state.you is not None, "joining")
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, JoinScreen), "back to joining")
    assert memory_keyring.passwords == {("bangor", f"alice@{server.address}"): PASSWORD}
    assert load_profile().server == server.address  # where the create screen will point
    assert PASSWORD not in (tmp_path / "config" / "bangor" / "config.toml").read_text()

    # Next time: the form fills the password in, and `bangor join` needs no prompt.
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.screen.query_one("#user", Input).value == "alice"  # from the profile
        fill(app, invite=code)
        await pilot.pause()
        assert app.screen.query_one("#password", Input).value == PASSWORD
    app = quiet_app(invite=code, user="alice", auto_join=True)
    async with app.run_test(size=(80, 24)) as pilot:
        call = call_screen(app)
        await wait_until(pilot, lambda: call.state.you is not None, "joining")
        await pilot.press("ctrl+q")
    assert app.return_code == 0


async def test_server_dying_mid_call_shows_in_the_ui_and_sets_exit_5(
    server: ServerProcess,
) -> None:
    server.add_user("alice")
    code = server.create_room("alice")
    app = quiet_app(
        invite=code,
        user="alice",
        password=PASSWORD,
        auto_join=True,
        settings=ClientSettings(reconnect_for=1.5),
    )
    async with app.run_test(size=(80, 24)) as pilot:
        call = call_screen(app)
        await wait_until(pilot, lambda: call.state.you is not None, "joining")
        server.proc.kill()
        server.proc.wait()
        status = call.query_one("#status", Static)
        await wait_until(pilot, lambda: "reconnecting" in plain(status.render()), "reconnecting")
        assert "reconnecting (try 1" in chat_text(app)
        # Then it gives up (after reconnect_for), as `bangor join` does.
        await wait_until(pilot, lambda: "disconnected" in plain(status.render()), "the news")
        assert "disconnected" in chat_text(app) and app.screen is call
        await pilot.press("f10")
        await wait_until(pilot, lambda: app.return_code is not None, "the app to exit")
    assert app.return_code == 5  # as `bangor join` exits when the server dies


async def test_form_keys_help_devices_create_and_back() -> None:
    app = BangorApp(Launch(profile="work"))  # devices from the profile: none saved yet
    async with app.run_test(size=(80, 24)) as pilot:
        join = app.screen
        assert isinstance(join, JoinScreen)
        assert "input default, output default" in plain(join.query_one("#devices-line").render())
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        assert "F9" in plain(app.screen.query_one("#help-keys", Static).render())
        await pilot.press("escape")
        assert app.screen is join

        await pilot.press("f5")
        picker = app.screen
        assert isinstance(picker, DevicesScreen)
        await check_device_picker(pilot, picker, "silence", "null")
        assert app.screen is join
        assert "input silence, output null" in plain(join.query_one("#devices-line").render())
        assert (load_profile("work").input, load_profile("work").output) == ("silence", "null")
        assert load_profile().input == "default"  # other profiles untouched

        await pilot.press("f9")
        assert isinstance(app.screen, CreateScreen)
        await pilot.press("enter")  # nothing filled in: said so, nothing sent
        assert "needed" in plain(app.screen.query_one(".error-line", Static).render())
        await pilot.press("escape")
        assert app.screen is join
        await pilot.click("#quit")
    assert app.return_code == 0


INVITE = Invite("bangor-server.example.org", 7600, bytes(8), bytes(16), bytes(16)).encode()


@pytest.mark.parametrize("width", [80, 100])
async def test_the_invite_wraps_between_groups_and_the_copy_claims_no_more_than_it_knows(
    monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    async def created(*args: object, **kwargs: object) -> str:
        return INVITE

    monkeypatch.setattr("bangor.tui.forms.create_room", created)
    app = quiet_app()
    async with app.run_test(size=(width, 24), notifications=True) as pilot:
        await pilot.press("f9")
        create = app.screen
        fill(app, server="127.0.0.1:7600", user="alice", password="pw", room="friends")
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: isinstance(create, CreateScreen) and create.invite_code, "the code"
        )
        lines = rendered_lines(create.query_one("#invite-code", Static))
        assert len(lines) > 1 and "".join(lines) == INVITE
        # Each line but the last ends after a group's "-": no group is cut in two.
        assert all(line.endswith("-") for line in lines[:-1])
        assert all(len(group) == 5 for line in lines[1:] for group in line.split("-")[:-1])
        await pilot.press("f11")
        assert app.clipboard == INVITE
        await wait_until(pilot, lambda: app.screen.query(Toast), "the notification")
        said = " ".join(plain(toast.render()) for toast in app.screen.query(Toast))
        assert "sent to the clipboard (terminal OSC 52)" in said and "copied" not in said


async def test_own_row_title_and_warnings_on_joining(monkeypatch: pytest.MonkeyPatch) -> None:
    """Your row keeps "(you)" in sight (your account is in the title); what joining warns
    of (no sound card) is a line in the chat pane, not a pop-up, and once per run."""
    nicks = iter(["erin2", "a-very-long-nickname"])

    async def call(invite: Invite, login: object, emit: Any, *, stop: Any, **_: object) -> None:
        emit(ev.WarningEvent("no audio devices found; joining without a microphone"))
        you = ev.MemberInfo(1, "erin", next(nicks))
        emit(ev.Joined("00" * 8, "friends", you, (ev.MemberInfo(2, "alice", "alice"),)))
        await stop.wait()

    monkeypatch.setattr("bangor.tui.app.join_call", call)
    app = quiet_app(invite=INVITE, user="erin", password="pw", auto_join=True)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        screen = call_screen(app)
        await wait_until(pilot, lambda: screen.state.you is not None, "joining")
        table = screen.query_one("#members", DataTable)
        assert plain(table.get_cell("1", "name")) == "erin2 (you)"
        title = plain(screen.query_one("#title", Label).render())
        assert title == "Bangor: room friends as erin2 (account erin)"
        assert "warning: no audio devices found" in chat_text(app)
        await pilot.pause(0.2)
        assert not app.screen.query(Toast)  # nothing over the chat line

        screen.rejoin()  # as after picking devices: the same warning, not said again
        await wait_until(pilot, lambda: chat_text(app).count("joined room friends") == 2, "rejoin")
        assert chat_text(app).count("warning: no audio devices found") == 1
        assert plain(table.get_cell("1", "name")) == "a-very-lo… (you)"  # 16 columns
        await pilot.press("f10")


async def test_the_device_picker_shows_its_note_whole_and_its_buttons() -> None:
    app = quiet_app()
    note = "Using other devices rejoins the call (the others see you leave and come back)."
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(DevicesScreen(DeviceChoice("default", "default"), note=note))
        await pilot.pause()
        picker = app.screen
        assert " ".join(rendered_lines(picker.query_one("#devices-note", Static))) == note
        dialog = picker.query_one("#devices").region
        for widget in picker.query("#devices-problem, #inputs, #outputs, #use, #cancel"):
            assert dialog.contains_region(widget.region), widget
        await pilot.press("escape")
