"""The Textual app: join and create screens, and the call screen over ``join_call``.

The call screen drives the call only through ``join_call``'s public hooks: it reads
events from ``emit`` and puts the same command and chat lines a headless user types
into ``lines`` (``/mute``, ``/volume 42 50``, chat text). No protocol code here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, RichLog, Static
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from bangor.client import events as ev
from bangor.client.app import MAX_VOLUME_PERCENT, Login, join_call
from bangor.errors import BangorError, ExitCode
from bangor.settings import MAX_CHAT_TEXT, ClientSettings
from bangor.text import escape
from bangor.tui.config import (
    DEFAULT_PROFILE,
    PasswordStore,
    Profile,
    load_profile,
    save_profile,
)
from bangor.tui.dialogs import (
    CALL_KEYS,
    CALL_LEGEND,
    DeviceChoice,
    DevicesScreen,
    HelpScreen,
    SafetyScreen,
)
from bangor.tui.forms import JoinScreen, invite_server
from bangor.tui.state import DEFAULT_VOLUME, CallState, fit, literal
from bangor.wire.invite import Invite

# Seconds between the stats events the call screen asks for: often enough for live
# speaking indicators (the engine counts a speaker as speaking for 200 ms after a frame).
UI_STATS_INTERVAL = 0.25
VOLUME_STEP = 10  # percent per F7/F8 press
CHAT_HISTORY_LINES = 2000  # lines the chat pane keeps for the session
CHAT_MIN_WIDTH = 20  # columns the chat pane wraps at, at the least
SPEAKING = "◉"  # in the member list, beside whoever is speaking now (you: sending voice)
SILENT = "○"
MEMBER_WIDTH = 16  # columns of the member list's name column (the pane is 34 wide)
# SIGTERM: leave the call cleanly, then exit. Not SIGHUP: with the terminal gone the UI
# cannot shut down cleanly (it hangs writing to it), so the default (die) is better: the
# server sees the connection close and tells the others.
QUIT_SIGNALS = (signal.SIGTERM,)


@dataclass
class Launch:
    """What the command line gave the UI (None: use the saved profile or ask)."""

    invite: str | None = None
    user: str | None = None
    nick: str | None = None
    password: str | None = None  # BANGOR_PASSWORD
    source: str | None = None
    sink: str | None = None
    settings: ClientSettings = field(default_factory=ClientSettings)
    record_path: Path | None = None
    duration: float | None = None
    auto_join: bool = False  # `bangor join INVITE`: join at once when the password is known
    config_path: Path | None = None  # default: the user's config dir
    profile: str = DEFAULT_PROFILE  # which [profiles.NAME] table of the config


class CallEvent(Message):
    """A client event, delivered to the call screen on the UI's loop."""

    def __init__(self, event: ev.Event) -> None:
        super().__init__()
        self.event = event


class CallScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("f2", "mute", "Mute"),
        Binding("f3", "deafen", "Deafen"),
        Binding("f4", "talk", "Talk"),
        Binding("f5", "devices", "Devices"),
        Binding("f6", "safety", "Safety"),
        Binding("f7", "volume(-1)", "Vol-"),
        Binding("f8", "volume(1)", "Vol+"),
        Binding("f10", "leave", "Leave"),
    ]

    def __init__(self, invite: Invite, login: Login, remember: bool = False) -> None:
        super().__init__()
        self.invite = invite
        self.login = login
        self.remember_password = remember
        self.state = CallState()
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.stop = asyncio.Event()  # a new one for each join (see rejoin)
        self.ended = asyncio.Event()
        self.rejoining = False
        self.joining = True  # until this join's `joined`: devices are being opened
        self.error: BangorError | None = None

    @property
    def bangor(self) -> BangorApp:
        assert isinstance(self.app, BangorApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Label(literal(f"Bangor: joining {invite_server(self.invite)}..."), id="title")
        with Horizontal(id="call-body"):
            with Vertical(id="members-pane"):
                yield DataTable(id="members", cursor_type="row", zebra_stripes=False)
                yield Static(self.state.meter(), id="meter", markup=False)
            with Vertical(id="chat-pane"):
                yield RichLog(
                    id="chat", wrap=True, min_width=CHAT_MIN_WIDTH, max_lines=CHAT_HISTORY_LINES
                )
                yield Input(
                    id="say",
                    placeholder="chat (Enter sends)",
                    max_length=MAX_CHAT_TEXT,
                    compact=True,
                )
        yield Static("connecting...", id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#members", DataTable)
        table.add_column(" ", key="speaking", width=1)
        table.add_column("Member", key="name", width=MEMBER_WIDTH)
        table.add_column("Vol", key="volume", width=4)
        table.add_column("Key", key="trust", width=4)
        self.query_one("#say", Input).focus()
        self.lines.put_nowait("/audio")  # the first audio event: the state the call starts in
        self.run_call()

    # --- the call ------------------------------------------------------------------

    @work(exclusive=True, exit_on_error=False)
    async def run_call(self) -> None:
        app = self.bangor
        try:
            while True:
                self.stop = asyncio.Event()
                self.joining = True
                await join_call(
                    self.invite,
                    self.login,
                    self.emit,
                    source_spec=app.source_spec(),
                    sink_spec=app.sink_spec(),
                    record_path=app.launch.record_path,
                    duration=app.launch.duration,
                    read_stdin=False,
                    stop=self.stop,
                    settings=dataclasses.replace(app.settings, stats_interval=UI_STATS_INTERVAL),
                    lines=self.lines,
                )
                if not self.rejoining:
                    break
                self.rejoining = False
                for line in self.restore_lines():
                    self.lines.put_nowait(line)  # handled once joined again
        except BangorError as exc:
            self.error = exc
        except Exception as exc:  # never a traceback in the user's face
            self.error = BangorError(f"unexpected error: {exc!r}")
        finally:
            self.ended.set()
        self.call_after_refresh(self.call_ended)

    def rejoin(self) -> None:
        """Leave and join again, so that newly picked devices take effect."""
        if not self.ended.is_set():
            self.rejoining = True
            self.stop.set()
            self.log_line("rejoining with the new devices...", "dim")

    def restore_lines(self) -> list[str]:
        """Commands that bring back mute, deafen, talk and volumes after a rejoin."""
        lines = ["/audio"]
        audio = self.state.audio
        if audio is not None:
            lines += ["/mute"] if audio.muted else []
            lines += ["/deafen"] if audio.deafened else []
            lines += ["/talk on"] if audio.push_to_talk and audio.talking else []
        lines += [
            f"/volume {sid} {view.volume}"
            for sid, view in self.state.members.items()
            if view.volume != DEFAULT_VOLUME
        ]
        return lines

    def emit(self, event: ev.Event) -> None:
        self.post_message(CallEvent(event))  # handled on the UI's turn, in order

    def call_ended(self) -> None:
        app = self.bangor
        if self.error is not None:
            app.exit_code = self.error.exit_code
            message = str(self.error)
            if self.state.you is None:  # never got in: back to the form to fix it
                app.pop_screen()
                if isinstance(app.screen, JoinScreen):
                    app.screen.show_error(f"could not join: {message}")
                return
            self.log_line(f"disconnected: {message}", "bold red")
            status = literal(f"disconnected: {message} (F10 leaves)")
            self.query_one("#status", Static).update(status)
            self.notify(escape(message), severity="error", timeout=10, markup=False)
            return
        app.exit_code = ExitCode.OK
        if app.launch.auto_join:
            app.finish()
        else:
            app.pop_screen()

    async def leave(self) -> None:
        """Leave the room cleanly and wait until the client has."""
        self.rejoining = False
        self.stop.set()
        await self.ended.wait()

    def on_call_event(self, message: CallEvent) -> None:
        event = message.event
        self.state.apply(event)
        if isinstance(event, ev.Joined):
            you = event.you
            account = f" (account {you.user})" if you.user != you.nick else ""
            title = literal(f"Bangor: room {event.room} as {you.nick}{account}")
            self.query_one("#title", Label).update(title)
            self.joining = False
            self.bangor.joined(self.invite, self.login, self.remember_password)
        if isinstance(event, ev.WarningEvent):
            self.warn(event.message)
        elif isinstance(event, ev.ErrorEvent):
            self.log_line(ev.describe(event), "red")
            self.notify(escape(event.message), severity="error", timeout=6, markup=False)
        elif isinstance(event, ev.MemberRejected | ev.KeyChanged):
            self.log_line(ev.describe(event), "bold red")
        elif isinstance(event, ev.Reconnecting):
            self.log_line(ev.describe(event), "yellow")
        elif isinstance(event, ev.ChatReceived):
            # The account name beside a nickname: nicknames are chosen freely, names are not.
            who = event.nick if event.user in ("", event.nick) else f"{event.nick} ({event.user})"
            self.log_chat(who, event.text)
        elif not isinstance(event, ev.Stats | ev.AudioState | ev.PathChanged | ev.Left):
            self.log_line(ev.describe(event), "dim")
        self.refresh_members()
        self.query_one("#meter", Static).update(self.state.meter())
        self.query_one("#status", Static).update(self.state.status_line())

    def warn(self, message: str) -> None:
        """A warning goes in the chat pane, never in a pop-up over the chat line. What
        joining says (no sound card, say) is said once per run, not on every rejoin."""
        seen = self.bangor.join_warnings
        if self.joining:
            if message in seen:
                return
            seen.add(message)
        self.log_line(f"warning: {message}", "yellow")

    # --- drawing -------------------------------------------------------------------

    def log_line(self, text: str, style: str = "") -> None:
        self.query_one("#chat", RichLog).write(literal(text, style))

    def log_chat(self, who: str, text: str) -> None:
        line = literal(f"<{who}> ", "bold cyan")
        line.append_text(literal(text))
        self.query_one("#chat", RichLog).write(line)

    def refresh_members(self) -> None:
        table = self.query_one("#members", DataTable)
        selected = self.selected_id()
        table.clear()
        state = self.state
        if state.you is not None:
            you = state.you
            # Your own row: the microphone's state where others show their volume; your
            # account is in the title, so the nick (cut if need be) and "(you)" fit.
            name = fit(escape(you.nick), MEMBER_WIDTH - len(" (you)"))
            table.add_row(
                self.indicator(state.sending_voice),
                Text(f"{name} (you)", style="bold"),
                state.mic_short(),
                "",
                key=str(you.session_id),
            )
        for sid, view in sorted(state.members.items(), key=lambda kv: kv[1].info.nick.casefold()):
            table.add_row(
                self.indicator(view.speaking),
                literal(view.label),
                f"{view.volume}",
                {"new": "new", "known": "ok", "changed": "NEW!", "rejected": "BAD"}.get(
                    view.trust, "..."
                ),
                key=str(sid),
            )
        if selected is not None:
            with contextlib.suppress(RowDoesNotExist):  # the selected member left
                table.move_cursor(row=table.get_row_index(str(selected)))

    @staticmethod
    def indicator(speaking: bool) -> Text:
        return Text(SPEAKING, style="bold green") if speaking else Text(SILENT, style="dim")

    def selected_id(self) -> int | None:
        table = self.query_one("#members", DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return int(key.value) if key.value is not None else None

    # --- keys ----------------------------------------------------------------------

    def send(self, line: str) -> None:
        self.lines.put_nowait(line)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value
        event.input.value = ""
        if not text.strip():
            return
        self.send(text)
        if not text.startswith("/") or text.startswith("//"):
            # The server does not echo our own chat back: show it here.
            me = self.state.you.nick if self.state.you else self.login.user
            self.log_chat(me, text[1:] if text.startswith("//") else text)

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(CALL_KEYS, CALL_LEGEND))

    def action_mute(self) -> None:
        audio = self.state.audio
        self.send("/unmute" if audio is not None and audio.muted else "/mute")

    def action_deafen(self) -> None:
        audio = self.state.audio
        self.send("/undeafen" if audio is not None and audio.deafened else "/deafen")

    def action_talk(self) -> None:
        audio = self.state.audio
        if audio is not None and not audio.push_to_talk:
            # The client's own notice names --ptt; in the UI it is a box on the join screen.
            self.notify("push-to-talk is off: tick it on the join screen (or join with --ptt)")
            return
        self.send("/talk")

    def action_volume(self, direction: int) -> None:
        sid = self.selected_id()
        view = self.state.find(sid) if sid is not None else None
        if view is None:
            self.notify("select another member in the list first (Tab, arrows)")
            return
        volume = min(max(view.volume + direction * VOLUME_STEP, 0), MAX_VOLUME_PERCENT)
        self.send(f"/volume {sid} {volume}")

    def action_safety(self) -> None:
        members = sorted(self.state.members.values(), key=lambda v: v.info.nick.casefold())
        self.app.push_screen(SafetyScreen(members, self.bangor.own_fingerprint()))

    def action_devices(self) -> None:
        app = self.bangor
        self.app.push_screen(
            DevicesScreen(
                DeviceChoice(app.source_spec(), app.sink_spec()),
                note="Using other devices rejoins the call (the others see you leave and "
                "come back).",
            ),
            self.devices_picked,
        )

    def devices_picked(self, choice: DeviceChoice | None) -> None:
        app = self.bangor
        before = (app.source_spec(), app.sink_spec())
        app.use_devices(choice)
        if choice is not None and (choice.input, choice.output) != before:
            self.rejoin()

    async def action_leave(self) -> None:
        if self.ended.is_set():
            self.call_ended_by_user()
            return
        self.query_one("#status", Static).update("leaving...")
        await self.leave()

    def call_ended_by_user(self) -> None:
        app = self.bangor
        if app.launch.auto_join:
            app.finish()
        else:
            app.pop_screen()


class BangorApp(App[int]):
    """``bangor`` (and ``bangor join INVITE`` in a terminal): the keyboard-driven client."""

    TITLE = "Bangor"
    ENABLE_COMMAND_PALETTE = False  # every action has a key; the footer needs the room
    CSS_PATH = "bangor.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, launch: Launch | None = None, passwords: PasswordStore | None = None):
        super().__init__()
        self.launch = launch or Launch()
        self.passwords = passwords or PasswordStore()
        self.settings = self.launch.settings
        self.exit_code: int = ExitCode.OK
        self.profile = Profile()
        self.profile_problem = ""
        self.join_warnings: set[str] = set()  # said while joining once this run
        try:
            self.profile = load_profile(self.launch.profile, self.launch.config_path)
        except BangorError as exc:
            self.profile_problem = str(exc)

    def on_mount(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in QUIT_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.quit_on_signal)
        self.push_screen(JoinScreen())
        if self.profile_problem:
            self.notify(f"{self.profile_problem}; starting without it", severity="warning")
        launch = self.launch
        if launch.auto_join and launch.invite:
            invite = Invite.parse(launch.invite)  # the CLI checked it already
            user = self.default_user()
            password = launch.password or self.passwords.get(user, invite_server(invite))
            if user and password:
                self.start_call(invite, Login(user, password, launch.nick or self.profile.nick))

    def default_user(self) -> str:
        """--user / BANGOR_USER, else the profile's, else the login name (as `bangor join`)."""
        return self.launch.user or self.profile.user or getpass.getuser()

    def start_call(self, invite: Invite, login: Login, *, remember: bool = False) -> None:
        """``remember``: keep the password in the keyring once it has let us in."""
        self.push_screen(CallScreen(invite, login, remember))

    def source_spec(self) -> str:
        return self.launch.source or self.profile.input or "default"

    def sink_spec(self) -> str:
        return self.launch.sink or self.profile.output or "default"

    def with_ptt(self, on: bool) -> ClientSettings:
        return dataclasses.replace(self.settings, push_to_talk=on)

    def use_devices(self, choice: DeviceChoice | None) -> None:
        if choice is None:
            return
        # A device picked here beats the command line's for the rest of this run.
        self.launch.source = self.launch.sink = None
        self.remember(input=choice.input, output=choice.output)
        self.notify(f"input {choice.input}, output {choice.output}")
        if isinstance(self.screen, JoinScreen):
            self.screen.on_screen_resume()

    def joined(self, invite: Invite, login: Login, remember_password: bool) -> None:
        if remember_password and login.password:  # only now: a mistyped one is never kept
            try:
                self.passwords.set(login.user, invite_server(invite), login.password)
            except BangorError as exc:
                self.notify(str(exc), severity="warning")
        # The server of the first room joined is also where new rooms go, until changed.
        self.remember(
            user=login.user,
            nick=login.nick or self.profile.nick,
            server=self.profile.server or invite_server(invite),
        )

    def remember(self, **changes: str) -> None:
        """Save profile changes; a config that cannot be written is a warning, not a stop."""
        self.profile = dataclasses.replace(self.profile, **changes)
        try:
            save_profile(self.profile, self.launch.profile, self.launch.config_path)
        except BangorError as exc:
            self.notify(str(exc), severity="warning")

    def own_fingerprint(self) -> str:
        from bangor.client.identity import load_identity
        from bangor.wire.identity import identity_fingerprint
        from bangor.wire.noise import public_key

        try:
            return identity_fingerprint(public_key(load_identity()))
        except BangorError as exc:
            return f"unknown ({exc})"

    def on_unmount(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in QUIT_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)

    def quit_on_signal(self) -> None:
        self.run_worker(self.action_quit(), exit_on_error=False)

    def finish(self) -> None:
        """Exit with the code `bangor join` would have: 0, or that of the last call error."""
        self.exit(self.exit_code, return_code=self.exit_code)

    async def action_quit(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, CallScreen) and not screen.ended.is_set():
                await screen.leave()
        self.finish()
