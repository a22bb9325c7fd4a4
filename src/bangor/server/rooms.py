"""Who is in which room, in memory (rooms themselves live in the store)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bangor.errors import LimitError

M = TypeVar("M")


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
