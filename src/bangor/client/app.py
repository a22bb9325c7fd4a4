"""What `bangor join` and `bangor room create` do, over the client pieces.

Interfaces get events through a callback; this module never prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bangor.audio.devices import open_sink, open_source
from bangor.client import events as ev
from bangor.client.control import ControlClient
from bangor.client.media import MediaEngine
from bangor.client.pinning import KnownServers
from bangor.errors import BangorError, RefusedError
from bangor.settings import MAX_CHAT_TEXT, STATS_INTERVAL, ClientSettings
from bangor.wire import control as msg
from bangor.wire.invite import SECRET_SIZE, Invite
from bangor.wire.media import derive_media_keys

Emit = Callable[[ev.Event], None]


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    nick: str = ""


def parse_server(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port``; raises ValueError with a clear message."""
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad server address {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"bad port in server address {text!r}")
        port = int(port_text)
    if not host or not 0 < port < 65536:
        raise ValueError(f"bad server address {text!r}")
    return host, port


async def create_room(
    host: str, port: int, login: Login, name: str, warn: Callable[[str], None]
) -> str:
    """Create a room and return its invite code (with a fresh room secret)."""
    client = await ControlClient.connect(host, port)
    try:
        if KnownServers.default().check(host, port, client.server_fingerprint):
            warn(f"first connection to {host}:{port}; trusting its key from now on")
        client.start()
        await client.login(login.user, login.password, login.nick)
        created = await client.create_room(name)
    finally:
        await client.leave()
    return Invite(
        host,
        port,
        bytes.fromhex(created.room_id),
        secrets.token_bytes(SECRET_SIZE),
        client.server_fingerprint,
    ).encode()


def _stdin_lines(queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines to the loop from a daemon thread (works for ttys, pipes, files)."""
    loop = asyncio.get_running_loop()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="stdin", daemon=True).start()


async def join_call(
    invite: Invite,
    login: Login,
    emit: Emit,
    *,
    source_spec: str = "silence",
    sink_spec: str = "null",
    duration: float | None = None,
    read_stdin: bool = True,
    stop: asyncio.Event | None = None,
    settings: ClientSettings | None = None,
) -> None:
    """Join the invite's room and stay until ``duration``, ``stop`` or an error."""
    settings = settings or ClientSettings()
    stop = stop or asyncio.Event()
    source = open_source(source_spec)
    try:
        sink = open_sink(sink_spec)
    except BaseException:
        source.close()
        raise
    client: ControlClient | None = None
    engine: MediaEngine | None = None
    reason = "left the room"
    try:
        client = await ControlClient.connect(invite.host, invite.port, settings)
        client.verify_fingerprint(invite.fingerprint)
        KnownServers.default().remember(invite.host, invite.port, invite.fingerprint)
        client.start()
        welcome = await client.login(login.user, login.password, login.nick)
        joined = await client.join_room(invite.room_id.hex())
        members = {m.session_id: _info(m) for m in joined.members}
        engine = MediaEngine(
            welcome.session_id,
            derive_media_keys(client.handshake_hash),
            source,
            sink,
            settings,
            on_path=lambda path: emit(ev.PathChanged(path)),
        )
        await engine.start(invite.host, invite.port)
        emit(ev.Joined(joined.room_id, joined.name, _info(joined.you), tuple(members.values())))
        reason = await _call_loop(client, engine, members, emit, stop, duration, read_stdin)
    except BangorError as exc:
        reason = str(exc)
        raise
    finally:
        if engine is not None and client is not None:
            emit(_stats(client, engine))  # the final count, for scripts
            await engine.stop()
        if client is not None:
            await client.leave()
        source.close()
        sink.close()
        emit(ev.Left(reason))


async def _call_loop(
    client: ControlClient,
    engine: MediaEngine,
    members: dict[int, ev.MemberInfo],
    emit: Emit,
    stop: asyncio.Event,
    duration: float | None,
    read_stdin: bool,
) -> str:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    if read_stdin:
        _stdin_lines(lines)
    if duration is not None:
        loop.call_later(duration, stop.set)
    next_stats = loop.time() + STATS_INTERVAL
    get_event = loop.create_task(client.events.get())
    get_line: asyncio.Future[str | None] = loop.create_task(lines.get())
    stopped = loop.create_task(stop.wait())
    try:
        while True:
            timeout = max(next_stats - loop.time(), 0)
            waiting: set[asyncio.Future[Any]] = {get_event, get_line, stopped}
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done():
                return "left the room"
            if get_event.done():
                item = get_event.result()
                get_event = loop.create_task(client.events.get())
                if isinstance(item, BangorError):
                    if isinstance(item, RefusedError):
                        emit(ev.ErrorEvent(item.code, str(item)))
                        continue
                    raise item
                _on_message(item, members, engine, emit)
            if get_line.done():
                line = get_line.result()
                # Once stdin closes, wait on a future that never completes: the call goes on.
                get_line = (
                    loop.create_task(lines.get()) if line is not None else loop.create_future()
                )
                if line is not None and len(line) > MAX_CHAT_TEXT:
                    emit(ev.ErrorEvent(0, f"chat line too long (over {MAX_CHAT_TEXT} characters)"))
                elif line is not None and line.strip():
                    client.send_chat(line)
            if loop.time() >= next_stats:
                next_stats += STATS_INTERVAL
                emit(_stats(client, engine))
    finally:
        for task in (get_event, get_line, stopped):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(get_event, get_line, stopped, return_exceptions=True)


def _on_message(
    message: msg.ServerMessage,
    members: dict[int, ev.MemberInfo],
    engine: MediaEngine,
    emit: Emit,
) -> None:
    if isinstance(message, msg.MemberJoined):
        info = members[message.member.session_id] = _info(message.member)
        emit(ev.MemberJoined(info))
    elif isinstance(message, msg.MemberLeft):
        gone = members.pop(message.session_id, None)
        engine.forget(message.session_id)
        if gone is not None:
            emit(ev.MemberLeft(gone))
    elif isinstance(message, msg.Chat):
        emit(ev.ChatReceived(message.sender, message.nick, message.text))


def _info(member: msg.Member) -> ev.MemberInfo:
    return ev.MemberInfo(member.session_id, member.user, member.nick)


def _stats(client: ControlClient, engine: MediaEngine) -> ev.Stats:
    senders = {}
    for sender, stream in engine.streams.items():
        s = stream.jitter.stats()
        senders[f"{sender:08x}"] = {
            "received": s.received,
            "played": s.played,
            "lost": s.lost,
            "late": s.late,
        }
    rtt = engine.stats.rtt if engine.stats.rtt is not None else client.rtt
    return ev.Stats(
        rtt_ms=None if rtt is None else round(rtt * 1000, 2),
        sent=engine.stats.sent,
        received=engine.stats.received,
        dropped=engine.stats.dropped,
        senders=senders,
    )
