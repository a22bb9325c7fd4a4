"""A WebTransport client for tests (aioquic), standing in for a browser.

It does what Chromium does with ``new WebTransport(url, {serverCertificateHashes})``: an
HTTP/3 connection with datagrams, an extended CONNECT (draft-02 headers), bidirectional
streams and datagrams within the session. ``control_client`` runs the real Python
control client (Noise XX, login, rooms) over the session's first bidirectional stream.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived

from bangor.client.control import ControlClient
from bangor.settings import ClientSettings
from bangor.wire.noise import generate_static_key
from bangor.wire.session import ControlSession, Role


class StreamWriter:
    """Enough of asyncio.StreamWriter for ControlClient, over one QUIC stream."""

    def __init__(self, protocol: WebClient, stream_id: int) -> None:
        self.protocol = protocol
        self.stream_id = stream_id
        self.closed = False

    def write(self, data: bytes) -> None:
        if not self.closed and not self.protocol.terminated:
            self.protocol._quic.send_stream_data(self.stream_id, data)
            self.protocol.transmit()

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.protocol.terminated:
                self.protocol._quic.send_stream_data(self.stream_id, b"", end_stream=True)
                self.protocol.transmit()

    async def wait_closed(self) -> None:
        pass


class WebClient(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.session_id: int | None = None
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.session_ended = asyncio.Event()
        self.datagrams: asyncio.Queue[bytes] = asyncio.Queue()
        self.streams: dict[int, asyncio.StreamReader] = {}
        self.terminated = False
        self.closed = asyncio.Event()

    # --- events ---------------------------------------------------------------------

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = True
            for reader in self.streams.values():
                reader.feed_eof()
            self.session_ended.set()
            self.closed.set()
            if not self.status.done():
                self.status.set_exception(ConnectionError("connection closed"))
            return
        # Our own WebTransport streams carry raw bytes after their header: H3 must not parse.
        if isinstance(event, StreamDataReceived) and event.stream_id in self.streams:
            reader = self.streams[event.stream_id]
            if event.data:
                reader.feed_data(event.data)
            if event.end_stream:
                reader.feed_eof()
            return
        for h3_event in self.h3.handle_event(event):
            self.h3_event_received(h3_event)

    def h3_event_received(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and event.stream_id == self.session_id:
            if not self.status.done():
                status = dict(event.headers)[b":status"]
                self.status.set_result(int(status))
            if event.stream_ended:
                self.session_ended.set()
        elif isinstance(event, DataReceived) and event.stream_id == self.session_id:
            if event.stream_ended:
                self.session_ended.set()
        elif isinstance(event, DatagramReceived) and event.stream_id == self.session_id:
            self.datagrams.put_nowait(event.data)

    # --- requests ---------------------------------------------------------------------

    async def connect_session(self, authority: str, path: str = "/bangor/1") -> int:
        """Send the extended CONNECT; the response status."""
        stream_id = self._quic.get_next_available_stream_id()
        self.session_id = stream_id
        self.h3.send_headers(
            stream_id,
            [
                (b":method", b"CONNECT"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b":protocol", b"webtransport"),
                (b"sec-webtransport-http3-draft02", b"1"),
                (b"origin", f"https://{authority}".encode()),
            ],
        )
        self.transmit()
        return await asyncio.wait_for(self.status, 5)

    def open_stream(self) -> tuple[asyncio.StreamReader, StreamWriter]:
        assert self.session_id is not None
        stream_id = self.h3.create_webtransport_stream(self.session_id)
        reader = asyncio.StreamReader()
        self.streams[stream_id] = reader
        self.transmit()
        return reader, StreamWriter(self, stream_id)

    def send_datagram(self, data: bytes) -> None:
        assert self.session_id is not None
        self.h3.send_datagram(self.session_id, data)
        self.transmit()

    async def next_datagram(self) -> bytes:
        return await asyncio.wait_for(self.datagrams.get(), 5)

    def end_session(self) -> None:
        """Close the session as a browser's ``transport.close()`` does (FIN on CONNECT)."""
        assert self.session_id is not None
        self._quic.send_stream_data(self.session_id, b"", end_stream=True)
        self.transmit()

    @property
    def max_datagram_frame_size(self) -> int | None:
        return self._quic._remote_max_datagram_frame_size


def client_configuration(cafile: str | None = None) -> QuicConfiguration:
    configuration = QuicConfiguration(
        alpn_protocols=H3_ALPN,
        is_client=True,
        max_datagram_frame_size=65536,
        max_datagram_size=1250,  # Chromium's packets: room for its 1211-byte datagrams
    )
    if cafile is None:
        # Like serverCertificateHashes: the tests compare the hash themselves.
        configuration.verify_mode = ssl.CERT_NONE
    else:
        configuration.load_verify_locations(cafile)
    return configuration


@asynccontextmanager
async def web_client(
    host: str, port: int, cafile: str | None = None, server_name: str | None = None
) -> AsyncIterator[WebClient]:
    configuration = client_configuration(cafile)
    configuration.server_name = server_name or host
    async with connect(
        host, port, configuration=configuration, create_protocol=WebClient
    ) as protocol:
        yield cast(WebClient, protocol)


async def control_client(client: WebClient) -> ControlClient:
    """The real control client over the session's first bidirectional stream, after
    the Noise handshake (its reading started)."""
    reader, writer = client.open_stream()
    settings = ClientSettings()
    session = ControlSession(
        Role.CLIENT,
        generate_static_key(),
        ping_interval=settings.ping_interval,
        dead_after=settings.dead_after,
    )
    control = ControlClient(reader, cast(asyncio.StreamWriter, writer), session, settings)
    await asyncio.wait_for(control._handshake(), 5)
    control.start()
    return control
