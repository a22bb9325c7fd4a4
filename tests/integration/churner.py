"""A hostile account holder for churn tests: joins and leaves a room as fast as the server
lets it and floods the members with peer messages, over the real ``ControlClient``.

With the room secret it also completes a pair handshake after each join (so the members
verify it and must not let it keep hearing them after it leaves); without it, it is only
an account holder who knows the room id.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bangor.client.control import ControlClient
from bangor.errors import BangorError, CloseCode, RefusedError
from bangor.settings import ClientSettings
from bangor.wire import control as msg
from bangor.wire.e2ee import RoomCrypto
from bangor.wire.noise import generate_static_key
from bangor.wire.pairwise import derive_join_token

PEER_BATCH = 200  # junk peer messages per round
JUNK = bytes((4,)) + bytes(40)  # looks like a pair DATA message; never verifies


@dataclass
class ChurnStats:
    joins: int = 0
    throttled: int = 0  # joins refused with THROTTLED
    refused: int = 0  # joins refused at the door: no valid join token (PROTOCOL.md 3.15)
    sessions: int = 0  # logins (a session the server closed is replaced)
    closed: list[str] = field(default_factory=list)  # why the server ended each session
    peer_sent: int = 0
    verified: int = 0  # joins after which a member verified us (needs the secret)


async def _handshake(
    client: ControlClient, joined: msg.RoomJoined, secret: bytes, user: str, timeout: float
) -> bool:
    """Prove the room secret to the members; True once one of them has verified us."""
    assert client.welcome is not None
    crypto = RoomCrypto(
        room_id=bytes.fromhex(joined.room_id),
        secret=secret,
        session_id=client.welcome.session_id,
        user=user,
        nick=user,
        identity_private=generate_static_key(),
    )
    loop = asyncio.get_running_loop()
    crypto.start(((m.session_id, m.user) for m in joined.members), loop.time())
    deadline = loop.time() + timeout
    while True:
        for to, data in crypto.messages_to_send():
            client.send_peer(to, data)
        if any(crypto.verified(m.session_id) for m in joined.members):
            return True
        try:
            item = await asyncio.wait_for(client.events.get(), max(deadline - loop.time(), 0))
        except TimeoutError:
            return False
        if isinstance(item, BangorError):
            raise item
        if isinstance(item, msg.PeerReceived):
            crypto.peer_received(item.sender, item.data, loop.time())


async def _in_sessions(
    host: str,
    port: int,
    user: str,
    password: str,
    seconds: float,
    stats: ChurnStats,
    body: Callable[[ControlClient, float], Awaitable[None]],
) -> ChurnStats:
    """Run ``body(client, end)`` in one logged-in session after the other until
    ``seconds`` are over: a session the server closes is replaced at once."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        client = await ControlClient.connect(host, port, ClientSettings())
        stats.sessions += 1
        try:
            client.start()
            await client.login(user, password, user)
            await body(client, end)
        except (BangorError, ConnectionError, OSError) as exc:
            stats.closed.append(str(exc))
        finally:
            with contextlib.suppress(Exception):
                await client.close()
    return stats


def _raise_errors(client: ControlClient) -> None:
    """Drop what the members say to us; raise if the server ended the session."""
    while not client.events.empty():
        item = client.events.get_nowait()
        if isinstance(item, BangorError):
            raise item


async def churn(
    host: str,
    port: int,
    user: str,
    password: str,
    room_id: str,
    seconds: float,
    *,
    secret: bytes | None = None,
) -> ChurnStats:
    """Join, (prove the secret,) leave, again, as fast as it can for ``seconds``.

    Without ``secret`` there is no join token either: every join is refused at the door.
    """
    stats = ChurnStats()
    token = b"" if secret is None else derive_join_token(secret, bytes.fromhex(room_id))

    async def body(client: ControlClient, end: float) -> None:
        while asyncio.get_running_loop().time() < end:
            try:
                joined = await client.join_room(room_id, token)
            except RefusedError as exc:
                if client.closed is not None:
                    raise  # the server ended the session (fatal THROTTLED, say)
                if exc.code == CloseCode.ROOM_NOT_FOUND:
                    stats.refused += 1
                    continue
                if exc.code != CloseCode.THROTTLED:
                    raise
                stats.throttled += 1
                continue  # no backing off
            stats.joins += 1
            if secret is not None and await _handshake(client, joined, secret, user, 1.0):
                stats.verified += 1
            await client.request(msg.LeaveRoom())
            _raise_errors(client)

    return await _in_sessions(host, port, user, password, seconds, stats, body)


async def flood(
    host: str,
    port: int,
    user: str,
    password: str,
    room_id: str,
    seconds: float,
    rate: float,
    token: bytes,
) -> ChurnStats:
    """Sit in the room and send ``rate`` junk peer messages a second to its members.

    (The issue's flood was 10 000 a second; faster only burns this process's CPU, which
    the call's processes share on a small machine.)
    """
    stats = ChurnStats()

    async def body(client: ControlClient, end: float) -> None:
        loop = asyncio.get_running_loop()
        joined = await client.join_room(room_id, token)
        stats.joins += 1
        next_round = loop.time()
        while loop.time() < end:
            for member in joined.members:
                if client.writer.is_closing():
                    raise ConnectionError("the server closed the session")
                for _ in range(PEER_BATCH):
                    client.send_peer(member.session_id, JUNK + secrets.token_bytes(8))
                stats.peer_sent += PEER_BATCH
            await client.writer.drain()
            _raise_errors(client)
            next_round += PEER_BATCH * len(joined.members) / rate
            await asyncio.sleep(max(next_round - loop.time(), 0))

    return await _in_sessions(host, port, user, password, seconds, stats, body)
