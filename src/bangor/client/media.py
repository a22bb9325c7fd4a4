"""The media session's asyncio shell: one UDP socket, the tick's pacing, and the sound
card (or file) at each end.

Everything the call decides is in :class:`bangor.media.session.MediaSession`; this
shell only feeds it datagrams and captured frames with ``now`` (``time.monotonic()``:
uvloop's ``loop.time()`` moves in whole milliseconds), sends what it queues after every
input, serves its ``get_timer()`` on each tick, writes what it plays to the sink (and
recorder), and calls ``on_output`` so the application can take the session's events and
pair messages.

Ticks (one of our frames each) follow the sound card's clock when the source is a
capture device: its callback hands each captured frame over with
``call_soon_threadsafe``. Otherwise, or while the device delivers nothing, a loop timer
ticks against absolute times so they do not drift; after a long stall the schedule is
reset rather than bursting to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import cast

import ifaddr

from bangor.address import format_address
from bangor.errors import AudioError, ConnectError
from bangor.io.devices import DeviceSource, NullSink, Sink, Source
from bangor.media.session import MediaSession

MAX_STALL_S = 0.2  # behind by more than this: reset the schedule instead of bursting
MAX_HOST_CANDIDATES = 6  # interface addresses offered to members (room for srflx and more)

Address = tuple[str, int]


class MediaShell(asyncio.DatagramProtocol):
    """Runs one MediaSession on the event loop, over a socket, a source and a sink."""

    def __init__(
        self,
        source: Source,
        sink: Sink,
        frame_ms: int,
        *,
        recorder: Sink | None = None,
        on_problem: Callable[[str], None] = lambda message: None,
        on_output: Callable[[], None] = lambda: None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.recorder = recorder  # the call as heard, plus our own voice (``--record``)
        self.on_problem = on_problem  # a device failed: the call goes on
        self.on_output = on_output  # the session may have events and pair messages
        self.session: MediaSession | None = None
        # The session's clock: monotonic like the loop's, but finer than uvloop's
        # milliseconds, so that round trips on a LAN do not measure 0.
        self.clock: Callable[[], float] = time.monotonic
        self.transport: asyncio.DatagramTransport | None = None
        self.server_addr: Address = ("", 0)
        self.local_addr: Address = ("", 0)
        self.source_done = False
        self._tick_s = frame_ms / 1000
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_timer: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._stopped = False

    # --- the socket ----------------------------------------------------------------------

    async def connect(self, host: str, port: int) -> None:
        """One unconnected socket for the relay, STUN and direct paths: the address the
        server sees (and tells us by STUN) is then the one members can reach us at."""
        loop = self._loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, _, _, _, sockaddr = infos[0]
            self.server_addr = (str(sockaddr[0]), int(sockaddr[1]))
            wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
            await loop.create_datagram_endpoint(
                lambda: self, local_addr=(wildcard, 0), family=family
            )
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConnectError(
                f"no UDP path to {format_address(host, port)}: {reason.lower()}"
            ) from None
        assert self.transport is not None
        self.local_addr = _plain(self.transport.get_extra_info("sockname"))

    async def retarget(self, host: str, port: int) -> None:
        """Relay through ``host``:``port`` from now on (a cluster moved our room to
        another node), over the same socket: so of the same address family."""
        family = socket.AF_INET6 if ":" in self.server_addr[0] else socket.AF_INET
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_DGRAM, family=family
            )
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConnectError(
                f"no UDP path to {format_address(host, port)}: {reason.lower()}"
            ) from None
        sockaddr = infos[0][4]
        self.server_addr = (str(sockaddr[0]), int(sockaddr[1]))

    def host_candidates(self) -> list[Address]:
        """Our socket on each interface address members could reach."""
        ipv6 = ":" in self.server_addr[0]  # the socket's family is the server's
        return [(ip, self.local_addr[1]) for ip in host_addresses(ipv6)]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors while the server restarts; the control channel reports outages

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.session is not None and self._loop is not None:
            self.session.receive_datagram(data, _plain(addr), self.clock())
            self.flush()

    # --- running the session ---------------------------------------------------------------

    def start(self, session: MediaSession, members: list[tuple[int, str]]) -> None:
        loop = self._loop = self._loop or asyncio.get_running_loop()
        self.session = session
        session.start(members, self.clock())
        self.flush()
        self._next_tick = loop.time()
        if isinstance(self.source, DeviceSource):
            self.source.on_frame = self._captured
            # The card sets the pace from its first frame; the loop only if it is silent.
            self._next_tick += self._tick_s + MAX_STALL_S
        self._arm_tick(self._next_tick)

    def flush(self) -> None:
        """After any input to the session: send its datagrams and let the application
        take its events and pair messages.

        The session's timers are served by the ticks (see :meth:`_tick`), not by a loop
        timer of their own: nothing it times (probes, consent, keepalives, reports,
        rekeys) minds being up to one frame late, and it saves a wakeup per timer (about
        60 a second in a five-member call with direct paths)."""
        session = self.session
        if session is None or self._stopped:
            return
        datagrams = session.datagrams_to_send()
        if self.transport is not None:
            for data, addr in datagrams:
                self.transport.sendto(data, addr)
        self.on_output()

    def _captured(self) -> None:
        # PortAudio's thread: hand the frame to the loop (gone once the call ended).
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # "Event loop is closed"
                loop.call_soon_threadsafe(self._on_captured)

    def _on_captured(self) -> None:
        if self._stopped or self._loop is None:
            return
        self._tick()
        # The card sets the pace; the loop timer only takes over if it stops delivering.
        self._next_tick = self._loop.time() + self._tick_s + MAX_STALL_S
        self._arm_tick(self._next_tick)

    def _arm_tick(self, when: float) -> None:
        assert self._loop is not None
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        self._tick_timer = self._loop.call_at(when, self._on_tick_timer)

    def _on_tick_timer(self) -> None:
        self._tick_timer = None
        if self._stopped or self._loop is None:
            return
        self._tick()
        self._next_tick += self._tick_s
        now = self._loop.time()
        if self._next_tick < now - MAX_STALL_S:
            self._next_tick = now
        self._arm_tick(self._next_tick)

    def _tick(self) -> None:
        """One of our frames: read the source, let the session send and mix, play."""
        session, loop = self.session, self._loop
        assert session is not None and loop is not None
        pcm = None
        if not self.source_done:
            try:
                pcm = self.source.read()
            except AudioError as exc:
                pcm = None  # a vanished device ends our sending, not the call
                self.on_problem(f"{exc}; you are silent from now on, the call goes on")
            if pcm is None:
                self.source_done = True
        now = self.clock()
        when = session.get_timer()
        if when is not None and now >= when:
            session.handle_timer(now)
        out = session.tick(pcm, now)
        try:
            self.sink.write(out)
        except AudioError as exc:
            self.sink = NullSink(len(out))
            self.on_problem(f"{exc}; playing to nothing from now on, the call goes on")
        if self.recorder is not None:
            try:
                self.recorder.write(session.recording())
            except AudioError as exc:
                self.recorder = None  # the sink has closed its file as far as it got
                self.on_problem(f"{exc}; the call goes on")
        self.flush()

    def stop(self) -> None:
        self._stopped = True
        if isinstance(self.source, DeviceSource):
            self.source.on_frame = None
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        self._tick_timer = None
        if self.transport is not None:
            self.transport.close()


def _plain(addr: tuple[str, int] | tuple[str, int, int, int]) -> Address:
    """(ip, port) of a socket address (IPv6 ones carry flow info and scope too)."""
    return (addr[0], addr[1])


def host_addresses(ipv6: bool = False) -> list[str]:
    """This machine's interface addresses that members could reach (no loopback)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                parsed = ipaddress.ip_address(text)
            except ValueError:
                continue
            if parsed.is_loopback or parsed.is_link_local or (parsed.version == 6) != ipv6:
                continue
            if text not in found:
                found.append(text)
    return found[:MAX_HOST_CANDIDATES]
