"""Events the client reports to user interfaces (JSON lines, TUI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bangor.text import escape


@dataclass(frozen=True)
class MemberInfo:
    session_id: int
    user: str
    nick: str


@dataclass(frozen=True)
class Event:
    kind = "event"

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Joined(Event):
    kind = "joined"
    room_id: str
    room: str
    you: MemberInfo
    members: tuple[MemberInfo, ...]


@dataclass(frozen=True)
class MemberJoined(Event):
    kind = "member_joined"
    member: MemberInfo


@dataclass(frozen=True)
class MemberLeft(Event):
    kind = "member_left"
    member: MemberInfo


@dataclass(frozen=True)
class MemberVerified(Event):
    """The member proved the room secret; compare ``safety_number`` out of band.

    ``trust``: "new" (first time seen, remembered), "known" (same key as before),
    "changed" (a key this user never had: a new device or an impostor).
    """

    kind = "member_verified"
    member: MemberInfo
    safety_number: str
    fingerprint: str
    trust: str


@dataclass(frozen=True)
class MemberRejected(Event):
    """The member could not prove the room secret: it gets no keys, nobody hears it."""

    kind = "member_rejected"
    member: MemberInfo
    reason: str


@dataclass(frozen=True)
class KeyChanged(Event):
    """A known member's identity key changed: a new device, or someone in the middle."""

    kind = "key_changed"
    member: MemberInfo
    safety_number: str
    fingerprint: str


@dataclass(frozen=True)
class ChatReceived(Event):
    kind = "chat"
    session_id: int
    nick: str
    text: str
    user: str = ""  # the account name: nicknames are chosen freely, names are not


@dataclass(frozen=True)
class PathChanged(Event):
    """Whether our voice reaches member ``peer`` (a session id) "direct" or by "relay".
    A member's first one comes once the relay works (or a direct path came up first)."""

    kind = "path"
    path: str
    peer: int
    rtt_ms: float | None = None  # of a direct path, when it came up
    nick: str = ""  # the member's


@dataclass(frozen=True)
class InviteReady(Event):
    """``bangor host``: the invite code friends join with (the host's address in it)."""

    kind = "invite"
    invite: str
    host: str
    port: int


@dataclass(frozen=True)
class Stats(Event):
    kind = "stats"
    rtt_ms: float | None
    sent: int
    received: int
    dropped: int
    undecryptable: int
    senders: dict[str, dict[str, float]]
    suppressed: int = 0  # frames the voice gate kept back as silence (not sent)
    # What we send now: Opus bitrate, earlier frames repeated per packet, the loss
    # Opus FEC is sized for, and the worst loss a listener reported lately (0..1).
    sending: dict[str, float] | None = None
    # Per member (the session id in decimal, as JSON keys are strings; ``senders`` too):
    # "path" direct or relay, "rtt_ms" of the direct path.
    paths: dict[str, dict[str, Any]] | None = None
    direct_sent: int = 0  # voice packets sent straight to members
    direct_received: int = 0
    # The microphone after the capture chain, dBFS (-100: silence), for a level meter.
    input_level: float | None = None


@dataclass(frozen=True)
class AudioState(Event):
    """The user's audio controls changed (or were asked for)."""

    kind = "audio"
    muted: bool
    deafened: bool
    push_to_talk: bool
    talking: bool
    volumes: dict[str, int]  # nick -> percent, only for speakers not at 100 %
    # The capture chain's stages (/ns, /aec, /agc).
    noise_suppression: bool = False
    echo_cancellation: bool = False
    agc: bool = False

    def stages(self, names: tuple[str, str, str]) -> list[str]:
        """``names`` (for noise suppression, echo cancellation, gain) of the stages on."""
        on = (self.noise_suppression, self.echo_cancellation, self.agc)
        return [name for name, is_on in zip(names, on, strict=True) if is_on]


@dataclass(frozen=True)
class InviteChanged(Event):
    """The room's owner rotated it (a kick does too): the old invite no longer admits
    anyone; this is the new one (this device keeps it: ``bangor room invite``)."""

    kind = "invite_changed"
    invite: str


@dataclass(frozen=True)
class Notice(Event):
    """Something for the user to read that is not an error (help, a device change)."""

    kind = "notice"
    message: str


@dataclass(frozen=True)
class WarningEvent(Event):
    """Something went wrong and the call goes on: a missing sound card, a command that
    did nothing, a member's bad message."""

    kind = "warning"
    message: str


@dataclass(frozen=True)
class ErrorEvent(Event):
    """A request the server refused (``code``: its close code; the call goes on), or the
    error that ends the call (``code``: the exit code)."""

    kind = "error"
    code: int
    message: str


@dataclass(frozen=True)
class Reconnecting(Event):
    """The control channel or the server went away; the call goes on (direct paths keep
    carrying voice) and we try again after ``delay`` seconds: try number ``attempt``."""

    kind = "reconnecting"
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True)
class Reconnected(Event):
    """Back in the room after ``outage`` seconds. ``resumed``: the server gave us our
    session back (it restarted), so members' keys and direct paths went on; otherwise
    every member's channel and our keys started afresh, as on a rejoin."""

    kind = "reconnected"
    attempt: int
    outage: float
    resumed: bool


@dataclass(frozen=True)
class Left(Event):
    kind = "left"
    reason: str


def describe(event: Event) -> str:
    """One human line for an event (headless mode without --json), safe to print.

    Names, room names, chat, reasons and error messages come from other members or the
    server: every character a terminal would obey is shown escaped (``bangor.text``).
    """
    return escape(_describe(event))


def _describe(event: Event) -> str:
    if isinstance(event, Joined):
        you = event.you
        account = f" (account {you.user})" if you.user != you.nick else ""
        here = ", ".join(m.nick for m in event.members)
        here = f"here: {here}" if here else "nobody else is here yet"
        return f"joined room {event.room} as {you.nick}{account}; {here}"
    if isinstance(event, MemberJoined):
        return f"{event.member.nick} joined"
    if isinstance(event, MemberLeft):
        return f"{event.member.nick} left"
    if isinstance(event, MemberVerified):
        note = " (NEW KEY, see warning)" if event.trust == "changed" else ""
        return f"{event.member.nick} verified: safety number {event.safety_number}{note}"
    if isinstance(event, MemberRejected):
        return (
            f"WARNING: {event.member.nick} ({event.member.user}) could not be verified: "
            f"{event.reason}. They get no keys: nobody hears them and they hear nobody."
        )
    if isinstance(event, KeyChanged):
        return (
            f"WARNING: THE IDENTITY KEY OF {event.member.user} HAS CHANGED (now "
            f"{event.fingerprint}). It may be a new device, or someone in the middle. "
            f"Compare the safety number {event.safety_number} with them out of band."
        )
    if isinstance(event, ChatReceived):
        who = (
            event.nick
            if event.nick == event.user or not event.user
            else (f"{event.nick} ({event.user})")
        )
        return f"<{who}> {event.text}"
    if isinstance(event, InviteReady):
        return event.invite
    if isinstance(event, InviteChanged):
        return f"the room has a new invite (the old one no longer works): {event.invite}"
    if isinstance(event, PathChanged):
        rtt = f" ({event.rtt_ms:.1f} ms round trip)" if event.rtt_ms is not None else ""
        return f"voice path to {event.nick or event.peer}: {event.path}{rtt}"
    if isinstance(event, Stats):
        rtt = f"{event.rtt_ms:.1f} ms" if event.rtt_ms is not None else "?"
        return f"stats: rtt {rtt}, sent {event.sent}, received {event.received}"
    if isinstance(event, AudioState):
        parts = ["muted" if event.muted else "microphone on"]
        if event.deafened:
            parts.append("deafened")
        if event.push_to_talk:
            parts.append("talking" if event.talking else "push-to-talk released")
        parts += [f"{nick} at {pct} %" for nick, pct in event.volumes.items()]
        stages = event.stages(("noise suppression", "echo cancellation", "gain control"))
        parts.append(" + ".join(stages) if stages else "no processing")
        return "audio: " + ", ".join(parts)
    if isinstance(event, Notice):
        return event.message
    if isinstance(event, WarningEvent):
        return f"warning: {event.message}"
    if isinstance(event, ErrorEvent):
        return f"error: {event.message}"
    if isinstance(event, Reconnecting):
        return f"reconnecting (try {event.attempt} in {event.delay:.1f} s): {event.reason}"
    if isinstance(event, Reconnected):
        return f"reconnected after {event.outage:.1f} s"
    if isinstance(event, Left):
        return f"left: {event.reason}"
    return repr(event)
