"""A room's owner at the command line: list, invite, rotate, delete, kick, bans, unban
(PROTOCOL.md 3.15).

Rotating needs the members in the call to get the new secret over their pair channels,
which only a member can reach. So ``rotate`` and ``kick`` visit the room: they join it
with the invite this device keeps (:mod:`bangor.client.roombook`), wait until every
member there is verified (or ``peer_verify_timeout`` passes), do their work, and leave.
The others see the owner come and go, as on any join.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from bangor.client.app import Login, connect_and_login, enter_room, trust_on_first_use
from bangor.client.control import ControlClient
from bangor.client.identity import load_identity
from bangor.client.pinning import KnownServers
from bangor.client.roombook import KnownRoom, RoomBook
from bangor.errors import (
    BangorError,
    CloseCode,
    RefusedError,
    UsageError,
)
from bangor.settings import ClientSettings
from bangor.text import escape
from bangor.wire import control as msg
from bangor.wire import e2ee
from bangor.wire.invite import SECRET_SIZE, Invite
from bangor.wire.pairwise import derive_join_token

Warn = Callable[[str], None]
T = TypeVar("T")


async def _connect(host: str, port: int, login: Login, warn: Warn) -> ControlClient:
    client, _ = await connect_and_login(
        host, port, login, check=trust_on_first_use(host, port, warn)
    )
    return client


async def _owned(client: ControlClient, name: str) -> msg.RoomInfo:
    for room in await client.list_rooms():
        if room.name == name:
            return room
    raise RefusedError(CloseCode.ROOM_NOT_FOUND, f"you own no room named {name!r} on this server")


def room_lines(rooms: list[msg.RoomInfo], book: list[KnownRoom], server: str) -> list[str]:
    """``room list``: one room per line, its name first; remote names escaped."""
    lines = []
    saved = {r.room_id for r in book}
    for room in rooms:
        invite = "saved" if room.room_id in saved else "not on this device"
        lines.append(
            f"{escape(room.name)}\t{room.room_id}\towner {escape(room.owner)}\t"
            f"{room.members} in the call\tinvite {invite}"
        )
    owned = {room.room_id for room in rooms}
    for known in book:
        if known.server == server and known.room_id not in owned:
            lines.append(
                f"{escape(known.name)}\t{known.room_id}\tjoined as {escape(known.user)}\t"
                f"?\tinvite saved"
            )
    return lines


async def list_rooms(host: str, port: int, login: Login, warn: Warn) -> list[str]:
    client = await _connect(host, port, login, warn)
    try:
        rooms = await client.list_rooms()
    finally:
        await client.leave()
    return room_lines(rooms, RoomBook.default().load(), KnownServers.key(host, port))


def saved_invite(name: str, host: str, port: int) -> str:
    """The invite this device keeps for the room ``name`` on ``host:port``."""
    server = KnownServers.key(host, port)
    found = RoomBook.default().find(name, server)
    if len(found) > 1:  # a name is unique per owner, not per server
        ids = ", ".join(r.room_id for r in found)
        raise UsageError(f"this device knows several rooms named {name!r} there ({ids})")
    if not found:
        raise RefusedError(
            CloseCode.ROOM_NOT_FOUND,
            f"this device has no invite for a room named {name!r} on {server} (it keeps "
            "those of rooms it created or joined)",
        )
    return found[0].invite


@dataclass
class Visit:
    """The owner in the room for a moment: members and pair channels, no media."""

    client: ControlClient
    crypto: e2ee.RoomCrypto
    members: dict[int, msg.Member]
    settings: ClientSettings
    verified: set[int] = field(default_factory=set)
    rejected: set[int] = field(default_factory=set)
    new_secret: bytes | None = None

    @classmethod
    async def enter(cls, host: str, port: int, login: Login, known: KnownRoom, warn: Warn) -> Visit:
        settings = ClientSettings()
        invite = known.decoded()
        client, welcome, joined = await enter_room(
            host,
            port,
            login,
            known.room_id,
            derive_join_token(invite.secret, invite.room_id),
            settings,
            check=trust_on_first_use(host, port, warn),
        )
        crypto = e2ee.RoomCrypto(
            room_id=invite.room_id,
            secret=invite.secret,
            session_id=welcome.session_id,
            user=joined.you.user,  # as the server stores it: what the members check
            nick=joined.you.nick,
            identity_private=load_identity(),
            settings=settings,
        )
        visit = cls(client, crypto, {m.session_id: m for m in joined.members}, settings)
        crypto.start([(m.session_id, m.user) for m in joined.members], visit.now())
        visit.flush()
        return visit

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    def flush(self) -> None:
        for to, data in self.crypto.messages_to_send():
            self.client.send_peer(to, data)
        while (event := self.crypto.next_event()) is not None:
            if isinstance(event, e2ee.MemberVerified):
                self.verified.add(event.session_id)
            elif isinstance(event, e2ee.MemberRejected):
                self.rejected.add(event.session_id)

    def on_message(self, message: msg.ServerMessage) -> None:
        now = self.now()
        if isinstance(message, msg.MemberJoined):
            self.members[message.member.session_id] = message.member
            self.crypto.member_joined(message.member.session_id, message.member.user, now)
        elif isinstance(message, msg.MemberLeft):
            self.members.pop(message.session_id, None)
            self.crypto.member_left(message.session_id, now)
        elif isinstance(message, msg.PeerReceived):
            self.crypto.peer_received(message.sender, message.data, now)
        elif isinstance(message, msg.TokenChanged):
            self.new_secret = self.crypto.token_changed(message.token)
        self.flush()

    @property
    def settled(self) -> bool:
        return set(self.members) <= self.verified | self.rejected

    async def pump(self, until: Callable[[], bool], timeout: float) -> None:
        """Handle the room's messages and timers until ``until()`` or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until() and loop.time() < deadline:
            timer = self.crypto.get_timer()
            wake = deadline if timer is None else min(deadline, timer)
            try:
                item = await asyncio.wait_for(self.client.events.get(), max(wake - loop.time(), 0))
            except TimeoutError:
                self.crypto.handle_timer(loop.time())
                self.flush()
                continue
            if isinstance(item, BangorError):
                if isinstance(item, RefusedError) and self.client.closed is None:
                    continue
                raise item
            self.on_message(item)

    def find(self, who: str) -> msg.Member | None:
        folded = who.casefold()
        for key in ("nick", "user"):
            found = [m for m in self.members.values() if getattr(m, key).casefold() == folded]
            if len(found) > 1:
                names = ", ".join(f"{m.nick} ({m.user})" for m in found)
                raise UsageError(f"{who!r} could be any of {names}: name one nickname")
            if found:
                return found[0]
        return None

    async def rotate(self, room_id: str, warn: Warn) -> bytes:
        """A new secret to every verified member, then its token to the server."""
        secret = secrets.token_bytes(SECRET_SIZE)
        reached = set(self.crypto.offer_secret(secret))
        self.flush()
        await self.client.rotate_room(room_id, derive_join_token(secret, bytes.fromhex(room_id)))
        await self.pump(lambda: self.new_secret is not None, self.settings.peer_verify_timeout)
        missed = [m for sid, m in self.members.items() if sid not in reached]
        if missed:
            names = ", ".join(escape(m.nick) for m in missed)
            warn(
                f"could not give the new invite to {names} (not verified in time): they stay in "
                f"the call but cannot verify newcomers; give them the new invite"
            )
        return secret


async def rotate(host: str, port: int, login: Login, name: str, warn: Warn) -> str:
    """``room rotate``: a new room secret; the new invite."""
    return await _remove_and_rotate(host, port, login, name, None, False, warn)


async def kick(
    host: str, port: int, login: Login, name: str, member: str, ban: bool, warn: Warn
) -> str:
    """``room kick``: remove (and with ``ban`` keep out) a member; the room's new invite."""
    return await _remove_and_rotate(host, port, login, name, member, ban, warn)


async def _remove_and_rotate(
    host: str,
    port: int,
    login: Login,
    name: str,
    who: str | None,
    ban: bool,
    warn: Warn,
) -> str:
    client = await _connect(host, port, login, warn)
    try:
        room = await _owned(client, name)
    finally:
        await client.leave()
    book = RoomBook.default()
    known = book.get(room.room_id)
    if known is None:
        return await _blind(host, port, login, room, who, ban, warn)
    visit = await Visit.enter(host, port, login, known, warn)
    try:
        await visit.pump(lambda: visit.settled, visit.settings.peer_verify_timeout)
        if who is not None:
            await _remove(visit.client, room.room_id, visit.find(who), who, ban, warn)
        secret = await visit.rotate(room.room_id, warn)
    finally:
        await visit.client.leave()
    old = known.decoded()
    invite = Invite(old.host, old.port, old.room_id, secret, old.fingerprint)
    book.remember(invite, room.name, login.user, owner=True)
    return invite.encode()


async def _remove(
    client: ControlClient,
    room_id: str,
    member: msg.Member | None,
    who: str,
    ban: bool,
    warn: Warn,
) -> None:
    if member is None and not ban:
        raise RefusedError(
            CloseCode.NOT_ALLOWED,
            f"nobody called {who!r} is in the call (--ban keeps an account out)",
        )
    if member is None:
        kicked = await client.kick(room_id, user=who, ban=True)
    else:
        kicked = await client.kick(room_id, session_id=member.session_id, ban=ban)
    done = "banned" if ban else "removed"
    warn(f"{escape(kicked.user)} {done}" + ("" if kicked.session_id else " (was not in the call)"))


async def _blind(
    host: str,
    port: int,
    login: Login,
    room: msg.RoomInfo,
    who: str | None,
    ban: bool,
    warn: Warn,
) -> str:
    """No invite on this device: act by account name and give the room a new secret
    that nobody in the call gets."""
    client = await _connect(host, port, login, warn)
    try:
        if who is not None:
            kicked = await client.kick(room.room_id, user=who, ban=ban)
            done = "banned" if ban else "removed"
            warn(f"{escape(kicked.user)} {done}")
        secret = secrets.token_bytes(SECRET_SIZE)
        await client.rotate_room(
            room.room_id, derive_join_token(secret, bytes.fromhex(room.room_id))
        )
        fingerprint = client.server_fingerprint
    finally:
        await client.leave()
    if room.members:
        warn(
            "this device has no invite for the room, so the members in the call did not get "
            "the new one: give it to them"
        )
    invite = Invite(host, port, bytes.fromhex(room.room_id), secret, fingerprint)
    RoomBook.default().remember(invite, room.name, login.user, owner=True)
    return invite.encode()


async def _on_owned(
    host: str,
    port: int,
    login: Login,
    name: str,
    warn: Warn,
    request: Callable[[ControlClient, str], Awaitable[T]],
) -> tuple[msg.RoomInfo, T]:
    """Log in, find the room ``name`` we own and make ``request`` (client, room id) of it."""
    client = await _connect(host, port, login, warn)
    try:
        room = await _owned(client, name)
        return room, await request(client, room.room_id)
    finally:
        await client.leave()


async def bans(host: str, port: int, login: Login, name: str, warn: Warn) -> list[str]:
    """``room bans``: the accounts banned from the room, one a line (escaped)."""
    _, banned = await _on_owned(host, port, login, name, warn, ControlClient.list_bans)
    if banned.more:
        warn(f"and {banned.more} more accounts not listed")
    return [escape(user) for user in banned.users]


async def unban(host: str, port: int, login: Login, name: str, user: str, warn: Warn) -> str:
    """``room unban``: the account may join again (with the room's current invite); what
    to tell the owner."""
    room, lifted = await _on_owned(
        host, port, login, name, warn, lambda client, room_id: client.unban(room_id, user)
    )
    return (
        f"{escape(lifted.user)} may join room {escape(room.name)} again; "
        f"give them its invite (bangor room invite {escape(room.name)})"
    )


async def delete(host: str, port: int, login: Login, name: str, warn: Warn) -> None:
    """``room delete``: the room, its bans and its placement go; members are told."""
    room, _ = await _on_owned(host, port, login, name, warn, ControlClient.delete_room)
    RoomBook.default().forget(room.room_id)
    if room.members:
        warn(f"{room.members} member(s) in the call were told and removed")
