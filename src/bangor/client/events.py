"""Events the client reports to user interfaces (JSON lines, TUI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
class ChatReceived(Event):
    kind = "chat"
    session_id: int
    nick: str
    text: str


@dataclass(frozen=True)
class PathChanged(Event):
    kind = "path"
    path: str  # "relay" until direct paths exist
    peer: int | None = None


@dataclass(frozen=True)
class Stats(Event):
    kind = "stats"
    rtt_ms: float | None
    sent: int
    received: int
    dropped: int
    senders: dict[str, dict[str, int]]


@dataclass(frozen=True)
class ErrorEvent(Event):
    kind = "error"
    code: int
    message: str


@dataclass(frozen=True)
class Left(Event):
    kind = "left"
    reason: str


def describe(event: Event) -> str:
    """One human line for an event (headless mode without --json)."""
    if isinstance(event, Joined):
        others = ", ".join(m.nick for m in event.members) or "nobody else yet"
        return f"joined room {event.room} as {event.you.nick} ({others})"
    if isinstance(event, MemberJoined):
        return f"{event.member.nick} joined"
    if isinstance(event, MemberLeft):
        return f"{event.member.nick} left"
    if isinstance(event, ChatReceived):
        return f"<{event.nick}> {event.text}"
    if isinstance(event, PathChanged):
        return f"voice path: {event.path}"
    if isinstance(event, Stats):
        rtt = f"{event.rtt_ms:.1f} ms" if event.rtt_ms is not None else "?"
        return f"stats: rtt {rtt}, sent {event.sent}, received {event.received}"
    if isinstance(event, ErrorEvent):
        return f"error: {event.message}"
    if isinstance(event, Left):
        return f"left: {event.reason}"
    return repr(event)
