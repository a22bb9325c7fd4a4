"""Direct peer-to-peer voice paths: candidates, connectivity checks, consent, sans-I/O.

Each member learns its candidates: the addresses of its media socket on its own
interfaces (host) and the address the server saw it at (server-reflexive, from STUN).
It sends them to each verified member inside the end-to-end pair channel, with a
random key that seals what it will send that member directly (so the server, which
relays the pair channel without reading it, learns neither). Then each side checks
the other's candidates on its own, like ICE's checks without the nomination step:

* every ``check_interval`` it sends a PROBE to each candidate address; a PROBE carries
  its send time, the address it was sent to and a fresh random transaction id, sealed
  with the sender's key; the prober remembers each id with the address and time;
* the receiver answers a PROBE that opens with a PROBE_ACK, echoing its contents, to the
  address it came from, sealed with its own key; a source address it did not know is
  added as a peer-reflexive candidate (checked too);
* an ACK that opens, names a probe still outstanding and comes from exactly the address
  that probe went to proves that address reaches the peer and back: voice to that peer
  goes there from now on (``path`` direct), and the round-trip time is measured. The
  address is taken from our own record, never from the payload: a member holds the key
  and can seal any payload, so what it says must not aim our voice (ICE's rule);
* consent: while direct, PROBEs go to the chosen address every ``consent_interval``;
  no ACK for ``dead_after`` (under a second) and the peer is back on the relay at once,
  while checks go on (fast for ``check_fast_for`` seconds, then every ``retry_interval``).

Each direction is chosen independently (no nomination): the path A uses to B may be
direct while B's to A is relayed. Packets use the media header and hop AEAD of
``wire.media`` with the sender's session id, so the two share one socket with the
relay's traffic and one parser, and a replay window per peer.

Inputs are datagrams, addresses and ``now``; outputs are ``datagrams_to_send()``,
``next_event()`` and ``get_timer()`` (the next check, for ``handle_timer(now)``).
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from collections import deque
from dataclasses import dataclass, field

from bangor.errors import PacketError
from bangor.wire.media import HOP_KEY_SIZE, HopOpener, HopSealer, PacketType, peek_session_id

Address = tuple[str, int]
HOST, SRFLX, PRFLX = "host", "srflx", "prflx"
# send time (our clock), the address probed (IPv6 or IPv4-mapped), its port; then the
# transaction id (appended: responders echo the payload whole, so older ones still work)
_PROBE = struct.Struct("!d16sH")
TXID_SIZE = 12  # random, like a STUN transaction id
PROBE_SIZE = _PROBE.size + TXID_SIZE


@dataclass(frozen=True)
class Candidate:
    """A transport address where a member may be reached."""

    kind: str  # HOST, SRFLX or PRFLX
    ip: str
    port: int

    @property
    def address(self) -> Address:
        return (self.ip, self.port)


@dataclass(frozen=True)
class DirectSettings:
    check_interval: float = 0.1  # seconds between rounds of checks while looking
    check_fast_for: float = 5.0  # look this long at check_interval, then slower
    retry_interval: float = 2.0  # rounds of checks once the fast phase found nothing
    consent_interval: float = 0.2  # probes on a direct path
    dead_after: float = 0.8  # no answer for this long: the path is dead, use the relay
    max_candidates: int = 8  # per peer, what it sent us
    max_peer_reflexive: int = 4  # per peer, addresses learned from its probes
    probe_timeout: float = 2.0  # an answer later than this is to no probe of ours
    # Per peer, probes awaiting an answer; the oldest is forgotten beyond this. Above the
    # fast phase's rate: (max_candidates + max_peer_reflexive) * probe_timeout / interval.
    max_outstanding_probes: int = 256


@dataclass(frozen=True)
class DirectEvent:
    """What DirectPaths tells its user (one base for the layer)."""


@dataclass(frozen=True)
class PathChanged(DirectEvent):
    """Voice to ``session_id`` now goes ``path`` ("direct" to ``address``, or "relay")."""

    session_id: int
    path: str
    address: Address | None
    rtt: float | None


def _pack_address(addr: Address) -> tuple[bytes, int]:
    ip = ipaddress.ip_address(addr[0])
    if ip.version == 4:
        ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
    return ip.packed, addr[1]


def _same_address(a: Address, b: Address) -> bool:
    """Whether two numeric addresses are one (however each is spelled: case, v4-mapped)."""
    try:
        return a[1] == b[1] and _pack_address(a) == _pack_address(b)
    except ValueError:
        return False


@dataclass(eq=False)
class _Peer:
    session_id: int
    sealer: HopSealer | None = None  # our key for them: we offered a direct path
    opener: HopOpener | None = None  # their key: they offered one
    their_key: bytes = b""
    candidates: list[Address] = field(default_factory=list)
    reflexive: list[Address] = field(default_factory=list)
    path: Address | None = None
    rtt: float | None = None
    last_ack: float = 0.0
    checking_since: float = 0.0
    next_check: float = 0.0
    # Our probes awaiting an answer, oldest first: transaction id -> (address, time sent).
    probes: dict[bytes, tuple[Address, float]] = field(default_factory=dict)


class DirectPaths:
    """The direct paths of one member to the others in its room."""

    def __init__(self, session_id: int, settings: DirectSettings | None = None) -> None:
        self.session_id = session_id
        self.settings = settings or DirectSettings()
        self._peers: dict[int, _Peer] = {}
        self._keys: dict[int, bytes] = {}
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[DirectEvent] = deque()

    # --- what the application tells us ---------------------------------------------------

    def local_key(self, session_id: int) -> bytes:
        """Our key for direct packets to this member (made on first use; send it to them)."""
        key = self._keys.get(session_id)
        if key is None:
            key = self._keys[session_id] = secrets.token_bytes(HOP_KEY_SIZE)
            self._peer(session_id).sealer = HopSealer(key, self.session_id)
        return key

    def set_remote(
        self, session_id: int, key: bytes, candidates: list[Candidate], now: float
    ) -> None:
        """A member's key and candidates (from its pair-channel message); starts checks."""
        if len(key) != HOP_KEY_SIZE:
            raise PacketError("direct path key of the wrong size")
        peer = self._peer(session_id)
        if key != peer.their_key:
            peer.their_key = key
            peer.opener = HopOpener(key, session_id)
        addresses = []
        for candidate in candidates[: self.settings.max_candidates]:
            try:
                ip = ipaddress.ip_address(candidate.ip)
            except ValueError:
                continue
            if ip.is_multicast or ip.is_unspecified or not 0 < candidate.port < 65536:
                continue
            addresses.append(candidate.address)
        peer.candidates = addresses
        if peer.path is None:
            peer.checking_since = now
            peer.next_check = now

    def remove(self, session_id: int) -> None:
        self._peers.pop(session_id, None)
        self._keys.pop(session_id, None)

    # --- outputs -------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> DirectEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [p.next_check for p in self._peers.values() if self._can_check(p)]
        return min(times, default=None)

    def direct(self) -> dict[int, Address]:
        """Members whose voice goes direct, and where."""
        return {sid: p.path for sid, p in self._peers.items() if p.path is not None}

    def rtt(self, session_id: int) -> float | None:
        peer = self._peers.get(session_id)
        return peer.rtt if peer is not None and peer.path is not None else None

    def is_peer(self, session_id: int) -> bool:
        return session_id in self._peers

    def seal(self, session_id: int, ptype: PacketType, payload: bytes) -> bytes:
        """A direct packet to a member on a direct path (KeyError if it has none)."""
        sealer = self._peers[session_id].sealer
        assert sealer is not None  # a path is only chosen by answers to our probes
        return sealer.seal(ptype, payload)

    # --- inputs --------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        s = self.settings
        for peer in self._peers.values():
            if not self._can_check(peer) or now < peer.next_check:
                continue
            if peer.path is not None:
                if now - peer.last_ack > s.dead_after:
                    self._fall_back(peer, now)
                else:
                    self._probe(peer, peer.path, now)
                    peer.next_check = now + s.consent_interval
                    continue
            for addr in (*peer.candidates, *peer.reflexive):
                self._probe(peer, addr, now)
            fast = now - peer.checking_since < s.check_fast_for
            peer.next_check = now + (s.check_interval if fast else s.retry_interval)

    def datagram_received(self, data: bytes, addr: Address, now: float) -> tuple[int, bytes] | None:
        """A datagram from a member: returns (sender, voice payload) for direct voice.

        Probes are answered and answers taken in; anything that does not open is
        dropped with PacketError (the caller counts it).
        """
        sender = peek_session_id(data)
        peer = self._peers.get(sender)
        if peer is None or peer.opener is None:
            raise PacketError("direct packet from a member without a key")
        header, payload = peer.opener.open(data)
        if header.type is PacketType.VOICE:
            return sender, payload
        if header.type is PacketType.PROBE:
            if peer.sealer is None:
                return None  # we offered no direct path (relay only): stay silent
            self._learn(peer, addr, now)
            self._out.append((peer.sealer.seal(PacketType.PROBE_ACK, payload), addr))
        elif header.type is PacketType.PROBE_ACK:
            self._on_ack(peer, payload, addr, now)
        else:
            raise PacketError(f"{header.type.name} is not a direct packet")
        return None

    # --- inside --------------------------------------------------------------------------

    def _peer(self, session_id: int) -> _Peer:
        peer = self._peers.get(session_id)
        if peer is None:
            peer = self._peers[session_id] = _Peer(session_id)
        return peer

    @staticmethod
    def _can_check(peer: _Peer) -> bool:
        return peer.sealer is not None and peer.opener is not None

    def _probe(self, peer: _Peer, addr: Address, now: float) -> None:
        assert peer.sealer is not None
        try:
            packed, port = _pack_address(addr)
        except ValueError:
            return
        self._forget_probes(peer, now)
        txid = secrets.token_bytes(TXID_SIZE)
        peer.probes[txid] = (addr, now)
        payload = _PROBE.pack(now, packed, port) + txid
        self._out.append((peer.sealer.seal(PacketType.PROBE, payload), addr))

    def _forget_probes(self, peer: _Peer, now: float) -> None:
        """Drop expired probes, and the oldest while at the bound (they are in time order)."""
        s, probes = self.settings, peer.probes
        while probes:
            txid, (_, sent) = next(iter(probes.items()))
            if now - sent <= s.probe_timeout and len(probes) < s.max_outstanding_probes:
                break
            del probes[txid]

    def _learn(self, peer: _Peer, addr: Address, now: float) -> None:
        known = addr in peer.candidates or addr in peer.reflexive
        if not known and len(peer.reflexive) < self.settings.max_peer_reflexive:
            peer.reflexive.append(addr)
            if peer.path is None:
                peer.next_check = now  # a triggered check towards where it came from

    def _on_ack(self, peer: _Peer, payload: bytes, source: Address, now: float) -> None:
        if len(payload) != PROBE_SIZE:
            raise PacketError("malformed probe answer")
        txid = payload[_PROBE.size :]
        record = peer.probes.get(txid)
        if record is None or now - record[1] > self.settings.probe_timeout:
            raise PacketError("probe answer to no recent probe of ours")
        probed, sent = record
        if not _same_address(source, probed):
            # Only an answer from where the probe went proves that address works; the
            # probe stays outstanding for the real answer.
            raise PacketError("probe answer from another address than the one probed")
        del peer.probes[txid]
        sample = now - sent
        if peer.path is None:
            peer.path = probed
            peer.rtt = sample
            peer.last_ack = now
            peer.next_check = now + self.settings.consent_interval
            self._events.append(PathChanged(peer.session_id, "direct", probed, sample))
        elif probed == peer.path:
            peer.last_ack = now
            assert peer.rtt is not None
            peer.rtt += (sample - peer.rtt) / 8  # smoothed like TCP's SRTT

    def _fall_back(self, peer: _Peer, now: float) -> None:
        peer.path = None
        peer.rtt = None
        peer.checking_since = now
        peer.next_check = now
        self._events.append(PathChanged(peer.session_id, "relay", None, None))
