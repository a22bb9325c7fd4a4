"""The WebTransport shell, in process: a Python WebTransport client (tests/webclient.py)
stands in for the browser, next to ordinary TCP/UDP clients."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3Connection
from cryptography.hazmat.primitives import serialization

from bangor.client.control import ControlClient
from bangor.errors import ConnectError
from bangor.server.app import Server
from bangor.server.web import (
    SETTING_ENABLE_WEBTRANSPORT,
    SETTING_WT_MAX_SESSIONS,
    WebOptions,
    WebService,
    start_web,
)
from bangor.wire import control as msg
from bangor.wire.media import HopOpener, HopSealer, PacketType, derive_media_keys
from bangor.wire.voice import unpack_relayed
from tests.server.test_app import PASSWORD, make_server
from tests.webclient import WebClient, control_client, web_client


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until the in-process server reaches a state (bounded)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


class Hop:
    """A member's side of the hop crypto, from its welcome."""

    def __init__(self, welcome: msg.Welcome) -> None:
        keys = derive_media_keys(welcome.media_secret)
        self.session_id = welcome.session_id
        self.sealer = HopSealer(keys.client_to_server, welcome.session_id)
        self.opener = HopOpener(keys.server_to_client, welcome.session_id)

    def voice(self, payload: bytes) -> bytes:
        return self.sealer.seal(PacketType.VOICE, payload)

    def keepalive(self) -> bytes:
        return self.sealer.seal(PacketType.KEEPALIVE, b"12345678")


class UdpMember(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    async def next(self) -> bytes:
        return await asyncio.wait_for(self.received.get(), 5)


async def udp_member(server: Server) -> tuple[asyncio.DatagramTransport, UdpMember]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(UdpMember, remote_addr=server.address)
    return transport, protocol


async def tcp_login(server: Server, user: str) -> ControlClient:
    client = await ControlClient.connect(*server.address)
    client.start()
    await client.login(user, PASSWORD, user)
    return client


async def web_login(client: WebClient, web: WebService, user: str) -> ControlClient:
    assert await client.connect_session(f"127.0.0.1:{web.port}") == 200
    control = await control_client(client)
    await control.login(user, PASSWORD, user)
    return control


async def bob_joins_over_tcp(server: Server, alice: ControlClient, room_name: str) -> ControlClient:
    """``alice`` (logged in) creates a room and joins it; bob logs in over TCP and joins too."""
    room = await alice.create_room(room_name)
    await alice.join_room(room.room_id)
    bob = await tcp_login(server, "bob")
    await bob.join_room(room.room_id)
    return bob


async def test_a_web_member_and_a_udp_member_talk_both_ways(
    server: Server, web: WebService
) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        alice = await web_login(browser, web, "alice")
        assert len(server.connections) == 1
        bob = await bob_joins_over_tcp(server, alice, "mixed")
        assert alice.welcome is not None and bob.welcome is not None
        alice_hop, bob_hop = Hop(alice.welcome), Hop(bob.welcome)

        # Each member's first keepalive teaches the relay where it is; the answer comes
        # back the way the keepalive went.
        browser.send_datagram(alice_hop.keepalive())
        header, _ = alice_hop.opener.open(await browser.next_datagram())
        assert header.type is PacketType.KEEPALIVE_ACK
        udp, bob_udp = await udp_member(server)
        udp.sendto(bob_hop.keepalive())
        header, _ = bob_hop.opener.open(await bob_udp.next())
        assert header.type is PacketType.KEEPALIVE_ACK

        browser.send_datagram(alice_hop.voice(b"from the browser"))
        header, payload = bob_hop.opener.open(await bob_udp.next())
        assert header.type is PacketType.VOICE
        assert unpack_relayed(payload) == (alice_hop.session_id, b"from the browser")

        udp.sendto(bob_hop.voice(b"from the terminal"))
        header, payload = alice_hop.opener.open(await browser.next_datagram())
        assert unpack_relayed(payload) == (bob_hop.session_id, b"from the terminal")

        # Chat (sealed end to end by members; opaque here) crosses over the control stream.
        joined = await asyncio.wait_for(alice.events.get(), 5)
        assert isinstance(joined, msg.MemberJoined) and joined.member.user == "bob"
        bob.send_chat(b"sealed chat")
        chat = await asyncio.wait_for(alice.events.get(), 5)
        assert isinstance(chat, msg.Chat) and chat.data == b"sealed chat"
        udp.close()
        await bob.leave()
        await alice.leave()
    await until(lambda: not server.connections)


async def test_the_server_advertises_webtransport_draft02_and_max_sessions(
    web: WebService,
) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        assert await browser.connect_session(f"127.0.0.1:{web.port}") == 200
        settings = browser.h3.received_settings
        assert settings is not None
        assert settings[SETTING_ENABLE_WEBTRANSPORT] == 1
        assert settings[SETTING_WT_MAX_SESSIONS] == 1
        assert browser.max_datagram_frame_size == 65536


@pytest.mark.parametrize("path", ["/", "/bangor/2", "/bangor/1/x", "/bangor/1?x"])
async def test_a_connect_to_another_path_is_not_found(web: WebService, path: str) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        assert await browser.connect_session(f"127.0.0.1:{web.port}", path) == 404
    assert web.endpoint.stats.not_found == 1
    assert web.endpoint.stats.sessions == 0


async def test_a_second_session_on_one_connection_is_refused(web: WebService) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        assert await browser.connect_session(f"127.0.0.1:{web.port}") == 200
        first = browser.session_id
        browser.status = asyncio.get_running_loop().create_future()
        assert await browser.connect_session(f"127.0.0.1:{web.port}") == 429
        assert first != browser.session_id
    assert web.endpoint.stats.sessions == 1


async def test_a_second_stream_closes_the_session(server: Server, web: WebService) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        alice = await web_login(browser, web, "alice")
        assert len(server.connections) == 1
        _reader, writer = browser.open_stream()
        writer.write(b"\x00\x05hello")
        await asyncio.wait_for(browser.session_ended.wait(), 5)
        closed = await asyncio.wait_for(alice.events.get(), 5)
        assert isinstance(closed, ConnectError)
        await until(lambda: not server.connections)
        assert web.endpoint.stats.closed_bad_stream == 1
        await asyncio.wait_for(browser.closed.wait(), 10)  # and then the connection


async def test_closing_the_session_drops_the_server_session(
    server: Server, web: WebService
) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        alice = await web_login(browser, web, "alice")
        bob = await bob_joins_over_tcp(server, alice, "r")
        browser.end_session()
        left = await asyncio.wait_for(bob.events.get(), 5)
        assert isinstance(left, msg.MemberLeft) and alice.welcome is not None
        assert left.session_id == alice.welcome.session_id
        await until(lambda: len(server.connections) == 1)
        assert not web.endpoint.sessions
        await bob.leave()


async def test_closing_the_quic_connection_drops_the_server_session(
    server: Server, web: WebService
) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        await web_login(browser, web, "alice")
        assert len(server.connections) == 1
        browser.close()
    await until(lambda: not server.connections and not web.endpoint.protocols)


async def test_server_shutdown_says_why_before_the_connection_closes(tmp_path: Path) -> None:
    """The goodbye on the control stream reaches the client before any QUIC close (which
    would overtake it: the page then showed "Connection lost"); the client, like the
    page, closes once it has read it, and the server's close waits for that."""
    server = await make_server(tmp_path)
    web = await start_web(server, WebOptions("127.0.0.1", 0))
    async with web_client("127.0.0.1", web.port) as browser:
        alice = await web_login(browser, web, "alice")
        closing = asyncio.create_task(server.close())
        closed = await asyncio.wait_for(alice.events.get(), 5)
        assert isinstance(closed, ConnectError) and "shutting down" in str(closed)
        assert not browser.terminated  # the server has not closed the connection under us
        assert not closing.done()
        browser.close()
        await asyncio.wait_for(closing, 5)
        assert not web.endpoint.protocols


async def test_server_shutdown_waits_for_a_silent_client_only_the_grace(tmp_path: Path) -> None:
    server = await make_server(tmp_path, web_close_grace=0.2)
    web = await start_web(server, WebOptions("127.0.0.1", 0))
    async with web_client("127.0.0.1", web.port) as browser:
        await web_login(browser, web, "alice")
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(server.close(), 5)
        assert loop.time() - start >= 0.2  # it waited for the client, then not for ever
        await asyncio.wait_for(browser.closed.wait(), 10)


async def test_garbage_datagrams_are_dropped_and_counted(server: Server, web: WebService) -> None:
    stats = server.relay.stats
    async with web_client("127.0.0.1", web.port) as browser:
        alice = await web_login(browser, web, "alice")
        assert alice.welcome is not None
        hop = Hop(alice.welcome)
        browser.send_datagram(b"")
        browser.send_datagram(b"garbage, not a media packet")
        forged = bytearray(hop.keepalive())
        forged[-1] ^= 1  # the tag no longer verifies
        browser.send_datagram(bytes(forged))
        other = bytearray(hop.keepalive())
        other[2:6] = (hop.session_id ^ 1).to_bytes(4, "big")  # no such session
        browser.send_datagram(bytes(other))
        await until(lambda: stats.received == 4)
        assert (stats.dropped_malformed, stats.dropped_auth, stats.dropped_unknown) == (2, 1, 1)
        # Nothing came back for any of them, and the session still works.
        assert browser.datagrams.empty()
        browser.send_datagram(hop.keepalive())
        header, _ = hop.opener.open(await browser.next_datagram())
        assert header.type is PacketType.KEEPALIVE_ACK
        # A datagram for another stream of the connection goes nowhere.
        assert browser.session_id is not None
        browser.h3.send_datagram(browser.session_id + 4, hop.keepalive())
        browser.transmit()
        await until(lambda: web.endpoint.stats.dropped_datagrams == 1)
        await alice.leave()


async def test_a_packet_too_big_for_the_web_member_is_dropped_and_counted(
    server: Server, web: WebService
) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        alice = await web_login(browser, web, "alice")
        bob = await bob_joins_over_tcp(server, alice, "r")
        assert alice.welcome is not None and bob.welcome is not None
        alice_hop, bob_hop = Hop(alice.welcome), Hop(bob.welcome)
        browser.send_datagram(alice_hop.keepalive())
        await browser.next_datagram()
        udp, bob_udp = await udp_member(server)
        udp.sendto(bob_hop.keepalive())
        await bob_udp.next()
        limit = next(iter(web.endpoint.sessions)).max_datagram
        assert limit == server.settings.web_max_datagram == 1200
        overhead = 14 + 16 + 4  # header, tag, the sender's session id
        udp.sendto(bob_hop.voice(b"x" * (limit - overhead + 1)))  # one byte too many
        udp.sendto(bob_hop.voice(b"y" * (limit - overhead)))  # just fits
        _, payload = alice_hop.opener.open(await browser.next_datagram())
        assert unpack_relayed(payload) == (bob_hop.session_id, b"y" * (limit - overhead))
        assert server.relay.stats.dropped_too_big == 1
        # A UDP member takes the bigger packet.
        browser.send_datagram(alice_hop.voice(b"z" * (limit - overhead + 1)))
        _, payload = bob_hop.opener.open(await bob_udp.next())
        assert len(unpack_relayed(payload)[1]) == limit - overhead + 1
        udp.close()
        await bob.leave()
        await alice.leave()


async def test_the_presented_certificate_is_the_one_config_lists(web: WebService) -> None:
    async with web_client("127.0.0.1", web.port) as browser:
        assert await browser.connect_session(f"127.0.0.1:{web.port}") == 200
        cert = browser._quic.tls._peer_certificate
        assert cert is not None
        der = cert.public_bytes(serialization.Encoding.DER)
        assert web.endpoint.certificate_hashes() == [hashlib.sha256(der).hexdigest()]


async def test_web_sessions_count_against_admission_like_tcp(tmp_path: Path) -> None:
    server = await make_server(tmp_path, max_unauthenticated=1)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        async with web_client("127.0.0.1", web.port) as idle:
            assert await idle.connect_session(f"127.0.0.1:{web.port}") == 200
            await until(lambda: server.unauthenticated == 1)  # a session that says nothing
            alice = await tcp_login(server, "alice")  # the newcomer gets in...
            await asyncio.wait_for(idle.closed.wait(), 10)  # ...and the idler is closed
            await alice.leave()
    finally:
        await server.close()


async def test_connections_over_the_per_address_cap_are_refused(tmp_path: Path) -> None:
    server = await make_server(tmp_path, max_web_connections_per_address=1)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        async with web_client("127.0.0.1", web.port) as first:
            assert await first.connect_session(f"127.0.0.1:{web.port}") == 200
            with pytest.raises(ConnectionError):
                async with web_client("127.0.0.1", web.port):
                    pass
            assert web.endpoint.stats.refused_connections == 1
    finally:
        await server.close()


async def test_when_full_the_oldest_connection_without_a_session_makes_room(
    tmp_path: Path,
) -> None:
    server = await make_server(tmp_path, max_web_connections=2)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        async with web_client("127.0.0.1", web.port) as member:
            assert await member.connect_session(f"127.0.0.1:{web.port}") == 200
            # Full with the idler (no session). A newcomer gets in: the idler makes
            # room, the member with a session stays.
            async with (
                web_client("127.0.0.1", web.port) as idler,
                web_client("127.0.0.1", web.port) as newcomer,
            ):
                await asyncio.wait_for(idler.closed.wait(), 5)
                assert not member.terminated and not newcomer.terminated
                assert web.endpoint.stats.evicted_connections == 1
                assert len(web.endpoint.protocols) == 2
                assert await newcomer.connect_session(f"127.0.0.1:{web.port}") == 200
                # Only sessions now: nobody makes room, the next is refused.
                with pytest.raises(ConnectionError):
                    async with web_client("127.0.0.1", web.port):
                        pass
                assert web.endpoint.stats.refused_connections == 1
    finally:
        await server.close()


def test_the_worked_bytes_of_protocol_section_11() -> None:
    class Quic:
        def send_datagram_frame(self, data: bytes) -> None:
            self.sent = data

    packet = bytes.fromhex("c101b2175c3200000000000000 05".replace(" ", ""))
    h3 = H3Connection.__new__(H3Connection)  # only send_datagram, no connection
    h3._quic = Quic()  # type: ignore[assignment]
    h3.send_datagram(0, packet)
    assert h3._quic.sent == b"\x00" + packet  # type: ignore[attr-defined]
    h3.send_datagram(8, packet)
    assert h3._quic.sent == b"\x02" + packet  # type: ignore[attr-defined]
    # The control stream's first bytes: the WT_STREAM signal and the session id as varints.
    assert encode_uint_var(0x41) + encode_uint_var(0) == bytes.fromhex("404100")
    assert encode_uint_var(SETTING_ENABLE_WEBTRANSPORT) == bytes.fromhex("ab603742")


async def test_a_control_stream_overrun_closes_the_session(tmp_path: Path) -> None:
    server = await make_server(tmp_path, web_max_receive_buffer=100)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        async with web_client("127.0.0.1", web.port) as browser:
            assert await browser.connect_session(f"127.0.0.1:{web.port}") == 200
            _reader, writer = browser.open_stream()
            writer.write(b"\x03\xe8" + bytes(1000))  # more than the session may hold unread
            await asyncio.wait_for(browser.closed.wait(), 10)
        assert web.endpoint.stats.closed_overrun == 1
        await until(lambda: server.unauthenticated == 0)
    finally:
        await server.close()


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_localhost_listens_on_both_loopback_addresses(server: Server, address: str) -> None:
    # Chromium resolves localhost to ::1 and 127.0.0.1 itself and tries WebTransport on
    # ::1 alone.
    if address == "::1":
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
                probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
    web = await start_web(server, WebOptions("localhost", 0))
    assert web.url == f"http://localhost:{web.port}/"
    async with web_client(address, web.port, server_name="localhost") as browser:
        assert await browser.connect_session(f"localhost:{web.port}") == 200
