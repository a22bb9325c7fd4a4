"""The screens before a call: join by invite, create a room."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from rich.console import Console, ConsoleOptions
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Static

from bangor.address import format_address
from bangor.client.app import Login, create_room, parse_server
from bangor.errors import BadNameError, BangorError, InviteError
from bangor.settings import DEFAULT_PORT, MAX_NAME
from bangor.text import check_name, escape
from bangor.tui.dialogs import FORM_KEYS, DeviceChoice, DevicesScreen, HelpScreen
from bangor.tui.state import literal
from bangor.wire.invite import Invite

if TYPE_CHECKING:
    from bangor.tui.app import BangorApp


def invite_server(invite: Invite) -> str:
    """host:port as a profile and the keyring name a server."""
    return format_address(invite.host, invite.port)


def wrap_invite(code: str, width: int) -> list[str]:
    """``code`` in lines of at most ``width`` columns, broken only after a group's "-":
    no group is cut in two, so what is read (or copied) line by line stays whole."""
    groups = code.split("-")
    lines, line = [], ""
    for i, group in enumerate(groups):
        piece = group + ("-" if i < len(groups) - 1 else "")
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    return [*lines, line]


class InviteLines:
    """A Rich renderable: the invite wrapped by :func:`wrap_invite` at whatever width
    the screen gives it (Rich's own wrapping cuts a group at the edge)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        yield Text("\n".join(wrap_invite(self.code, options.max_width)))


def _row(label: str, widget: Input | Checkbox) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"), widget, classes="row")


class FormScreen(Screen[None]):
    """What the join and create screens share: keys, devices, the error line."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("f5", "devices", "Devices"),
    ]

    @property
    def bangor(self) -> BangorApp:
        from bangor.tui.app import BangorApp

        assert isinstance(self.app, BangorApp)
        return self.app

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(FORM_KEYS))

    def action_devices(self) -> None:
        profile = self.bangor.profile
        self.app.push_screen(
            DevicesScreen(DeviceChoice(profile.input, profile.output)), self.bangor.use_devices
        )

    def show_error(self, message: str) -> None:
        """On the screen (tests and users read it there) and as a notification.

        The message may quote the server: shown literally, never as markup.
        """
        line = self.query_one(".error-line", Static)
        line.add_class("error")
        line.update(literal(message))
        self.notify(escape(message), severity="error", timeout=8, markup=False)

    def show_progress(self, message: str) -> None:
        line = self.query_one(".error-line", Static)
        line.remove_class("error")
        line.update(literal(message))

    def names_ok(self, user: str, nick: str = "") -> bool:
        """Whether the others could be shown these names (else say why, as the CLI does)."""
        try:
            check_name(user, "user name", MAX_NAME)
            check_name(nick, "nickname", MAX_NAME)
        except BadNameError as exc:
            self.show_error(str(exc))
            return False
        return True

    def value(self, selector: str) -> str:
        return self.query_one(selector, Input).value.strip()


class JoinScreen(FormScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("f9", "create", "Create room")]

    def compose(self) -> ComposeResult:
        app = self.bangor
        profile, launch = app.profile, app.launch
        with Vertical(classes="form"):
            yield Label("Bangor: join a room", classes="title")
            yield _row("Invite code", Input(launch.invite or "", id="invite", compact=True))
            yield _row("User", Input(app.default_user(), id="user", compact=True))
            yield _row(
                "Password",
                Input(launch.password or "", id="password", password=True, compact=True),
            )
            yield _row(
                "Name shown",
                Input(
                    launch.nick or profile.nick,
                    id="nick",
                    placeholder="optional",
                    compact=True,
                ),
            )
            yield _row(
                "",
                Checkbox(
                    "remember password (OS keyring)",
                    id="remember",
                    compact=True,
                    disabled=not app.passwords.available,
                ),
            )
            yield _row(
                "",
                Checkbox(
                    "push-to-talk (F4 talks)",
                    value=app.settings.push_to_talk,
                    id="ptt",
                    compact=True,
                ),
            )
            yield Static(self.devices_line(), id="devices-line", classes="hint")
            yield Static(app.passwords.describe(), classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Join", id="join", variant="primary", compact=True)
                yield Button("Create a room", id="create", compact=True)
                yield Button("Devices", id="devices", compact=True)
                yield Button("Quit", id="quit", compact=True)
            yield Static("", classes="error-line error")
        yield Footer(compact=True)

    def devices_line(self) -> str:
        app = self.bangor
        return f"devices: input {app.source_spec()}, output {app.sink_spec()} (F5 changes)"

    def on_mount(self) -> None:
        empty = [i for i in self.query(Input) if not i.value]
        (empty[0] if empty else self.query_one("#invite", Input)).focus()

    def on_screen_resume(self) -> None:
        self.query_one("#devices-line", Static).update(self.devices_line())

    def set_invite(self, code: str) -> None:
        self.query_one("#invite", Input).value = code
        self.query_one("#password", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        # A saved password fills in once invite and user name the account.
        if (
            event.input.id in ("invite", "user")
            and not self.value("#password")
            and (password := self.saved_password())
        ):
            self.query_one("#password", Input).value = password

    def saved_password(self) -> str | None:
        try:
            server = invite_server(Invite.parse(self.value("#invite")))
        except InviteError:
            return None
        return self.bangor.passwords.get(self.value("#user"), server)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_join()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "join":
            self.action_join()
        elif event.button.id == "create":
            self.action_create()
        elif event.button.id == "devices":
            self.action_devices()
        elif event.button.id == "quit":
            self.bangor.finish()

    def action_create(self) -> None:
        self.app.push_screen(CreateScreen())

    def action_join(self) -> None:
        try:
            invite = Invite.parse(self.value("#invite"))
        except InviteError as exc:
            self.show_error(f"invite: {exc}")
            return
        user, password = self.value("#user"), self.query_one("#password", Input).value
        if not user or not password:
            self.show_error("a user name and a password are needed")
            return
        if not self.names_ok(user, self.value("#nick")):
            return
        self.show_progress("")
        app = self.bangor
        app.settings = app.with_ptt(self.query_one("#ptt", Checkbox).value)
        remember = self.query_one("#remember", Checkbox).value
        app.start_call(invite, Login(user, password, self.value("#nick")), remember=remember)


class CreateScreen(FormScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f9,escape", "back", "Back to join"),
        Binding("f11", "copy", "Copy invite"),
    ]

    def compose(self) -> ComposeResult:
        app = self.bangor
        profile = app.profile
        with Vertical(classes="form"):
            yield Label("Bangor: create a room", classes="title")
            yield _row(
                "Server",
                Input(profile.server, id="server", placeholder="host:port", compact=True),
            )
            yield _row("User", Input(app.default_user(), id="user", compact=True))
            yield _row(
                "Password",
                Input(app.launch.password or "", id="password", password=True, compact=True),
            )
            yield _row("Room name", Input(id="room", compact=True))
            with Horizontal(classes="buttons"):
                yield Button("Create", id="create", variant="primary", compact=True)
                yield Button("Back", id="back", compact=True)
            yield Static("", classes="error-line error")
            yield Label("Invite code (share it privately: it is the room's key)")
            # Wrapped between groups, not an input line: all of it in sight at 80 columns.
            yield Static("", id="invite-code")
            with Horizontal(classes="buttons"):
                yield Button("Copy", id="copy", compact=True, disabled=True)
                yield Button("Join it", id="join", compact=True, disabled=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        empty = [i for i in self.query(Input) if not i.value and not i.disabled]
        if empty:
            empty[0].focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_create_room()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        match event.button.id:
            case "create":
                self.action_create_room()
            case "back":
                self.action_back()
            case "copy":
                self.action_copy()
            case "join":
                code = self.invite_code
                self.app.pop_screen()
                if isinstance(self.app.screen, JoinScreen):
                    self.app.screen.set_invite(code)

    invite_code = ""  # once created

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_copy(self) -> None:
        if self.invite_code:
            # OSC 52: the terminal (or tmux) puts it on the clipboard, even over ssh; but
            # nothing tells us whether it did (some terminals ignore it), so say only that.
            self.app.copy_to_clipboard(self.invite_code)
            self.notify(
                "invite code sent to the clipboard (terminal OSC 52); if pasting gives "
                "nothing, copy it from the screen"
            )

    def action_create_room(self) -> None:
        user, password = self.value("#user"), self.query_one("#password", Input).value
        name = self.value("#room")
        if not self.value("#server") or not user or not password or not name:
            self.show_error("server, user, password and a room name are needed")
            return
        try:
            host, port = parse_server(self.value("#server"), DEFAULT_PORT)
        except ValueError as exc:
            self.show_error(str(exc))
            return
        if not self.names_ok(user):
            return
        self.show_progress("creating...")
        self.create(host, port, Login(user, password), name)

    @work(exclusive=True, exit_on_error=False)
    async def create(self, host: str, port: int, login: Login, name: str) -> None:
        try:
            code = await create_room(
                host,
                port,
                login,
                name,
                lambda text: self.notify(escape(text), severity="warning", markup=False),
            )
        except BangorError as exc:
            self.show_error(f"could not create the room: {exc}")
            return
        self.show_progress(f"room {name!r} created")
        self.invite_code = code
        self.query_one("#invite-code", Static).update(InviteLines(code))
        for button in self.query(Button):
            button.disabled = False
        app = self.bangor
        app.remember(server=self.value("#server"), user=login.user)
        self.query_one("#copy", Button).focus()
