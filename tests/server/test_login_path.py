"""The server's login path, in process, driven by the real client: what is checked
before a password is hashed, BUSY and THROTTLED answers with their retry hint, the
client's retries, and what failed logins leave in the log."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bangor.client.app import Login, connect_and_login
from bangor.client.control import ControlClient
from bangor.errors import (
    AuthError,
    BusyError,
    CloseCode,
    ConnectError,
    DroppedError,
    RefusedError,
    ThrottledError,
)
from bangor.server.app import Server, open_server
from bangor.server.store import database_url
from bangor.settings import ClientSettings, ServerSettings
from tests.server.spies import VerifySpy, until

PASSWORD = "pw-for-tests"


async def start(tmp_path: Path, settings: ServerSettings) -> Server:
    server = await open_server(tmp_path / "data", database_url(tmp_path / "data", None), settings)
    if not settings.open:
        for name in ("alice", "bob"):
            await server.store.add_user(name, PASSWORD)
    await server.start("127.0.0.1", 0)
    return server


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[MakeServer]:
    servers: list[Server] = []

    async def make_server(**settings: Any) -> Server:
        server = await start(tmp_path / str(len(servers)), ServerSettings(**settings))
        servers.append(server)
        return server

    yield make_server
    for server in servers:
        await server.close()


async def login(server: Server, user: str, password: str = PASSWORD) -> ControlClient:
    client = await ControlClient.connect(*server.address)
    client.start()
    try:
        await asyncio.wait_for(client.login(user, password, user), 5)
    except BaseException:
        await client.close()
        raise
    return client


async def test_sessions_per_user_capped_before_the_hash(
    make: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make()  # max_sessions_per_user = 8
    sessions = [await login(server, "alice") for _ in range(8)]
    verify = VerifySpy(monkeypatch)
    with pytest.raises(RefusedError) as refused:
        await login(server, "alice")
    assert refused.value.code == CloseCode.LIMIT
    assert str(refused.value) == "too many sessions for this user (the limit is 8)"
    assert verify.calls == 0  # refused without hashing
    bob = await login(server, "bob")  # other accounts are not affected
    await sessions.pop().leave()
    await until(lambda: len(server.connections) == 8)
    sessions.append(await login(server, "alice"))
    for client in (*sessions, bob):
        await client.leave()


async def test_second_login_for_a_name_in_flight_is_busy_at_once(
    make: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make()
    with VerifySpy(monkeypatch, held=True) as verify:
        first = asyncio.create_task(login(server, "alice", "a guess"))
        await until(lambda: verify.calls == 1)
        with pytest.raises(BusyError) as busy:  # nothing counted: the client tries again
            await login(server, "alice")
        assert str(busy.value).startswith(
            "another login for this name is being checked; try again in "
        )
        assert busy.value.retry_after >= 0.5
        assert verify.calls == 1
        bob = asyncio.create_task(login(server, "bob"))  # other names go on
        await until(lambda: verify.calls == 2)
        verify.release()
        await (await bob).leave()
        with pytest.raises(AuthError):
            await first
    alice = await login(server, "alice")  # the first is over: the name is free again
    await alice.leave()


async def test_one_address_holds_few_places_in_the_hashing_queue(
    make: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make()  # hash_per_source = 4
    with VerifySpy(monkeypatch, held=True) as verify:
        names = [f"guess{i}" for i in range(4)]
        held = [asyncio.create_task(login(server, name, "a guess")) for name in names]
        await until(lambda: server.store.hashes.admission.in_use == 4)
        with pytest.raises(BusyError) as busy:
            await login(server, "alice")
        assert str(busy.value).startswith("too many logins from your address at once; try again")
        assert 0.5 <= busy.value.retry_after <= 10
        verify.release()
        for task in held:
            with pytest.raises(AuthError):
                await task
    assert verify.calls == 4  # the refused login was never hashed
    alice = await login(server, "alice")
    await alice.leave()


async def one_place_taken(
    make: MakeServer, monkeypatch: pytest.MonkeyPatch, **settings: int
) -> tuple[Server, VerifySpy, asyncio.Task[ControlClient]]:
    """A server whose hashing pool is held by alice's login until the spy is released."""
    server = await make(hash_workers=1, hash_per_source=5, **settings)
    verify = VerifySpy(monkeypatch, held=True)
    alice = asyncio.create_task(login(server, "alice"))
    await until(lambda: verify.calls == 1)
    return server, verify, alice


async def test_busy_when_the_hashing_pool_is_full(
    make: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, verify, alice = await one_place_taken(make, monkeypatch, hash_queue=1)
    with verify:
        bob = asyncio.create_task(login(server, "bob"))  # waits for the thread
        await until(lambda: server.store.hashes.admission.in_use == 2)
        with pytest.raises(BusyError) as busy:
            await login(server, "carol", "a guess")
        assert str(busy.value).startswith("server is busy checking logins; try again in ")
        assert 0.5 <= busy.value.retry_after <= 10
        assert verify.calls == 1  # one running, one waiting, the third refused unhashed
        verify.release()
        for task in (alice, bob):
            await (await task).leave()
    # BUSY counted nothing: carol's name is not any closer to a lock.
    assert "carol" not in server.store._unknown


async def test_client_retries_busy_after_the_hint(
    make: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, verify, alice = await one_place_taken(make, monkeypatch, hash_queue=0)
    with verify:
        bob = asyncio.create_task(connect_and_login(*server.address, Login("bob", PASSWORD)))
        # bob is answered BUSY (no hash) and waits for the hint; then the pool frees up.
        await until(lambda: server.store.hashes.admission.refused == 1)
        assert not bob.done() and verify.calls == 1
        verify.release()
        client, welcome = await asyncio.wait_for(bob, 10)
        assert welcome.user == "bob"
        for done in (client, await alice):
            await done.leave()


async def test_client_gives_up_on_busy_after_its_budget(
    make: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, verify, alice = await one_place_taken(make, monkeypatch, hash_queue=0)
    with verify:
        settings = ClientSettings(login_retry_budget=0.3)
        with pytest.raises(ConnectError, match=r"could not check our login; gave up after"):
            await connect_and_login(*server.address, Login("bob", PASSWORD), settings)
        verify.release()
        await (await alice).leave()


async def test_open_mode_caps_new_names_per_address(make: MakeServer) -> None:
    server = await make(open=True)  # open_max_new_names_per_address = 20
    clients = [await login(server, f"name{i}", "") for i in range(20)]
    with pytest.raises(RefusedError) as refused:
        await login(server, "one-too-many", "")
    assert refused.value.code == CloseCode.LIMIT
    assert str(refused.value) == "too many new names from your address (the limit is 20)"
    clients.append(await login(server, "name0", ""))  # a name made before costs nothing
    for client in clients:
        await client.leave()


async def test_open_mode_caps_rooms(make: MakeServer) -> None:
    server = await make(open=True, open_max_rooms=1)
    one, two = await login(server, "one", ""), await login(server, "two", "")
    await one.create_room("first")
    with pytest.raises(RefusedError) as full:
        await two.create_room("second")
    assert full.value.code == CloseCode.LIMIT  # a refusal, the session goes on
    assert str(full.value) == "this server has too many rooms (the limit is 1)"
    for client in (one, two):
        await client.leave()


async def test_failed_login_log_shows_no_typed_password(
    make: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make()
    caplog.set_level(logging.DEBUG, logger="bangor")
    typed = "correct horse battery staple"  # a password typed into the name field
    # Not a user name at all (refused at once), and one that could be (checked in vain).
    for name in (typed, "Tr0ub4dor.3"):
        with pytest.raises(AuthError):
            await login(server, name, "whatever")
    with pytest.raises(AuthError):
        await login(server, "alice", "wrong")
    text = caplog.text
    assert "horse" not in text and "Tr0ub4dor" not in text
    assert "login failed for unknown name #" in text
    assert "login failed for alice from 127.0.0.1" in text  # an account's name is shown


async def test_throttled_carries_its_hint_and_is_not_retried(make: MakeServer) -> None:
    server = await make(login_backoff_base=5.0)  # the 4th failure locks for 5 s
    host, port = server.address
    for _ in range(4):
        with pytest.raises(AuthError):
            await login(server, "alice", "mistyped")
    with pytest.raises(ThrottledError) as locked:
        await login(server, "alice")
    assert 4.0 < locked.value.retry_after <= 5.0  # the hint travels in the error
    # The client reports a lock at once (exit 3 in the CLI) and does not wait it out.
    with pytest.raises(ThrottledError, match=r"^too many failed logins; try again in 5 s$"):
        await asyncio.wait_for(connect_and_login(host, port, Login("alice", PASSWORD)), 1)


class SheddingFront:
    """A TCP front that closes its first ``shed`` connections as admission does under a
    flood (reset, no message), then relays the rest to the real server."""

    def __init__(self, target: tuple[str, int], shed: int) -> None:
        self.target = target
        self.shed = shed
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self.on_connect, "127.0.0.1", 0)
        return "127.0.0.1", self.server.sockets[0].getsockname()[1]

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.accepted <= self.shed:
            await reader.read(34)  # Noise message 1 arrives, then the server makes room
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


async def test_client_tries_again_when_the_server_sheds_its_connection(make: MakeServer) -> None:
    server = await make()
    front = SheddingFront(server.address, shed=2)
    address = await front.start()
    try:
        client, welcome = await asyncio.wait_for(
            connect_and_login(*address, Login("alice", PASSWORD)), 10
        )
        assert welcome.user == "alice" and front.accepted == 3
        await client.leave()
        front.accepted, front.shed = 0, 100
        settings = ClientSettings(login_retry_budget=0.5)
        with pytest.raises(DroppedError, match="server closed the connection during the handshake"):
            await connect_and_login(*address, Login("alice", PASSWORD), settings)
        assert 2 <= front.accepted <= 4  # 0.25 s, then about 0.5 s: the budget is spent
    finally:
        await front.close()


async def test_client_does_not_retry_a_server_it_cannot_reach() -> None:
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectError, match="cannot reach server") as failed:
        await connect_and_login("127.0.0.1", port, Login("alice", PASSWORD))
    assert not isinstance(failed.value, DroppedError)
    assert loop.time() - started < 1.0
