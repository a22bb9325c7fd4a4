"""Who is in which room, in memory (rooms themselves live in the store)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bangor.errors import LimitError
from bangor.settings import MAX_NAME

M = TypeVar("M")


def unique_nick(wanted: str, taken: Iterable[str], max_len: int = MAX_NAME) -> str:
    """``wanted``, or, when a member of the room has it already, ``wanted`` with the
    first number from 2 up that nobody has ("bob2"; cut to stay within ``max_len``).

    Compared case-insensitively, as members find each other (``/volume NICK``), so that
    a nick names one member of a room. One word, so it can still be typed there.
    """
    used = {nick.casefold() for nick in taken}
    nick, number = wanted, 1
    while nick.casefold() in used:  # ends: `used` is finite
        number += 1
        suffix = str(number)
        nick = wanted[: max_len - len(suffix)] + suffix
    return nick


@dataclass
class LiveRoom(Generic[M]):
    room_id: str
    name: str
    members: dict[int, M] = field(default_factory=dict)  # session id -> member handle


@dataclass
class RoomRegistry(Generic[M]):
    """Live rooms and their members; a room disappears when its last member leaves."""

    max_members: int
    _rooms: dict[str, LiveRoom[M]] = field(default_factory=dict)

    def join(self, room_id: str, name: str, session_id: int, member: M) -> LiveRoom[M]:
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = LiveRoom(room_id, name)
        if session_id not in room.members and len(room.members) >= self.max_members:
            raise LimitError(f"room is full ({self.max_members} members)")
        room.members[session_id] = member
        return room

    def has_room_for(self, room_id: str, session_id: int) -> bool:
        room = self._rooms.get(room_id)
        return room is None or session_id in room.members or len(room.members) < self.max_members

    def leave(self, room_id: str, session_id: int) -> LiveRoom[M] | None:
        room = self._rooms.get(room_id)
        if room is None:
            return None
        room.members.pop(session_id, None)
        if not room.members:
            del self._rooms[room_id]
        return room

    def get(self, room_id: str) -> LiveRoom[M] | None:
        return self._rooms.get(room_id)

    def others(self, room_id: str, session_id: int) -> Iterator[M]:
        room = self._rooms.get(room_id)
        if room is not None:
            for sid, member in list(room.members.items()):
                if sid != session_id:
                    yield member

    def __len__(self) -> int:
        return len(self._rooms)
