"""The WebTransport shell: browsers speak Bangor's protocol over HTTP/3 (aioquic).

A WebTransport session at ``/bangor/1`` is an ordinary server session: its first
bidirectional stream carries exactly the bytes of the TCP control channel (handed to the
same :class:`~bangor.server.app.Connection`, so admission, login, limits and rooms are
the TCP code), and each HTTP/3 datagram carries one media packet for the relay, which
sees the session as a :class:`~bangor.server.relay.WebAddress`. No new code path sees
plaintext: the control channel is Noise end to end, media hop-sealed as on UDP.

One WebTransport session per QUIC connection (the server says so: WT_MAX_SESSIONS 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.buffer import size_uint_var
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection, ProtocolError
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    ProtocolNegotiated,
    QuicEvent,
    StopSendingReceived,
    StreamReset,
)
from aioquic.quic.packet import QuicErrorCode

from bangor.address import format_address
from bangor.errors import BangorError, UsageError
from bangor.server.relay import WebAddress
from bangor.server.webcert import SelfCertificates, check_operator_files
from bangor.server.webpage import WEBTRANSPORT_PATH as PATH
from bangor.server.webpage import PageServer, PerSource, check_web_host
from bangor.settings import ServerSettings

if TYPE_CHECKING:
    from bangor.server.app import Server

log = logging.getLogger("bangor.server.web")

# SETTINGS_WT_MAX_SESSIONS (draft-ietf-webtrans-http3-13/14); Safari wants it, Chromium
# (which speaks draft-02, ENABLE_WEBTRANSPORT 0x2b603742) ignores it. aioquic PR #652.
SETTING_WT_MAX_SESSIONS = 0x14E9CD29
SETTING_ENABLE_WEBTRANSPORT = 0x2B603742
MAX_DATAGRAM_FRAME_SIZE = 65536
# Worst case bytes around one media packet in a QUIC packet: short header (1), the
# longest connection id (20), packet number (4), AEAD tag (16), DATAGRAM frame type (1)
# and length (2), the quarter stream id (up to 4 here).
QUIC_DATAGRAM_OVERHEAD = 1 + 20 + 4 + 16 + 1 + 2 + 4
H3_REQUEST_CANCELLED = 0x10C
# What aioquic raises for a send on a stream the client has finished or stopped.
STREAM_GONE = (ProtocolError, RuntimeError, ValueError)
_connection_numbers = itertools.count(1)


@dataclass
class WebStats:
    """Counters the tests and the benchmark read."""

    connections: int = 0  # QUIC connections accepted
    refused_connections: int = 0  # over max_web_connections(_per_address)
    evicted_connections: int = 0  # without a session, closed to make room for a newcomer
    sessions: int = 0  # WebTransport sessions accepted
    not_found: int = 0  # requests for anything but CONNECT /bangor/1
    dropped_datagrams: int = 0  # for no live session of the connection
    dropped_queue_full: int = 0  # media to a session whose QUIC send queue is full
    closed_bad_stream: int = 0  # sessions closed for a stream other than the control one
    closed_overrun: int = 0  # sessions closed for sending far more than was read


class H3WebConnection(H3Connection):
    """aioquic's H3Connection, also sending SETTINGS_WT_MAX_SESSIONS = 1."""

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings[SETTING_WT_MAX_SESSIONS] = 1
        return settings


class StreamFeed:
    """The control stream's bytes as a :class:`~bangor.server.app.ControlReader`: the
    shell feeds what QUIC delivers, the connection reads. QUIC grants the client more
    credit whether or not we read, so the buffer has a limit of its own."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> bool:
        """Add ``data``; False (nothing added) if the buffer would pass its limit."""
        if len(self._buffer) + len(data) > self.limit:
            return False
        self._buffer += data
        self._wake()
        return True

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self, n: int = -1) -> bytes:
        while not self._buffer and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


class WebSession:
    """One WebTransport session; for its :class:`Connection` it is the writer (and the
    writer's transport)."""

    def __init__(self, protocol: WebProtocol, stream_id: int, max_datagram: int) -> None:
        self.protocol = protocol
        self.stream_id = stream_id  # the CONNECT stream: the session id
        self.address = WebAddress(protocol.number, stream_id, max_datagram)
        self.reader = StreamFeed(protocol.endpoint.settings.web_max_receive_buffer)
        self.control: int | None = None  # the client's first bidirectional stream
        self.closed = False
        self.ended = False  # the client or the connection ended it

    # --- ControlWriter ------------------------------------------------------------

    @property
    def transport(self) -> WebSession:
        return self

    def write(self, data: bytes) -> None:
        if self.closed or self.control is None or self.protocol.terminated:
            return  # the server never speaks first: nothing to say before the stream
        try:
            self.protocol.quic.send_stream_data(self.control, data)
        except STREAM_GONE:
            # The client stopped the stream (STOP_SENDING): nobody hears this session any
            # more. Another member's request may be what pushed to it, so never raise.
            self.end()
            return
        self.protocol.transmit()

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        """Control bytes sent but not yet acknowledged (a client that stops reading
        stops granting credit, and this grows)."""
        if self.control is None:
            return 0
        stream = self.protocol.quic._streams.get(self.control)  # no public accessor
        return 0 if stream is None else len(stream.sender._buffer)

    def close(self) -> None:
        """End the session cleanly: FIN on the control stream; the client ends the
        session once it has read that far (or the close grace does). Ending the session
        here too would let Chromium drop the stream's unread last bytes, the goodbye.
        A session the client ended or broke, or one without a control stream, has no
        goodbye to wait for: FIN on the CONNECT stream ends it at once."""
        if self.closed:
            return
        self.closed = True
        protocol = self.protocol
        if not protocol.terminated:
            quic = protocol.quic
            with contextlib.suppress(Exception):  # a stream the client reset already
                if self.control is not None:
                    quic.send_stream_data(self.control, b"", end_stream=True)
                if self.ended or self.control is None:
                    quic.send_stream_data(self.stream_id, b"", end_stream=True)
            protocol.transmit()
        protocol.session_closed(self)

    def abort(self) -> None:
        """End the session and its QUIC connection at once."""
        self.closed = True
        self.protocol.session_closed(self)
        self.protocol.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase="session closed")

    # --- from the client ------------------------------------------------------------

    def end(self) -> None:
        """The client (or the connection) ended the session: the connection reads EOF."""
        if not self.ended:
            self.ended = True
            self.reader.feed_eof()
            self.protocol.endpoint.session_ended(self)


class WebProtocol(QuicConnectionProtocol):
    """One QUIC connection: HTTP/3 with WebTransport, at most one session."""

    def __init__(self, quic: QuicConnection, endpoint: WebEndpoint, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.endpoint = endpoint
        self.number = next(_connection_numbers)
        self.quic = quic
        self.h3: H3WebConnection | None = None
        self.session: WebSession | None = None
        self.had_session = False
        self.peer: tuple[str, int] | None = None
        self.terminated = False
        self.refused = False
        self._deadline: asyncio.TimerHandle | None = None

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self.peer is None:
            self.peer = (str(addr[0]), int(addr[1]))
            if not self.endpoint.connection_opened(self):
                # Refused before anything is answered but the close (a handshake
                # would let the client think it got in).
                self.refused = True
                self.quic.receive_datagram(cast(bytes, data), addr, now=self._loop.time())
                self.close(error_code=QuicErrorCode.CONNECTION_REFUSED, reason_phrase="busy")
                return
        super().datagram_received(data, addr)

    def arm_deadline(self, seconds: float) -> None:
        """Close the connection unless a session starts (or it ends) within ``seconds``."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if self.session is None or self.session.closed:
            self.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase="no session")

    def quic_event_received(self, event: QuicEvent) -> None:
        if self.refused and not isinstance(event, ConnectionTerminated):
            return
        if isinstance(event, ProtocolNegotiated):
            self.h3 = H3WebConnection(self.quic, enable_webtransport=True)
        elif isinstance(event, HandshakeCompleted):
            self.arm_deadline(self.endpoint.settings.web_connect_timeout)
        elif isinstance(event, ConnectionTerminated):
            self.terminated = True
            if self._deadline is not None:
                self._deadline.cancel()
            if self.session is not None:
                self.session.end()
            self.endpoint.connection_closed(self)
            return
        elif isinstance(event, StreamReset | StopSendingReceived):
            session = self.session
            if session is not None and event.stream_id in (session.stream_id, session.control):
                session.end()
        if self.h3 is not None:
            try:
                for h3_event in self.h3.handle_event(event):
                    self.h3_event_received(h3_event)
            except Exception as exc:  # the client's bytes must never put a traceback on the loop
                log.debug("web connection from %s: closed, %s", self.peer_text, type(exc).__name__)
                self.close(error_code=ErrorCode.H3_INTERNAL_ERROR, reason_phrase="internal error")

    def h3_event_received(self, event: H3Event) -> None:
        session = self.session
        if isinstance(event, DatagramReceived):
            if session is not None and event.stream_id == session.stream_id and not session.ended:
                self.endpoint.media_received(event.data, session.address)
            else:
                self.endpoint.stats.dropped_datagrams += 1
        elif isinstance(event, WebTransportStreamDataReceived):
            self.stream_data(event)
        elif isinstance(event, HeadersReceived):
            if session is not None and event.stream_id == session.stream_id:
                if event.stream_ended:
                    session.end()
            else:
                self.request(event)
        elif (
            isinstance(event, DataReceived)
            and session is not None
            and event.stream_id == session.stream_id
            and event.stream_ended
        ):
            # Capsules on the CONNECT stream mean nothing to us; its end ends the session.
            session.end()

    def stream_data(self, event: WebTransportStreamDataReceived) -> None:
        session = self.session
        if session is None or event.session_id != session.stream_id or session.ended:
            with contextlib.suppress(Exception):
                self.quic.stop_stream(event.stream_id, H3_REQUEST_CANCELLED)
            return
        if session.control is None and event.stream_id % 4 == 0:  # client bidirectional
            session.control = event.stream_id
        if event.stream_id != session.control:
            # DEBUG, as for TCP before login: a flood must not flood the log (stats count it).
            log.debug("web session from %s: closed, a second stream", self.peer_text)
            self.endpoint.stats.closed_bad_stream += 1
            session.end()
            session.close()
            return
        if event.data and not session.reader.feed(event.data):
            log.debug("web session from %s: closed, control stream overrun", self.peer_text)
            self.endpoint.stats.closed_overrun += 1
            session.end()
            session.abort()
            return
        if event.stream_ended:
            session.end()

    def request(self, event: HeadersReceived) -> None:
        assert self.h3 is not None
        headers = {name: value for name, value in event.headers}
        if (
            headers.get(b":method") == b"CONNECT"
            and headers.get(b":protocol") == b"webtransport"
            and headers.get(b":path") == PATH.encode()
        ):
            if self.had_session:
                status = b"429"  # WT_MAX_SESSIONS is 1
            else:
                self.accept(event.stream_id)
                return
        else:
            self.endpoint.stats.not_found += 1
            status = b"404"
        # Trailers on a request already answered, or a stream the client stopped: no answer.
        with contextlib.suppress(*STREAM_GONE):
            self.h3.send_headers(event.stream_id, [(b":status", status)], end_stream=True)
        self.transmit()

    def accept(self, stream_id: int) -> None:
        assert self.h3 is not None
        self.had_session = True
        try:
            self.h3.send_headers(
                stream_id, [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]
            )
        except STREAM_GONE:
            return  # the client stopped the CONNECT stream already: no session
        self.transmit()
        session = WebSession(self, stream_id, self.max_datagram(stream_id))
        self.session = session
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.endpoint.session_started(session)

    def max_datagram(self, stream_id: int) -> int:
        """The largest media packet this session carries: the setting, within what one
        of our QUIC packets and the client's DATAGRAM frame limit hold."""
        settings = self.endpoint.settings
        limit = settings.web_max_datagram
        limit = min(limit, settings.web_packet_size - QUIC_DATAGRAM_OVERHEAD)
        remote = self.quic._remote_max_datagram_frame_size  # no public accessor
        if remote is not None:
            limit = min(limit, remote - 1 - 2 - size_uint_var(stream_id // 4))
        return max(limit, 0)

    def session_closed(self, session: WebSession) -> None:
        """Our side closed ``session``: end the connection soon (time for the last bytes
        to arrive), or now if the client lingers."""
        self.endpoint.session_ended(session)
        if not self.terminated:
            self.arm_deadline(self.endpoint.settings.web_close_grace)

    @property
    def peer_text(self) -> str:
        return format_address(self.peer[0], self.peer[1]) if self.peer else "?"


@dataclass(frozen=True)
class WebOptions:
    """``serve --web [HOST:]PORT [--tls-cert F --tls-key F]``."""

    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass
class WebEndpoint:
    """The UDP side of ``--web``: QUIC connections, their sessions, media to and fro."""

    server: Server
    configuration: QuicConfiguration
    certificates: SelfCertificates | None  # None: the operator's certificate
    stats: WebStats = field(default_factory=WebStats)
    wall_clock: Callable[[], float] = time.time
    quic_servers: list[QuicServer] = field(default_factory=list)
    # Open QUIC connections, oldest first (the oldest without a session makes room).
    protocols: dict[WebProtocol, None] = field(default_factory=dict)
    per_address: PerSource = field(init=False)
    sessions: dict[WebAddress, WebSession] = field(default_factory=dict)
    _dirty: set[WebProtocol] = field(default_factory=set)
    _renew_timer: asyncio.TimerHandle | None = None
    _draining: set[WebProtocol] = field(default_factory=set)
    _drained: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.per_address = PerSource(self.settings.network_prefix_v6)

    @property
    def settings(self) -> ServerSettings:
        return self.server.settings

    @classmethod
    def make(
        cls, server: Server, options: WebOptions, certificates: SelfCertificates | None
    ) -> WebEndpoint:
        settings = server.settings
        configuration = QuicConfiguration(
            alpn_protocols=H3_ALPN,
            is_client=False,
            max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE,
            max_datagram_size=settings.web_packet_size,
            idle_timeout=settings.web_idle_timeout,
            # Credit a client may use before we read: aioquic holds up to this much of
            # what arrives out of order (its default is 1 MiB per connection).
            max_data=settings.web_max_receive_buffer,
            max_stream_data=settings.web_max_receive_buffer,
        )
        if certificates is None:
            assert options.tls_cert is not None and options.tls_key is not None
            configuration.load_cert_chain(options.tls_cert, options.tls_key)
        else:
            configuration.certificate = certificates.current.certificate
            configuration.private_key = certificates.current.private_key
        return cls(server, configuration, certificates)

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP ``host``:``port`` (OSError if it cannot). For ``localhost`` on
        127.0.0.1 and, if it exists, ::1: Chromium resolves the name to both by itself
        and tries WebTransport on ::1 only, with no fallback."""
        hosts = [host] if host != "localhost" else ["127.0.0.1", "::1"]
        for i, address in enumerate(hosts):
            try:
                quic_server = await serve(
                    address,
                    port,
                    configuration=self.configuration,
                    create_protocol=lambda quic, **kw: WebProtocol(quic, self, **kw),
                    # Retry: no connection state (nor a handshake's crypto and up to 3x
                    # its bytes sent) for a source until it shows it receives our packets,
                    # so spoofed Initials cannot fill max_web_connections.
                    retry=True,
                )
            except OSError:
                if i == 0:
                    self.close()
                    raise
                log.debug("no WebTransport on %s: cannot listen there", address)
                continue
            self.quic_servers.append(quic_server)
        self.server.set_web(self)
        self._arm_renewal()

    def certificate_hashes(self) -> list[str]:
        if self.certificates is None:
            return []
        # The renewal timer looks hourly; after a wall-clock jump (a suspend) the page
        # would list no valid certificate until it fires, so a page load renews if due.
        self.renew()
        return self.certificates.hashes(self.wall_clock())

    # --- certificate renewal ----------------------------------------------------------

    def renew(self) -> bool:
        """Renew the self-made certificate if due; new connections use the new one."""
        certs = self.certificates
        if certs is None or not certs.maybe_renew(self.wall_clock()):
            return False
        self.configuration.certificate = certs.current.certificate
        self.configuration.private_key = certs.current.private_key
        log.warning("web certificate renewed, sha-256 %s", certs.current.sha256)
        return True

    def _arm_renewal(self) -> None:
        if self.certificates is None:
            return
        delay = max(1.0, self.certificates.renew_at() - self.wall_clock())
        # Wall-clock time can jump (suspend): look again at least hourly.
        self._renew_timer = asyncio.get_running_loop().call_later(
            min(delay, 3600.0), self._on_renewal_timer
        )

    def _on_renewal_timer(self) -> None:
        self.renew()
        self._arm_renewal()

    # --- connections and sessions ---------------------------------------------------------

    def connection_opened(self, protocol: WebProtocol) -> bool:
        """Count a new connection in; False if it is one too many (the caller closes it)."""
        address = self.source(protocol)
        settings = self.settings
        full = len(self.protocols) >= settings.max_web_connections
        if full and not self.per_address.at_limit(
            address, settings.max_web_connections_per_address
        ):
            # Full: the oldest connection still without a session makes room (it had
            # its chance; holding places without a session must not keep everyone out).
            idle = next((p for p in self.protocols if p.session is None), None)
            if idle is not None:
                self.stats.evicted_connections += 1
                log.debug("web connection from %s closed: room for another", idle.peer_text)
                idle.refused = True  # nothing it sends is handled any more
                self.connection_closed(idle)
                idle.close(error_code=QuicErrorCode.CONNECTION_REFUSED, reason_phrase="busy")
                full = False
        if full or self.per_address.at_limit(address, settings.max_web_connections_per_address):
            self.stats.refused_connections += 1
            log.debug("web connection from %s refused: too many", protocol.peer_text)
            return False
        self.stats.connections += 1
        self.protocols[protocol] = None
        self.per_address.add(address)
        # Until the handshake completes QUIC's own timeouts apply; then the CONNECT's.
        protocol.arm_deadline(settings.web_connect_timeout + settings.handshake_timeout)
        return True

    def source(self, protocol: WebProtocol) -> str:
        assert protocol.peer is not None
        return self.per_address.source(protocol.peer[0])

    def connection_closed(self, protocol: WebProtocol) -> None:
        self._dirty.discard(protocol)
        self._draining.discard(protocol)
        if not self._draining:
            self._drained.set()
        if protocol not in self.protocols:
            return
        del self.protocols[protocol]
        self.per_address.remove(self.source(protocol))

    def session_started(self, session: WebSession) -> None:
        self.stats.sessions += 1
        self.sessions[session.address] = session
        peer = session.protocol.peer or ("?", 0)
        task = asyncio.get_running_loop().create_task(
            self.server.run_connection(
                session.reader, session, session.protocol.peer_text, str(peer[0])
            )
        )
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def session_ended(self, session: WebSession) -> None:
        if self.sessions.get(session.address) is session:
            del self.sessions[session.address]

    # --- media ----------------------------------------------------------------------------

    def media_received(self, data: bytes, address: WebAddress) -> None:
        counts = self.server.counts
        timing = counts.timing  # as on UDP (app.RelayProtocol): only for --metrics
        start = time.perf_counter_ns() if timing else 0
        relay = self.server.relay
        forwarded = relay.stats.forwarded
        relay.datagram_received(data, address, time.monotonic())
        self.server.send_media(relay.datagrams_to_send())
        if timing and relay.stats.forwarded != forwarded:
            counts.forward_times.observe(time.perf_counter_ns() - start)

    def send_datagram(self, packet: bytes, dest: WebAddress) -> None:
        session = self.sessions.get(dest)
        if session is None or session.closed:
            return  # gone a moment ago; the relay forgets it when its connection drops
        protocol = session.protocol
        h3 = protocol.h3
        if h3 is None or protocol.terminated:
            return
        # aioquic queues datagrams without bound while congestion control holds them;
        # old voice is worth nothing, so a full queue drops the new packet.
        if len(protocol.quic._datagrams_pending) >= self.settings.web_max_queued_datagrams:
            self.stats.dropped_queue_full += 1
            return
        h3.send_datagram(session.stream_id, packet)
        self._dirty.add(protocol)

    def flush(self) -> None:
        dirty = self._dirty
        if dirty:
            self._dirty = set()
            for protocol in dirty:
                protocol.transmit()

    async def drain(self) -> None:
        """Wait (up to ``web_close_grace``) for the connections of sessions the server
        has just closed to end: the client ends them once it has read the server's
        goodbye, which closing the connection at once could overtake."""
        self._draining = {p for p in self.protocols if p.had_session and not p.terminated}
        if not self._draining:
            return
        self._drained.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), self.settings.web_close_grace)

    def close(self) -> None:
        if self._renew_timer is not None:
            self._renew_timer.cancel()
        self.server.set_web(None)
        for session in list(self.sessions.values()):
            session.close()
        for quic_server in self.quic_servers:
            quic_server.close()
        self.quic_servers = []


@dataclass
class WebService:
    """What ``--web`` runs: the WebTransport endpoint (UDP) and the page (TCP)."""

    endpoint: WebEndpoint
    page: PageServer
    host: str
    port: int

    @property
    def url(self) -> str:
        scheme = "https" if self.page.ssl_context is not None else "http"
        return f"{scheme}://{format_address(self.host, self.port)}/"


async def start_web(server: Server, options: WebOptions) -> WebService:
    """Start the page and the WebTransport endpoint on one port number (TCP and UDP);
    the server's close stops them. UsageError for a bad host or certificate files,
    BangorError when the port is taken."""
    settings = server.settings
    tls = options.tls_cert is not None or options.tls_key is not None
    if tls and (options.tls_cert is None or options.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    check_web_host(options.host, tls)
    ssl_context = None
    certificates = None
    if tls:
        assert options.tls_cert is not None and options.tls_key is not None
        ssl_context = check_operator_files(options.tls_cert, options.tls_key)
    else:
        certificates = SelfCertificates(
            [options.host], time.time(), settings.web_cert_lifetime, settings.web_cert_renew_before
        )
    try:
        endpoint = WebEndpoint.make(server, options, certificates)
    except (ValueError, OSError) as exc:  # aioquic reads the files again
        raise UsageError(f"--tls-cert/--tls-key: cannot use them for QUIC: {exc}") from None
    page = PageServer(settings, options.port, endpoint.certificate_hashes, ssl_context)
    where = format_address(options.host, options.port)
    # TCP and UDP share one port number; with port 0 retry until both bind.
    for _attempt in range(20):
        try:
            tcp = await page.start(options.host, options.port)
        except OSError as exc:
            raise BangorError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        bound = int(tcp.sockets[0].getsockname()[1])
        try:
            await endpoint.start(options.host, bound)
        except OSError as exc:
            page.close()
            if options.port != 0:
                raise BangorError(
                    f"cannot listen on {where} (UDP): {exc.strerror or exc}"
                ) from None
            continue
        break
    else:
        raise BangorError(f"could not bind TCP and UDP on one port number for {where}")
    page.web_port = bound
    server.closers.append(page.close)
    server.drains.append(endpoint.drain)
    server.after_close.append(endpoint.close)
    return WebService(endpoint, page, options.host, bound)
