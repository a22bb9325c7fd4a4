"""Overlays of the terminal UI: help, device picker, safety numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, Static
from textual.widgets.option_list import Option

from bangor.errors import BangorError
from bangor.io.devices import NO_DEVICES, DeviceInfo, list_devices
from bangor.tui.state import MemberView

# Key, what it does: the help overlay and the README list the same.
CALL_KEYS: tuple[tuple[str, str], ...] = (
    ("F1", "this help (Esc closes any overlay)"),
    ("F2", "mute / unmute your microphone"),
    ("F3", "deafen / undeafen (hear nobody, nobody hears you)"),
    ("F4", "push-to-talk: talk / stop talking"),
    ("F5", "pick input and output devices"),
    ("F6", "safety numbers of the members"),
    ("F7 / F8", "volume of the selected member down / up (10 %)"),
    ("Tab", "move between the member list and the chat line"),
    ("Enter", "send the chat line (/mute, /volume NAME 50 ... work too)"),
    ("F10", "leave the call"),
    ("Ctrl+Q", "quit Bangor"),
)
# What the member list's columns mean, under the keys in the call's help.
CALL_LEGEND = (
    "◉ speaking now (on your row: your voice is going out). Key: ok known, new first "
    "seen, NEW! changed (compare safety numbers), BAD failed the room secret."
)
FORM_KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "join (or create, on the create screen)"),
    ("F1", "this help"),
    ("F5", "pick input and output devices"),
    ("F9", "create a room / back to joining"),
    ("Ctrl+Q", "quit Bangor"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, keys: tuple[tuple[str, str], ...], legend: str = "") -> None:
        super().__init__()
        self.keys = keys
        self.legend = legend

    def compose(self) -> ComposeResult:
        table = Text()
        for key, what in self.keys:
            table.append(f"{key:>8}  ", style="bold")
            table.append(f"{what}\n")
        with Vertical(id="help", classes="dialog"):
            yield Label("Keys", classes="title")
            yield Static(table, id="help-keys")
            if self.legend:
                yield Static(self.legend, id="help-legend")
            yield Label("Esc closes", classes="hint")


@dataclass(frozen=True)
class DeviceChoice:
    input: str
    output: str


def _device_options(devices: list[DeviceInfo], kind: str, current: str) -> list[Option]:
    extra = [("default", "system default")]
    extra.append(("silence", "no microphone") if kind == "input" else ("null", "no sound"))
    options = [Option(f"{spec}: {what}", id=spec) for spec, what in extra]
    for d in devices:
        if d.channels("input" if kind == "input" else "output"):
            options.append(Option(f"{d.index}: {d.name}", id=d.name))
    if current not in {option.id for option in options}:
        # A spec from the command line or config (tone:440, a file): offered, kept first.
        options.insert(0, Option(f"{current}: as given", id=current))
    return options


class DevicesScreen(ModalScreen[DeviceChoice | None]):
    """Input and output device, by name (indexes change when devices come and go)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, current: DeviceChoice, note: str = "") -> None:
        super().__init__()
        self.current = current
        self.note = note
        self.problem = ""
        self.devices: list[DeviceInfo] = []
        try:
            self.devices = list_devices()
        except BangorError as exc:
            self.problem = str(exc)
        if not self.devices and not self.problem:
            self.problem = NO_DEVICES

    def compose(self) -> ComposeResult:
        with Vertical(id="devices", classes="dialog"):
            yield Label("Audio devices", classes="title")
            if self.problem:
                yield Static(
                    f"{self.problem}. You can still join: silent, hearing nothing.",
                    id="devices-problem",
                    classes="error",
                )
            with Horizontal(id="device-lists"):
                with Vertical():
                    yield Label("Input")
                    yield OptionList(
                        *_device_options(self.devices, "input", self.current.input), id="inputs"
                    )
                with Vertical():
                    yield Label("Output")
                    yield OptionList(
                        *_device_options(self.devices, "output", self.current.output),
                        id="outputs",
                    )
            if self.note:  # a Static wraps; a Label would cut it at the dialog's edge
                yield Static(self.note, id="devices-note", classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Use these", id="use", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        for list_id, spec in (("#inputs", self.current.input), ("#outputs", self.current.output)):
            options = self.query_one(list_id, OptionList)
            options.highlighted = options.get_option_index(spec)  # always listed

    def selected(self) -> DeviceChoice:
        picked = []
        for list_id in ("#inputs", "#outputs"):
            options = self.query_one(list_id, OptionList)
            index = options.highlighted or 0
            picked.append(options.get_option_at_index(index).id or "default")
        return DeviceChoice(*picked)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.selected() if event.button.id == "use" else None)


class SafetyScreen(ModalScreen[None]):
    """Each member's safety number, to compare out of band (by voice, in person)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f6,q", "dismiss", "Close")]

    def __init__(self, members: list[MemberView], own_fingerprint: str) -> None:
        super().__init__()
        self.members = members
        self.own_fingerprint = own_fingerprint

    def compose(self) -> ComposeResult:
        with Vertical(id="safety", classes="dialog"):
            yield Label("Safety numbers", classes="title")
            yield Static(
                "Compare each number with that member by voice or in person: "
                "both of you must see the same one.",
                classes="hint",
            )
            with VerticalScroll():
                if not self.members:
                    yield Static("Nobody else is in the room.")
                for view in self.members:
                    yield Static(self.describe(view), classes="member-safety")
            yield Label(f"your key: {self.own_fingerprint}", classes="hint")

    @staticmethod
    def describe(view: MemberView) -> Text:
        text = Text()
        text.append(view.label, style="bold")
        if view.trust == "rejected":
            text.append("  could not prove the room secret: nobody hears them", style="red")
            return text
        if not view.safety_number:
            text.append("  not verified yet")
            return text
        trust = {
            "new": "first time seen",
            "known": "same key as before",
            "changed": "KEY CHANGED: compare now",
        }.get(view.trust, view.trust)
        text.append(f"  {trust}\n", style="red bold" if view.trust == "changed" else "")
        groups = view.safety_number.split()
        half = len(groups) // 2
        text.append("  " + " ".join(groups[:half]) + "\n  " + " ".join(groups[half:]))
        return text
