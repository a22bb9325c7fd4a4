"""``serve --metrics``: the collector over a real in-process server, and its HTTP side."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bangor import __version__
from bangor.client.control import ControlClient
from bangor.errors import AuthError, BangorError, RefusedError
from bangor.server.app import Server
from bangor.server.cluster import Cluster
from bangor.server.metrics import MetricsServer, registry_for, start_metrics
from bangor.server.web import WebService
from bangor.wire.media import HopSealer, PacketType, derive_media_keys
from tests.server.test_app import login, make_server, until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def http(url_or_port: str | int, request: bytes) -> bytes:
    """Send one raw request to the metrics port; the whole answer."""
    port = url_or_port if isinstance(url_or_port, int) else int(url_or_port.split(":")[2][:-8])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def scrape(url: str) -> tuple[str, Samples]:
    answer = await http(url, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"Content-Type: text/plain; version=" in head
    text = body.decode()
    return text, parsed(text)


def parsed(text: str) -> Samples:
    """Every sample of a scrape, parsed with prometheus_client's own parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    server = await make_server(tmp_path, join_burst=3, user_join_burst=3, join_rate=0.01)
    url = await start_metrics(server, "127.0.0.1", 0)
    yield server, url
    await server.close()


async def forward_one_voice(server: Server, alice: ControlClient, bob: ControlClient) -> None:
    """Media over real UDP: bob's keepalive teaches the relay his address, then alice
    speaks once, and the relay forwards it to bob."""
    sockets = []
    for client in (alice, bob):
        welcome = client.welcome
        assert welcome is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        sealer = HopSealer(
            derive_media_keys(welcome.media_secret).client_to_server, welcome.session_id
        )
        kind = PacketType.KEEPALIVE if client is bob else PacketType.VOICE
        packet = sealer.seal(kind, b"x" * 40)
        if client is bob:
            sock.sendto(packet, server.address)
            await until(lambda: server.relay.stats.keepalive_answers == 1)
        else:
            voice = packet
    sockets[0].sendto(voice, server.address)
    await until(lambda: server.relay.stats.forwarded == 1)
    for sock in sockets:
        sock.close()


async def test_a_server_without_metrics_does_not_time_its_forwarding(tmp_path: Path) -> None:
    server = await make_server(tmp_path)
    try:
        alice, bob = await login(server, "alice"), await login(server, "bob")
        room = await alice.create_room("friends")
        await alice.join_room(room.room_id)
        await bob.join_room(room.room_id)
        await forward_one_voice(server, alice, bob)
        assert not server.counts.timing and server.counts.forward_times.count == 0
        for client in (alice, bob):
            await client.leave()
    finally:
        await server.close()


async def test_a_call_shows_in_the_gauges_and_counters(served: tuple[Server, str]) -> None:
    server, url = served
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    _, before = await scrape(url)
    assert value(before, "bangor_sessions") == 0
    assert value(before, "bangor_relay_forward_seconds_count") == 0
    with pytest.raises(AuthError):
        await login(server, "nobody")
    alice, bob = await login(server, "alice"), await login(server, "bob")
    room = await alice.create_room("friends")
    await alice.join_room(room.room_id)
    await bob.join_room(room.room_id)
    await forward_one_voice(server, alice, bob)
    text, samples = await scrape(url)
    assert value(samples, "bangor_info", version=__version__) == 1
    assert value(samples, "bangor_sessions") == 2
    assert value(samples, "bangor_rooms") == 1
    assert value(samples, "bangor_room_members") == 2
    assert value(samples, "bangor_room_members_relay_use", use="all") == 1  # alice spoke
    assert value(samples, "bangor_room_members_relay_use", use="none") == 1  # bob did not
    assert value(samples, "bangor_logins_total") == 2
    assert value(samples, "bangor_login_failures_total", reason="bad_credentials") == 1
    assert value(samples, "bangor_login_failures_total", reason="busy") == 0  # always there
    assert value(samples, "bangor_handshakes_started_total") == 3
    assert value(samples, "bangor_handshakes_completed_total") == 3
    assert value(samples, "bangor_room_requests_total", request="create") == 1
    assert value(samples, "bangor_room_requests_total", request="join") == 2
    for request in ("kick", "unban", "list_bans"):  # every room request, before its first
        assert value(samples, "bangor_room_requests_total", request=request) == 0
    assert value(samples, "bangor_relay_forwarded_total") == 1
    assert value(samples, "bangor_media_datagrams_received_total", kind="voice") == 1
    assert value(samples, "bangor_media_datagrams_received_total", kind="keepalive") == 1
    assert value(samples, "bangor_media_datagrams_sent_total", kind="keepalive_ack") == 1
    assert value(samples, "bangor_media_sent_bytes_total", kind="voice") > 40
    assert value(samples, "bangor_relay_forward_seconds_count") == 1
    assert value(samples, "bangor_relay_forward_seconds_bucket", le="+Inf") == 1
    assert 0 < value(samples, "bangor_relay_forward_seconds_sum") < 1
    assert value(samples, "bangor_web_sessions") == 0
    assert not any(name.startswith("bangor_cluster") for name, _ in samples)
    assert "process_resident_memory_bytes" in text  # the process collector (Linux)
    for secret in ("alice", "bob", "friends", room.room_id, "nobody", "127.0.0.1"):
        assert secret not in text
    for client in (alice, bob):
        await client.leave()


async def test_throttles_and_refusals_are_counted_by_kind(served: tuple[Server, str]) -> None:
    server, url = served
    alice = await login(server, "alice")
    room = await alice.create_room("r")
    for _ in range(3):
        await alice.join_room(room.room_id)
    with pytest.raises(RefusedError):
        await alice.join_room(room.room_id)  # over the burst of 3
    _, samples = await scrape(url)
    assert value(samples, "bangor_throttled_total", kind="join") == 1
    assert value(samples, "bangor_throttled_total", kind="say") == 0
    assert value(samples, "bangor_throttle_closed_total", kind="join") == 0
    assert value(samples, "bangor_room_requests_refused_total", request="join") == 1
    assert value(samples, "bangor_room_requests_total", request="join") == 4
    await alice.leave()


async def test_admission_closures_and_handshake_failures_are_counted(
    served: tuple[Server, str],
) -> None:
    server, url = served
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"\x00\x05hello")  # not a Noise message
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await until(lambda: server.counts.handshakes_failed == 1)
    _, samples = await scrape(url)
    assert value(samples, "bangor_handshakes_failed_total") == 1
    assert value(samples, "bangor_admission_closed_total", reason="protocol_error") == 1
    assert value(samples, "bangor_admission_closed_total", reason="address_full") == 0


async def test_a_cluster_node_reports_its_rooms_and_load(served: tuple[Server, str]) -> None:
    server, url = served
    db = server.store.db
    server.cluster = Cluster(db, "10.0.0.1:7600", server.settings, db)
    server.cluster.held.update({"r1": 1, "r2": 4})
    try:
        alice = await login(server, "alice")
        _, samples = await scrape(url)
        await alice.leave()
    finally:
        server.cluster = None  # nothing to drain: it never took part
    assert value(samples, "bangor_cluster_rooms") == 2
    assert value(samples, "bangor_cluster_load") == 1
    assert value(samples, "bangor_cluster_draining") == 0
    assert value(samples, "bangor_cluster_heartbeat_failures_total") == 0


async def test_web_sessions_and_counters_with_web(server: Server, web: WebService) -> None:
    url = await start_metrics(server, "127.0.0.1", 0, web.endpoint)
    _, samples = await scrape(url)
    assert value(samples, "bangor_web_sessions") == 0
    assert value(samples, "bangor_web_connections_total") == 0
    assert value(samples, "bangor_web_datagrams_dropped_total", reason="queue_full") == 0


@pytest.mark.parametrize(
    ("request_bytes", "status", "has_body"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"404", True),
        (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", b"200", True),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", b"200", False),
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405", False),
        (b"GET /metrics\r\n\r\n", b"400", False),
    ],
)
async def test_only_get_of_metrics_is_answered(
    served: tuple[Server, str], request_bytes: bytes, status: bytes, has_body: bool
) -> None:
    _, url = served
    head, _, body = (await http(url, request_bytes)).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == status
    assert bool(body) is has_body
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert (length > 0) is (status != b"400" and status != b"405")  # HEAD: GET's length


async def test_a_huge_request_head_gets_no_answer(served: tuple[Server, str]) -> None:
    server, url = served
    big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * server.settings.max_metrics_request + b"\r\n\r\n"
    assert await http(url, big) == b""


async def test_when_full_the_oldest_connection_makes_room(tmp_path: Path) -> None:
    server = await make_server(tmp_path, max_metrics_connections=1)
    metrics = MetricsServer(registry_for(server), server.settings)
    tcp = await metrics.start("127.0.0.1", 0)
    port = int(tcp.sockets[0].getsockname()[1])
    try:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda: len(metrics.tasks) == 1)
        answer = await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # closed for the newcomer
        idle_writer.close()
        assert metrics.scrapes == 1
    finally:
        metrics.close()
        await server.close()


async def test_a_taken_port_is_a_clear_error(served: tuple[Server, str]) -> None:
    server, url = served
    port = int(url.split(":")[2][:-8])
    with pytest.raises(BangorError, match=r"cannot listen on 127\.0\.0\.1:\d+ for --metrics"):
        await start_metrics(server, "127.0.0.1", port)
