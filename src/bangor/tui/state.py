"""What the call screen shows, folded from client events (no widgets, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text

from bangor.client import events as ev
from bangor.text import escape

DEFAULT_VOLUME = 100
# The microphone meter: a bar of METER_CELLS over METER_FLOOR..0 dBFS (quieter is empty).
METER_CELLS = 8
METER_FLOOR = -60.0


def literal(text: str, style: str = "") -> Text:
    """Text from others for a widget: shown as written, never as Textual markup (a nick
    "[@click=app.quit]" stays those characters), and terminal controls escaped."""
    return Text(escape(text), style=style)


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns with "…" when longer (one column a character:
    names are checked free of controls and zero-width characters)."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


@dataclass
class MemberView:
    info: ev.MemberInfo
    speaking: bool = False
    volume: int = DEFAULT_VOLUME  # percent, as /volume sets it
    loss: float | None = None  # share of this speaker's packets the network lost
    safety_number: str = ""
    fingerprint: str = ""
    trust: str = ""  # "" until verified; "new", "known", "changed" or "rejected"
    path: str = ""  # how our voice reaches this member: "direct", "relay" ("" not yet)

    @property
    def label(self) -> str:
        """The nick, with the account name when they differ (nicks are chosen freely);
        controls escaped (a plain string: give widgets ``literal(label)``)."""
        info = self.info
        return escape(info.nick if info.nick == info.user else f"{info.nick} ({info.user})")


@dataclass
class CallState:
    room: str = ""
    you: ev.MemberInfo | None = None
    members: dict[int, MemberView] = field(default_factory=dict)
    rtt_ms: float | None = None
    loss: float | None = None  # the worst loss among the speakers we hear
    bitrate: float | None = None  # what we send, bit/s
    audio: ev.AudioState | None = None
    left: str | None = None
    sending_voice: bool = False  # our voice frames went out since the stats before
    input_level: float | None = None  # dBFS, the microphone after the capture chain
    reconnecting: ev.Reconnecting | None = None  # the server is away; the call goes on
    _sent: int = 0

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.Joined):
            self.room, self.you = event.room, event.you
            self._sent = 0  # a new client counts from zero (after a rejoin too)
            self.members = {m.session_id: MemberView(m) for m in event.members}
        elif isinstance(event, ev.MemberJoined):
            self.members[event.member.session_id] = MemberView(event.member)
        elif isinstance(event, ev.MemberLeft):
            self.members.pop(event.member.session_id, None)
        elif isinstance(event, ev.MemberVerified | ev.KeyChanged):
            view = self.members.get(event.member.session_id)
            if view is not None:
                view.safety_number, view.fingerprint = event.safety_number, event.fingerprint
                view.trust = event.trust if isinstance(event, ev.MemberVerified) else "changed"
        elif isinstance(event, ev.MemberRejected):
            view = self.members.get(event.member.session_id)
            if view is not None:
                view.trust = "rejected"
        elif isinstance(event, ev.PathChanged):
            view = self.members.get(event.peer)
            if view is not None:
                view.path = event.path
        elif isinstance(event, ev.Stats):
            self._stats(event)
        elif isinstance(event, ev.AudioState):
            self.audio = event
            for view in self.members.values():
                view.volume = event.volumes.get(view.info.nick, DEFAULT_VOLUME)
        elif isinstance(event, ev.Reconnecting):
            self.reconnecting = event
        elif isinstance(event, ev.Reconnected):
            self.reconnecting = None
        elif isinstance(event, ev.Left):
            self.left = event.reason
            self.reconnecting = None

    def _stats(self, event: ev.Stats) -> None:
        # Frames sent only count voice (the voice gate and push-to-talk hold back the rest).
        self.sending_voice, self._sent = event.sent > self._sent, event.sent
        self.rtt_ms = event.rtt_ms
        self.input_level = event.input_level
        if event.sending is not None:
            self.bitrate = event.sending.get("bitrate")
        losses = []
        for view in self.members.values():
            sender = event.senders.get(str(view.info.session_id))
            view.speaking = bool(sender and sender.get("speaking"))
            view.loss = None if sender is None else sender.get("loss")
            if view.loss is not None:
                losses.append(view.loss)
        self.loss = max(losses) if losses else None

    def find(self, session_id: int) -> MemberView | None:
        return self.members.get(session_id)

    def status_line(self) -> str:
        """Path, ping, loss, bitrate and the microphone, for the status bar."""
        parts = [f"path {self.path_summary()}"]
        if self.reconnecting is not None:
            parts.insert(0, f"reconnecting (try {self.reconnecting.attempt})")
        parts.append(f"ping {self.rtt_ms:.0f} ms" if self.rtt_ms is not None else "ping ?")
        parts.append(f"loss {self.loss * 100:.1f} %" if self.loss is not None else "loss -")
        if self.bitrate is not None:
            parts.append(f"{self.bitrate / 1000:.0f} kbit/s")
        parts.append(self.mic_state())
        return " | ".join(parts)

    def path_summary(self) -> str:
        """ "direct" or "relay" for everyone, or how many of the others are direct; "-"
        alone in the room (a path is to somebody), "..." until the first is known."""
        if not self.members:
            return "-"
        paths = [view.path for view in self.members.values()]
        direct = paths.count("direct")
        if direct == len(paths):
            return "direct"
        if direct:
            return f"direct {direct}/{len(paths)}"
        return "relay" if "relay" in paths else "..."

    def mic_short(self) -> str:
        """The microphone's state in four columns, for the member list."""
        return {"DEAFENED": "DEAF", "MUTED": "MUTE", "TALKING": "TALK", "push-to-talk": "ptt"}.get(
            state := self.mic_state(), state.removeprefix("mic ")
        )

    def meter(self) -> str:
        """The microphone's level and the capture chain's stages, one line: what the
        others would hear (after noise suppression and gain), so a user sees the
        keyboard or fan vanish, or a microphone that is too quiet."""
        level = self.input_level
        if level is None:
            bar, number = "░" * METER_CELLS, "  ?"
        else:
            filled = int(
                (min(max(level, METER_FLOOR), 0.0) - METER_FLOOR) / -METER_FLOOR * METER_CELLS
            )
            bar = "█" * filled + "░" * (METER_CELLS - filled)
            number = f"{max(level, -99):3.0f}" if level > METER_FLOOR else "-∞ "
        stages = [] if self.audio is None else self.audio.stages(("NS", "AEC", "AGC"))
        return f"mic {bar} {number} dB {' '.join(stages)}".rstrip()

    def mic_state(self) -> str:
        audio = self.audio
        if audio is None:
            return "mic ?"
        if audio.deafened:
            return "DEAFENED"
        if audio.muted:
            return "MUTED"
        if audio.push_to_talk:
            return "TALKING" if audio.talking else "push-to-talk"
        return "mic on"
