"""`bangor serve --metrics`: a real server scraped during and after a real call."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ServerProcess, free_port, start_server, stop_server
from tests.server.test_metrics import Samples, parsed, value

pytestmark = pytest.mark.integration

SCRAPE_TIMEOUT = 10.0


def scrape(url: str) -> tuple[str, Samples]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = answer.read().decode()
    return text, parsed(text)


def scrape_until(url: str, name: str, at_least: float, **labels: str) -> tuple[str, Samples]:
    """Scrape until ``name`` reaches ``at_least`` (the server tells no other way)."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while True:
        text, samples = scrape(url)
        if value(samples, name, **labels) >= at_least:
            return text, samples
        assert time.monotonic() < deadline, f"{name} stayed at {value(samples, name, **labels)}"
        time.sleep(0.1)


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    port, server_port = free_port(), free_port()
    while server_port == port:
        server_port = free_port()
    srv = start_server(tmp_path, port=server_port, extra=["--metrics", str(port)])
    line = srv.stderr.wait_for(lambda line: "metrics at" in line)
    url = f"http://127.0.0.1:{port}/metrics"
    assert line.endswith(url)  # PORT alone: on loopback
    yield srv, url
    stop_server(srv)
    assert not any("Traceback" in line for line in srv.stderr.rest(timeout=5))


def test_a_call_is_counted_and_names_nobody(metered: tuple[ServerProcess, str]) -> None:
    server, url = metered
    server.add_user("alice")
    server.add_user("bob")
    invite = server.create_room("alice", "secret-plans")
    call = ("--output", "null", "--relay-only")  # on loopback a direct path would form
    bob = server.join(invite, "bob", "--input", "silence", *call, "--duration", "6")
    bob.event("joined")
    alice = server.join(
        invite, "alice", "--input", "tone", "--vad", "off", *call, "--duration", "3"
    )
    bob.event("member_joined")
    # During the call: alice's voice goes through the relay to bob.
    _, first = scrape_until(url, "bangor_relay_forwarded_total", 10)
    assert value(first, "bangor_sessions") == 2
    assert value(first, "bangor_rooms") == 1
    assert value(first, "bangor_room_members") == 2
    assert value(first, "bangor_room_members_relay_use", use="all") == 1  # alice talks
    assert value(first, "bangor_room_members_relay_use", use="none") == 1  # bob is silent
    assert value(first, "bangor_logins_total") == 3  # room create, then the two joins
    assert value(first, "bangor_room_requests_total", request="join") == 2
    _, second = scrape_until(
        url, "bangor_relay_forwarded_total", value(first, "bangor_relay_forwarded_total") + 10
    )
    for name, kind in (
        ("bangor_media_datagrams_received_total", "voice"),
        ("bangor_media_received_bytes_total", "voice"),
        ("bangor_media_datagrams_sent_total", "voice"),
    ):
        assert value(second, name, kind=kind) > value(first, name, kind=kind)
    assert value(second, "bangor_relay_forward_seconds_count") > value(
        first, "bangor_relay_forward_seconds_count"
    )
    assert alice.wait() == 0, alice.stderr.seen
    assert bob.wait() == 0, bob.stderr.seen
    # After: nobody left, the counters kept.
    text, after = scrape_until(url, "bangor_handshakes_started_total", 3)
    assert value(after, "bangor_sessions") == 0
    assert value(after, "bangor_rooms") == 0
    assert value(after, "bangor_room_members") == 0
    assert value(after, "bangor_logins_total") == 3
    assert value(after, "bangor_relay_forwarded_total") >= value(
        second, "bangor_relay_forwarded_total"
    )
    assert value(after, "bangor_room_requests_total", request="create") == 1
    forwarded_per_datagram = value(after, "bangor_relay_forward_seconds_sum") / value(
        after, "bangor_relay_forward_seconds_count"
    )
    assert 0 < forwarded_per_datagram < 0.05
    for private in ("alice", "bob", "secret-plans", "127.0.0.1"):
        assert private not in text


def imported_modules(server: ServerProcess) -> set[str]:
    """``python -X importtime`` writes every import to stderr ("import time: self |
    cumulative | module"): the modules the server imported, once it stopped."""
    stop_server(server)
    lines = server.stderr.rest(timeout=5)
    return {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}


@pytest.mark.parametrize("metrics", [False, True])
def test_prometheus_client_is_imported_only_with_metrics(tmp_path: Path, metrics: bool) -> None:
    extra = ["--metrics", str(free_port())] if metrics else []
    command = (sys.executable, "-X", "importtime", "-m", "bangor")
    server = start_server(tmp_path, command=command, extra=extra)
    imports = imported_modules(server)
    assert "bangor.server.app" in imports  # the import log is there at all
    assert ("prometheus_client" in imports) is metrics
    assert ("bangor.server.metrics" in imports) is metrics
