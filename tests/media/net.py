"""MediaSessions over an in-memory network: a relay (the server's own, sans-I/O), the
server's STUN responder, and direct links between members, on a hand-set clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bangor.io.devices import open_source
from bangor.media import events as me
from bangor.media.session import MediaSession
from bangor.server.relay import Relay
from bangor.settings import ClientSettings
from bangor.wire import stun
from bangor.wire.e2ee import RoomCrypto
from bangor.wire.media import HopOpener, PacketType, derive_media_keys
from bangor.wire.noise import generate_static_key
from tests.sansio import drain

Address = tuple[str, int]
SERVER: Address = ("192.0.2.1", 7600)
ROOM_ID = bytes(range(16))
SECRET = bytes(32)


def lan(sid: int) -> Address:
    """A member's socket as its own interfaces see it."""
    return (f"10.0.0.{sid}", 5000 + sid)


def nat(sid: int) -> Address:
    """The same socket as the server sees it (behind a NAT)."""
    return (f"203.0.113.{sid}", 6000 + sid)


@dataclass
class Member:
    session: MediaSession
    source: Callable[[], np.ndarray | None]
    played: list[np.ndarray] = field(default_factory=list)
    events: list[me.CallEvent] = field(default_factory=list)


class Net:
    """Members in one room. Datagrams arrive at once (no delay) unless ``drop(src, dst)``
    says the link loses this one. A member sends from its NAT address, which reaches it
    from anywhere (a full-cone NAT); its LAN address reaches it too while ``direct``."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.relay = Relay()
        self.stun = stun.BindingResponder(1000.0, 1000, 100)
        self.members: dict[int, Member] = {}
        self.wire: list[tuple[bytes, Address, Address]] = []  # (data, from, to)
        self.drop: Callable[[Address, Address], bool] = lambda src, dst: False
        self.direct = True  # members reach each other's LAN addresses
        self.hold_peer = False  # the control channel holds pair messages back
        self.held: list[tuple[int, int, bytes]] = []  # (from, to, data)

    def join(
        self,
        sid: int,
        source: str = "silence",
        settings: ClientSettings | None = None,
        host: bool = True,
    ) -> MediaSession:
        settings = settings or ClientSettings(vad=False)
        secret = bytes([sid]) * 32
        keys = derive_media_keys(secret)
        self.relay.add_session(sid, keys)
        self.relay.set_room(sid, "room")
        crypto = RoomCrypto(
            room_id=ROOM_ID,
            secret=SECRET,
            session_id=sid,
            user=f"user{sid}",
            nick=f"nick{sid}",
            identity_private=generate_static_key(),
            settings=settings,
        )
        session = MediaSession(sid, keys, settings, crypto, SERVER, [lan(sid)] if host else [])
        pcm = open_source(source, settings.frame_samples)
        others = [(other, f"user{other}") for other in self.members]
        self.members[sid] = Member(session, pcm.read)
        for other in others:
            self.members[other[0]].session.member_joined(sid, f"user{sid}", self.now)
        session.start(others, self.now)
        self.settle()
        return session

    def release_peer(self) -> None:
        """The control channel delivers what it held, and holds nothing more."""
        self.hold_peer = False
        held, self.held = self.held, []
        for sid, to, data in held:
            if to in self.members:
                self.members[to].session.receive_peer(sid, data, self.now)
        self.settle()

    def leave(self, sid: int) -> None:
        del self.members[sid]
        self.relay.remove_session(sid)
        for member in self.members.values():
            member.session.member_left(sid, self.now)
        self.settle()

    def collect(self) -> None:
        """Take what every session wants to send: datagrams onto the wire, pair
        messages straight through the control channel, events into each member."""
        moved = True
        while moved:
            moved = False
            for sid, member in list(self.members.items()):
                session = member.session
                for data, dst in session.datagrams_to_send():
                    self.wire.append((data, nat(sid), dst))
                for to, data in session.peer_messages_to_send():
                    if self.hold_peer:
                        self.held.append((sid, to, data))
                    elif to in self.members:
                        self.members[to].session.receive_peer(sid, data, self.now)
                        moved = True
                member.events += drain(session)

    def deliver(self) -> None:
        """Carry every datagram on the wire once (answers go on the wire again)."""
        wire, self.wire = self.wire, []
        for data, src, dst in wire:
            if self.drop(src, dst):
                continue
            if dst == SERVER:
                if stun.is_stun(data):
                    answer = self.stun.datagram_received(data, src, self.now)
                    if answer is not None:
                        self.wire.append((answer, SERVER, src))
                else:
                    self.relay.datagram_received(data, src, self.now)
                    for packet, to in self.relay.datagrams_to_send():
                        self.wire.append((packet, SERVER, to))
                continue
            for sid, member in self.members.items():
                reachable = dst == nat(sid) or (self.direct and dst == lan(sid))
                if reachable:
                    member.session.receive_datagram(data, src, self.now)

    def settle(self) -> None:
        for _ in range(10):
            self.collect()
            if not self.wire:
                return
            self.deliver()
        self.collect()

    def step(self, dt: float) -> None:
        """``dt`` seconds on: due timers fire, then everything in flight arrives."""
        self.now += dt
        for member in self.members.values():
            timer = member.session.get_timer()
            if timer is not None and timer <= self.now:
                member.session.handle_timer(self.now)
        self.settle()

    def run(self, seconds: float, tick_ms: int = 20) -> None:
        """Each member ticks every ``tick_ms`` with its source's next frame."""
        for _ in range(round(seconds * 1000 / tick_ms)):
            self.step(tick_ms / 1000)
            for member in self.members.values():
                member.played.append(member.session.tick(member.source(), self.now))
            self.settle()

    def events(self, sid: int, kind: type[me.CallEvent]) -> list[me.CallEvent]:
        return [e for e in self.members[sid].events if isinstance(e, kind)]


KEYS = derive_media_keys(bytes(32))


def lone_session(settings: ClientSettings | None = None, sid: int = 7) -> MediaSession:
    """A session alone in its room, not started."""
    settings = settings or ClientSettings(vad=False)
    crypto = RoomCrypto(
        room_id=ROOM_ID,
        secret=SECRET,
        session_id=sid,
        user="solo",
        nick="solo",
        identity_private=generate_static_key(),
        settings=settings,
    )
    return MediaSession(sid, KEYS, settings, crypto, SERVER, [lan(sid)])


def open_header(data: bytes, sid: int = 7) -> PacketType:
    """The type of a lone session's datagram to the server (hop-opened)."""
    header, _ = HopOpener(KEYS.client_to_server, sid).open(data)
    return header.type
