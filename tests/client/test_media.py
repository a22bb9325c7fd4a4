"""MediaShell: the session on the event loop, over a real UDP socket on loopback."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bangor.client.media import MediaShell, host_addresses
from bangor.errors import AudioError, ConnectError
from bangor.io.devices import open_sink, open_source
from bangor.media.session import MediaSession
from bangor.settings import ClientSettings
from bangor.wire.media import HopOpener, PacketType
from tests.media.net import KEYS, lone_session


class ListSink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass


class BrokenSink(ListSink):
    def write(self, frame: np.ndarray) -> None:
        raise AudioError("output device 'USB headset' failed: device unavailable")


class Server(asyncio.DatagramProtocol):
    """A UDP socket that keeps what it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


def session_for(shell: MediaShell, settings: ClientSettings) -> MediaSession:
    session = lone_session(settings)
    session.server_addr = shell.server_addr
    return session


async def test_ticks_keepalives_and_voice_reach_the_server_socket() -> None:
    loop = asyncio.get_running_loop()
    server = Server()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    sink = ListSink()
    ticked = asyncio.Event()
    shell = MediaShell(open_source("tone"), sink, 20)
    settings = ClientSettings(vad=False, relay_only=True)

    def output() -> None:
        if len(sink.frames) >= 10:
            ticked.set()

    shell.on_output = output
    try:
        await shell.connect("127.0.0.1", port)
        assert shell.server_addr == ("127.0.0.1", port) and shell.local_addr[1] > 0
        assert all(p == shell.local_addr[1] for _, p in shell.host_candidates())
        session = session_for(shell, settings)
        started = loop.time()
        shell.start(session, [])
        await asyncio.wait_for(ticked.wait(), 5)
        # Paced on absolute times: ten ticks take (at least) nine frame durations.
        assert loop.time() - started >= 9 * 0.02 - 0.005
        opener = HopOpener(KEYS.client_to_server, 7)
        types = []
        while len(types) < 5:
            header, _ = opener.open(await asyncio.wait_for(server.received.get(), 5))
            types.append(header.type)
        assert types[0] is PacketType.KEEPALIVE and PacketType.VOICE in types
    finally:
        shell.stop()
        transport.close()
    assert shell.session is session and session.stats(loop.time()).sent >= 10


async def test_the_sessions_timers_are_served_by_the_ticks() -> None:
    """No wakeup of their own: each timer runs in the tick after it is due, with that
    tick's ``now`` (keepalives every 50 ms here, so several in half a second)."""
    loop = asyncio.get_running_loop()
    server = Server()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    shell = MediaShell(open_source("silence"), open_sink("null"), 20)
    settings = ClientSettings(vad=False, relay_only=True, keepalive_interval=0.05)
    ticks: list[float] = []
    timers: list[float] = []
    enough = asyncio.Event()
    try:
        await shell.connect("127.0.0.1", transport.get_extra_info("sockname")[1])
        session = session_for(shell, settings)
        tick, handle_timer = session.tick, session.handle_timer

        def on_tick(pcm: np.ndarray | None, now: float) -> np.ndarray:
            ticks.append(now)
            return tick(pcm, now)

        def on_timer(now: float) -> None:
            timers.append(now)
            handle_timer(now)
            if len(timers) >= 6:
                enough.set()

        session.tick = on_tick  # type: ignore[method-assign]
        session.handle_timer = on_timer  # type: ignore[method-assign]
        shell.start(session, [])
        await asyncio.wait_for(enough.wait(), 5)
    finally:
        shell.stop()
        transport.close()
    assert set(timers) <= set(ticks)
    keepalives = 0
    opener = HopOpener(KEYS.client_to_server, 7)
    while not server.received.empty():
        header, _ = opener.open(server.received.get_nowait())
        keepalives += header.type is PacketType.KEEPALIVE
    assert keepalives >= 5


async def test_a_vanished_output_device_is_reported_once_and_the_call_goes_on() -> None:
    problems: list[str] = []
    enough = asyncio.Event()
    shell = MediaShell(open_source("tone"), BrokenSink(), 20, on_problem=problems.append)
    session = lone_session(ClientSettings(vad=False, relay_only=True))
    shell.on_output = lambda: session.sender.sent >= 10 and enough.set()  # type: ignore[func-returns-value]
    shell.start(session, [])
    try:
        await asyncio.wait_for(enough.wait(), 5)
    finally:
        shell.stop()
    assert len(problems) == 1 and "USB headset" in problems[0] and "goes on" in problems[0]


async def test_a_source_that_fails_or_ends_leaves_us_silent_and_listening() -> None:
    class Failing:
        def read(self) -> np.ndarray | None:
            raise AudioError("input device gone")

        def close(self) -> None:
            pass

    problems: list[str] = []
    recorded = ListSink()
    done = asyncio.Event()
    shell = MediaShell(
        Failing(), open_sink("null"), 20, recorder=recorded, on_problem=problems.append
    )
    shell.on_output = lambda: len(recorded.frames) >= 3 and done.set()  # type: ignore[func-returns-value]
    shell.start(lone_session(), [])
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        shell.stop()
    assert shell.source_done and problems == [
        "input device gone; you are silent from now on, the call goes on"
    ]


async def test_an_unreachable_server_is_a_connect_error() -> None:
    shell = MediaShell(open_source("silence"), open_sink("null"), 20)
    with pytest.raises(ConnectError, match="no UDP path"):
        await shell.connect("no-such-host.invalid", 7600)


def test_host_addresses_are_not_loopback() -> None:
    assert "127.0.0.1" not in host_addresses() and "::1" not in host_addresses(ipv6=True)


async def test_ticks_follow_the_capture_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each frame the card captures is one tick, at once, on the loop."""
    from tests.io.test_devices import FAKE_DEVICES, FakeSounddevice, numbered, use_fake

    fake = use_fake(monkeypatch, FakeSounddevice(FAKE_DEVICES, default=(4, 4)))
    source = open_source("default")
    sink = ListSink()
    shell = MediaShell(source, sink, 20)
    session = lone_session(ClientSettings(vad=False, relay_only=True))
    ticked: asyncio.Queue[int] = asyncio.Queue()
    shell.on_output = lambda: ticked.put_nowait(len(sink.frames))
    loop = asyncio.get_running_loop()
    shell.start(session, [])
    try:
        before = session.sender.sent
        # The card's thread delivers three frames; the loop ticks three times for them.
        await loop.run_in_executor(
            None, lambda: [fake.stream.capture(numbered(k).tobytes()) for k in range(3)]
        )
        while session.sender.sent < before + 3:
            await asyncio.wait_for(ticked.get(), 5)
    finally:
        shell.stop()
        source.close()
    assert source.stats.underruns == 0  # no tick came before its frame
    assert source.on_frame is None  # stop() let go of the card's thread
