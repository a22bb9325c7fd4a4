"""The WebTransport shell against a hostile client (review of issue 14's server side):
stream resets, malformed requests, spoofed Initials, IPv6 sources, clock jumps."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from bangor.server.app import Server
from bangor.server.web import WebOptions, WebService, start_web
from bangor.server.webcert import SelfCertificates
from tests.server.test_app import make_server
from tests.server.test_web import tcp_login, until, web_login
from tests.server.test_webpage import fetch, get
from tests.webclient import client_configuration, web_client


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler (a traceback in the log)."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(None)


async def test_a_member_that_stops_its_control_stream_breaks_no_one_else(
    server: Server, web: WebService
) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        alice = await web_login(browser, web, "alice")
        room = await alice.create_room("r")
        await alice.join_room(room.room_id)
        session = next(iter(web.endpoint.sessions.values()))
        control = session.control
        assert control is not None
        # STOP_SENDING on the control stream: the server may send nothing more on it.
        browser._quic.stop_stream(control, 0)
        browser.transmit()
        sender = session.protocol.quic._streams[control].sender
        await until(lambda: sender._reset_error_code is not None)
        # Bob joining pushes member_joined to alice: that must not fail bob's request.
        bob = await tcp_login(server, "bob")
        await bob.join_room(room.room_id)
        await until(lambda: len(server.connections) == 1)  # alice's session is gone
        assert await bob.create_room("still here")
        await bob.leave()


async def test_trailers_after_an_answered_request_are_no_traceback(
    web: WebService, loop_errors: list[dict[str, Any]]
) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        assert await browser.connect_session(f"127.0.0.1:{web.port}", "/nope") == 404
        assert browser.session_id is not None
        # A second HEADERS frame (trailers) on the request the server already answered.
        browser.h3.send_headers(browser.session_id, [(b"x-more", b"1")], end_stream=True)
        browser.transmit()
        browser.status = asyncio.get_running_loop().create_future()
        assert await browser.connect_session(f"127.0.0.1:{web.port}") == 200
    assert loop_errors == []


def initial_datagrams() -> list[bytes]:
    """A client's first flight (Initial packets), as a spoofer sends it: never followed up."""
    quic = QuicConnection(configuration=client_configuration())
    quic.connect(("127.0.0.1", 4433), now=0.0)
    return [data for data, _ in quic.datagrams_to_send(now=0.0)]


async def test_a_spoofed_initial_holds_no_connection_slot(web: WebService) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", web.port))
        for data in initial_datagrams():
            sock.send(data)
        answer = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
    # A Retry: no state on the server until the source proves it gets our packets.
    header = pull_quic_header(Buffer(data=answer), host_cid_length=8)
    assert header.packet_type == QuicPacketType.RETRY
    assert len(answer) < 1200  # never more than the Initial that asked
    assert not web.endpoint.protocols and web.endpoint.stats.connections == 0
    # A real client (which answers the Retry) still gets in.
    async with web_client("127.0.0.1", web.port) as browser:
        assert await browser.connect_session(f"127.0.0.1:{web.port}") == 200


class FakeProtocol:
    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.peer_text = f"{peer[0]}:{peer[1]}"

    def arm_deadline(self, seconds: float) -> None:
        pass


@pytest.mark.parametrize(
    ("first", "second", "refused"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),  # one /64: one source
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("192.0.2.1", "192.0.2.2", False),  # IPv4: by address
    ],
)
async def test_the_per_address_cap_counts_an_ipv6_64_as_one_source(
    tmp_path: Path, first: str, second: str, refused: bool
) -> None:
    server = await make_server(tmp_path, max_web_connections_per_address=1)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        endpoint = web.endpoint
        a, b = FakeProtocol((first, 1)), FakeProtocol((second, 2))
        assert endpoint.connection_opened(a)  # type: ignore[arg-type]
        assert endpoint.connection_opened(b) is not refused  # type: ignore[arg-type]
        endpoint.connection_closed(a)  # type: ignore[arg-type]
        if refused:
            assert endpoint.connection_opened(b)  # type: ignore[arg-type]
        endpoint.connection_closed(b)  # type: ignore[arg-type]
        assert not endpoint.per_address and not endpoint.protocols
    finally:
        await server.close()


async def test_config_lists_a_valid_certificate_right_after_a_clock_jump(web: WebService) -> None:
    endpoint = web.endpoint
    certs = endpoint.certificates
    assert isinstance(certs, SelfCertificates)
    jumped = certs.current.not_after + 3600.0  # suspended past the certificate's end
    endpoint.wall_clock = lambda: jumped
    hashes = endpoint.certificate_hashes()
    assert hashes == [certs.current.sha256]
    assert certs.current.not_after > jumped
    assert endpoint.configuration.certificate is certs.current.certificate


async def test_the_page_caps_an_ipv6_64_as_one_source(tmp_path: Path) -> None:
    server = await make_server(tmp_path, max_page_connections_per_address=1)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        source = web.page.per_address.source
        assert source("2001:db8:1:2::1") == source("2001:db8:1:2:ffff::9")
        assert source("2001:db8:1:2::1") != source("2001:db8:1:3::1")
        assert source("192.0.2.1") != source("192.0.2.2")
    finally:
        await server.close()


async def test_a_client_that_never_reads_its_answer_does_not_keep_the_socket(
    tmp_path: Path,
) -> None:
    server = await make_server(tmp_path, page_send_timeout=0.3)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        big = bytes(8 << 20)  # more than the kernel buffers: the rest waits in the server
        web.page.files["app.js"] = big
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a closed window
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", web.port))
            await loop.sock_sendall(sock, get("/app.js", web.port))
            await until(lambda: web.page.served == 1)
            await asyncio.sleep(1.0)  # not reading, well past page_send_timeout
            received = 0
            with contextlib.suppress(ConnectionResetError):
                while data := await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 5):
                    received += len(data)
        # The server gave up on it (reset) instead of holding the socket and the rest of
        # the body for as long as the client likes.
        assert received < len(big)
        assert web.page.connections == 0
    finally:
        await server.close()


async def test_quic_flow_control_gives_no_more_credit_than_the_control_buffer(
    server: Server, web: WebService
) -> None:
    # aioquic buffers what a client sends out of order up to the credit it was given: the
    # server's memory per connection is about this, not aioquic's default 1 MiB.
    limit = server.settings.web_max_receive_buffer
    async with web_client("127.0.0.1", web.port) as browser:
        assert await browser.connect_session(f"127.0.0.1:{web.port}") == 200
        assert browser._quic._remote_max_data <= limit
        assert browser._quic._remote_max_stream_data_bidi_remote <= limit
        assert browser._quic._remote_max_stream_data_uni <= limit


async def test_idle_page_connections_make_room_for_a_newcomer(tmp_path: Path) -> None:
    server = await make_server(tmp_path, max_page_connections=2)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        idlers = []
        for count in (1, 2):  # slowloris: every place taken by a request never finished
            reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
            writer.write(b"GET / HTTP/1.1\r\n")
            idlers.append((reader, writer))
            await until(lambda count=count: web.page.connections == count)  # type: ignore[misc]
        # A newcomer takes the place of the one waiting longest, and gets the page.
        status, _, _ = await fetch(web.port, get("/", web.port))
        assert status == 200
        oldest, _ = idlers[0]
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(oldest.read(), 5) == b""
        for _, writer in idlers:
            writer.close()
    finally:
        await server.close()
