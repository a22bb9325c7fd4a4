"""The invites this device holds: of rooms it created or joined, so it can print them again.

``rooms.json`` beside the other client files, mode 0600 (each invite holds a room
secret). One entry per room id; a rotation replaces the entry's invite. A file that is
damaged or written by someone else is an error, never silently replaced: it may be the
only copy of an invite.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bangor.client.pinning import KnownServers, client_data_dir
from bangor.errors import BangorError, InviteError
from bangor.keyfile import write_private
from bangor.wire.invite import Invite

ROOMS_FILE = "rooms.json"
MAX_BOOK_BYTES = 1 << 20  # a room book this large was not written by us


class RoomBookError(BangorError):
    """The room book cannot be read or written."""


@dataclass(frozen=True)
class KnownRoom:
    room_id: str  # hex, as the server names it
    name: str
    server: str  # KnownServers.key(host, port)
    invite: str  # the invite code, text form
    user: str  # the account this device used with it
    owner: bool  # this device created it
    saved_at: float = 0.0

    def decoded(self) -> Invite:
        return Invite.parse(self.invite)


class RoomBook:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> RoomBook:
        return cls(client_data_dir() / ROOMS_FILE)

    def load(self) -> list[KnownRoom]:
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_BOOK_BYTES + 1)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RoomBookError(f"cannot read {self.path}: {exc.strerror}") from None
        if len(raw) > MAX_BOOK_BYTES:
            raise RoomBookError(f"{self.path} is too large to be a room book")
        try:
            data = json.loads(raw)
            rooms = [KnownRoom(**entry) for entry in data["rooms"]]
            for room in rooms:
                room.decoded()
        except (ValueError, KeyError, TypeError, InviteError) as exc:
            raise RoomBookError(
                f"{self.path} is damaged ({type(exc).__name__}); fix or move it"
            ) from None
        return rooms

    def remember(self, invite: Invite, name: str, user: str, *, owner: bool = False) -> None:
        """Keep ``invite`` (replacing what we had for its room; ownership is never lost)."""
        rooms = self.load()
        room_id = invite.room_id.hex()
        before = next((r for r in rooms if r.room_id == room_id), None)
        entry = KnownRoom(
            room_id,
            name,
            KnownServers.key(invite.host, invite.port),
            invite.encode(),
            user,
            owner or (before is not None and before.owner),
            time.time(),
        )
        self._save([r for r in rooms if r.room_id != room_id] + [entry])

    def forget(self, room_id: str) -> None:
        rooms = self.load()
        kept = [r for r in rooms if r.room_id != room_id]
        if len(kept) != len(rooms):
            self._save(kept)

    def find(self, name: str, server: str | None = None) -> list[KnownRoom]:
        """The rooms called ``name`` (on ``server``, a KnownServers key, when given)."""
        return [r for r in self.load() if r.name == name and (server is None or r.server == server)]

    def get(self, room_id: str) -> KnownRoom | None:
        return next((r for r in self.load() if r.room_id == room_id), None)

    def _save(self, rooms: list[KnownRoom]) -> None:
        text = json.dumps({"rooms": [asdict(r) for r in rooms]}, indent=1)
        try:
            write_private(self.path, text.encode())
        except OSError as exc:
            raise RoomBookError(f"cannot write {self.path}: {exc.strerror}") from None
