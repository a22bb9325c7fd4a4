"""The UDP voice relay, sans-I/O: :meth:`Relay.datagram_received` takes a datagram and
its source address, :meth:`Relay.datagrams_to_send` gives what to send, to whom.

Each session has a hop key pair from the media secret sent in its ``welcome``. An
incoming datagram is dropped without reply unless its session is known, its tag
verifies and its counter is fresh, in that order, before any other work. The relay
then forwards the opaque payload, prefixed with the sender's session id, to every
other member of the room, sealed with each recipient's own key. Addresses are
learned only from authenticated datagrams (so a roaming client keeps talking), and
the relay sends only to learned addresses: an unverified source never gets a byte
back (no amplification).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from bangor.errors import PacketError, ReplayError
from bangor.settings import ServerSettings
from bangor.wire.media import (
    HEADER_SIZE,
    TAG_SIZE,
    HopOpener,
    HopSealer,
    MediaKeys,
    PacketType,
    peek_session_id,
)
from bangor.wire.voice import pack_relayed, unpack_except


@dataclass(frozen=True, slots=True)
class WebAddress:
    """Where a WebTransport session's media goes: the session, not a UDP address.

    The relay treats it like any address (learned from authenticated datagrams only);
    the shell that owns the session sends what goes to it as HTTP/3 datagrams.
    """

    connection: int  # the QUIC connection's number, unique while the server runs
    stream_id: int  # the session's CONNECT stream
    max_datagram: int  # the largest media packet the session carries


UdpAddress = tuple[str, int]
Address = UdpAddress | WebAddress
NO_LIMIT = 1 << 16  # a UDP address takes any packet the relay makes
_OVERHEAD = HEADER_SIZE + TAG_SIZE


@dataclass
class RelayStats:
    """Counters the benchmark and the tests read; cheap integer increments only."""

    received: int = 0
    received_bytes: int = 0
    voice: int = 0  # authenticated VOICE and VOICE_EXCEPT datagrams
    voice_bytes: int = 0
    forwarded: int = 0  # datagrams sent on to listeners
    forwarded_bytes: int = 0
    # Copies not made: the sender listed the listener as reached directly (VOICE_EXCEPT).
    skipped_direct: int = 0
    keepalives: int = 0
    keepalive_bytes: int = 0
    keepalive_answers: int = 0
    keepalive_answer_bytes: int = 0
    dropped_malformed: int = 0
    dropped_unknown: int = 0  # no such session
    dropped_auth: int = 0  # tag did not verify (or not this session's datagram at all)
    dropped_replay: int = 0  # authentic, but seen before or older than the replay window
    dropped_oversize: int = 0
    # Forwarded packets (or keepalive answers) larger than the recipient's datagram limit:
    # a WebTransport session carries at most its max_datagram (Chromium: 1211 bytes).
    dropped_too_big: int = 0


@dataclass(eq=False)
class RelaySession:
    session_id: int
    opener: HopOpener
    sealer: HopSealer
    addr: Address | None = None
    room: Hashable | None = None
    max_datagram: int = NO_LIMIT  # of the learned address
    # When its voice last came through the relay, and to how many members it said it
    # sends directly instead (for the metrics: the relay sees no direct path itself).
    voice_at: float = float("-inf")
    direct_to: int = 0


@dataclass
class Relay:
    max_payload: int = ServerSettings.max_media_payload
    stats: RelayStats = field(default_factory=RelayStats)
    _sessions: dict[int, RelaySession] = field(default_factory=dict)
    # Room -> its members' sessions; a list because the hot path only iterates it.
    _rooms: dict[Hashable, list[RelaySession]] = field(default_factory=dict)
    _outgoing: list[tuple[bytes, Address]] = field(default_factory=list)

    def add_session(self, session_id: int, keys: MediaKeys) -> None:
        self._sessions[session_id] = RelaySession(
            session_id,
            HopOpener(keys.client_to_server, session_id),
            HopSealer(keys.server_to_client, session_id),
        )

    def remove_session(self, session_id: int) -> None:
        self.set_room(session_id, None)
        self._sessions.pop(session_id, None)

    def set_room(self, session_id: int, room: Hashable | None) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        if session.room is not None:
            members = self._rooms.get(session.room, [])
            if session in members:
                members.remove(session)
            if not members:
                self._rooms.pop(session.room, None)
        session.room = room
        if room is not None:
            self._rooms.setdefault(room, []).append(session)

    def address_of(self, session_id: int) -> Address | None:
        session = self._sessions.get(session_id)
        return session.addr if session else None

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one datagram; what to send, to whom, comes from :meth:`datagrams_to_send`
        (often nothing). ``now`` only stamps when a session's voice last came (the
        relay has no timers)."""
        stats = self.stats
        stats.received += 1
        stats.received_bytes += len(data)
        try:
            session = self._sessions.get(peek_session_id(data))
        except PacketError:
            stats.dropped_malformed += 1
            return
        if session is None:
            stats.dropped_unknown += 1
            return
        try:
            header, payload = session.opener.open(data)
        except ReplayError:
            stats.dropped_replay += 1
            return
        except PacketError:
            stats.dropped_auth += 1
            return
        # Authenticated and fresh: only now may the source address be trusted.
        session.addr = addr
        session.max_datagram = addr.max_datagram if type(addr) is WebAddress else NO_LIMIT
        if header.type is PacketType.VOICE or header.type is PacketType.VOICE_EXCEPT:
            skip: frozenset[int] = frozenset()
            if header.type is PacketType.VOICE_EXCEPT:
                # The sender reaches these members directly; sending again would double it.
                try:
                    skip, payload = unpack_except(payload)
                except PacketError:
                    stats.dropped_malformed += 1
                    return
            if len(payload) > self.max_payload:
                stats.dropped_oversize += 1
                return
            stats.voice += 1
            stats.voice_bytes += len(data)
            session.voice_at = now
            session.direct_to = len(skip)
            if session.room is None:
                return
            relayed = pack_relayed(session.session_id, payload)
            size = len(relayed) + _OVERHEAD
            out = self._outgoing
            before = len(out)
            for member in self._rooms[session.room]:
                if member is not session and member.addr is not None:
                    if skip and member.session_id in skip:
                        stats.skipped_direct += 1
                        continue
                    if size > member.max_datagram:
                        stats.dropped_too_big += 1
                        continue
                    out.append((member.sealer.seal(PacketType.VOICE, relayed), member.addr))
            sent = len(out) - before
            stats.forwarded += sent
            stats.forwarded_bytes += sent * size
            return
        if header.type is PacketType.KEEPALIVE:
            stats.keepalives += 1
            stats.keepalive_bytes += len(data)
            if len(payload) + _OVERHEAD > session.max_datagram:
                stats.dropped_too_big += 1
                return
            # Same payload back, so the answer is never larger than the request.
            self._outgoing.append((session.sealer.seal(PacketType.KEEPALIVE_ACK, payload), addr))
            stats.keepalive_answers += 1
            stats.keepalive_answer_bytes += len(data)
            return
        stats.dropped_malformed += 1  # a type only the server sends

    def voice_paths(self, now: float, window: float) -> tuple[int, int, int]:
        """Members in rooms, by what the relay saw of their voice in the last ``window``
        seconds: (relayed to every other member, relayed to some as the sender reaches
        the others directly, none relayed: quiet, or direct to everyone)."""
        every = some = none = 0
        since = now - window
        for members in self._rooms.values():
            for session in members:
                if session.voice_at < since:
                    none += 1
                elif session.direct_to:
                    some += 1
                else:
                    every += 1
        return every, some, none

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Datagrams queued since the last call, with their destinations; clears the queue."""
        out = self._outgoing
        self._outgoing = []
        return out
