"""What `bangor join` and `bangor room create` do, over the client pieces.

Interfaces get events through a callback; this module never prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import secrets
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bangor.address import format_address, parse_address
from bangor.client import events as ev
from bangor.client.control import ControlClient
from bangor.client.identity import KnownMembers, Trust, load_identity
from bangor.client.media import MediaShell
from bangor.client.pinning import KnownServers
from bangor.client.reconnect import reconnect, worth_reconnecting
from bangor.client.roombook import RoomBook
from bangor.errors import (
    AudioError,
    BangorError,
    BusyError,
    ConnectError,
    DeviceError,
    DroppedError,
    MovedError,
    PasswordRequiredError,
    RefusedError,
    RemoteProtocolError,
)
from bangor.io.devices import NullSink, SilenceSource, Sink, Source, open_sink, open_source
from bangor.io.recording import OpusFileSink
from bangor.media import events as me
from bangor.media.session import MediaSession
from bangor.settings import MAX_CHAT_TEXT, ClientSettings
from bangor.text import user_key
from bangor.wire import control as msg
from bangor.wire import e2ee
from bangor.wire.direct import PathChanged
from bangor.wire.e2ee import RoomCrypto
from bangor.wire.identity import identity_fingerprint, safety_number
from bangor.wire.invite import SECRET_SIZE, Invite
from bangor.wire.media import derive_media_keys
from bangor.wire.pairwise import derive_join_token

Emit = Callable[[ev.Event], None]
Entered = tuple[ControlClient, msg.Welcome, msg.RoomJoined]  # logged in and in the room

MAX_VOLUME_PERCENT = 400
MIN_LOGIN_RETRY = 0.25  # seconds: even a server that says "now" is not asked again at once
# A connection the server closed before welcome: try again after this, doubling up to the max.
DROPPED_RETRY = 0.25
MAX_DROPPED_RETRY = 2.0


@dataclass(frozen=True)
class Login:
    """Who logs in. ``password`` None: ask ``ask_password`` if the server wants one
    (a server in open mode wants none)."""

    user: str
    password: str | None
    nick: str = ""
    ask_password: Callable[[], str] | None = None


async def connect_and_login(
    host: str,
    port: int,
    login: Login,
    settings: ClientSettings | None = None,
    check: Callable[[ControlClient], None] = lambda client: None,
    resume: bytes = b"",
) -> tuple[ControlClient, msg.Welcome]:
    """A logged-in control session; ``check`` vets the server before any password goes out.

    Without a password we first offer none: a server in open mode lets us in, one with
    accounts answers PASSWORD_REQUIRED (without counting a failure) and we ask for it.
    A server busy checking other logins answers BUSY with when to try again: we do, after
    that hint plus jitter; a server that closes the connection before ``welcome`` (it sheds
    connections under a flood) we try again after a short, growing pause. Both for up to
    ``login_retry_budget`` seconds in all, then we give up with :class:`ConnectError`.
    THROTTLED (a locked name) is reported at once, as before.
    """
    settings = settings or ClientSettings()
    loop = asyncio.get_running_loop()
    give_up = loop.time() + settings.login_retry_budget
    password = login.password
    dropped = 0
    while True:
        client: ControlClient | None = None
        try:
            client = await ControlClient.connect(host, port, settings)
            check(client)
            client.start()
            welcome = await client.login(login.user, password or "", login.nick, resume)
        except PasswordRequiredError:
            assert client is not None
            await client.leave()
            if password is not None or login.ask_password is None:
                raise
            password = await asyncio.to_thread(login.ask_password)
            continue
        except BusyError as exc:
            assert client is not None
            await client.leave()
            wait = retry_wait(exc.retry_after)
            if loop.time() + wait <= give_up:
                await asyncio.sleep(wait)
                continue
            raise ConnectError(
                f"server {format_address(host, port)} could not check our login; gave up after "
                f"{settings.login_retry_budget:g} s (last answer: {exc})"
            ) from None
        except DroppedError:
            if client is not None:
                await client.leave()
            wait = retry_wait(min(DROPPED_RETRY * 2**dropped, MAX_DROPPED_RETRY))
            dropped += 1
            if loop.time() + wait <= give_up:
                await asyncio.sleep(wait)
                continue
            raise
        except BaseException:
            if client is not None:
                await client.leave()
            raise
        return client, welcome


async def enter_room(
    host: str,
    port: int,
    login: Login,
    room_id: str,
    token: bytes,
    settings: ClientSettings,
    *,
    check: Callable[[ControlClient], None],
    resume: bytes = b"",
) -> Entered:
    """Log in at ``host:port`` and join the room; a cluster node that does not serve it
    sends us on (MOVED), at most ``max_redirects`` times (PROTOCOL.md 3.14)."""
    redirects = 0
    while True:
        client, welcome = await connect_and_login(
            host, port, login, settings, check=check, resume=resume
        )
        try:
            joined = await client.join_room(room_id, token)
        except MovedError as exc:
            await client.leave()
            redirects += 1
            if redirects > settings.max_redirects:
                raise ConnectError(
                    f"sent on more than {settings.max_redirects} times; last: {exc}"
                ) from None
            host, port = exc.host, exc.port
            continue
        except BaseException:
            await client.leave()
            raise
        return client, welcome, joined


def trust_on_first_use(
    host: str, port: int, warn: Callable[[str], None]
) -> Callable[[ControlClient], None]:
    """A check for connect_and_login without an invite: a server seen before must show
    the same key; a new one is remembered."""

    def pin(client: ControlClient) -> None:
        if KnownServers.default().check(host, port, client.server_fingerprint):
            warn(f"first connection to {format_address(host, port)}; trusting its key from now on")

    return pin


def retry_wait(retry_after: float) -> float:
    """Seconds to wait before trying a refused login again: the server's hint plus up
    to half as much again at random, so refused clients do not all come back at once."""
    hint = max(retry_after, MIN_LOGIN_RETRY)
    return hint + random.uniform(0, hint / 2)


def parse_server(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; raises ValueError with a clear
    message (bangor.address: the one parser of HOST:PORT)."""
    return parse_address(text, default_port)


async def create_room(
    host: str,
    port: int,
    login: Login,
    name: str,
    warn: Callable[[str], None],
    max_bitrate: int | None = None,
) -> str:
    """Create a room and return its invite code (with a fresh room secret).

    ``max_bitrate``: the Opus bit/s each member may send at most (None: no cap).
    """

    client, _ = await connect_and_login(
        host, port, login, check=trust_on_first_use(host, port, warn)
    )
    secret = secrets.token_bytes(SECRET_SIZE)
    try:
        # The token derives from the room id, which the server picks: so the room is
        # created, then its token set, before anyone but us knows the id.
        created = await client.create_room(name, max_bitrate or 0)
        await client.rotate_room(
            created.room_id, derive_join_token(secret, bytes.fromhex(created.room_id))
        )
    finally:
        await client.leave()
    invite = Invite(host, port, bytes.fromhex(created.room_id), secret, client.server_fingerprint)
    try:
        RoomBook.default().remember(invite, created.name, login.user, owner=True)
    except BangorError as exc:
        warn(f"{exc}; the invite is not kept on this device: note it down")
    return invite.encode()


def _stdin_lines(queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines to the loop from a daemon thread (works for ttys, pipes, files)."""
    loop = asyncio.get_running_loop()
    threading.Thread(
        target=pump_lines, args=(sys.stdin, loop, queue), name="stdin", daemon=True
    ).start()


def pump_lines(
    stream: Iterable[str], loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]
) -> None:
    """Hand each line of ``stream`` to ``queue`` on ``loop``, then None; stop quietly once
    the loop has closed (the call ended while a line or the end of input was on its way:
    the thread must not print a traceback)."""
    try:
        for line in stream:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)
    except RuntimeError:  # "Event loop is closed"
        return


async def join_call(
    invite: Invite,
    login: Login,
    emit: Emit,
    *,
    source_spec: str = "silence",
    sink_spec: str = "null",
    record_path: Path | None = None,
    duration: float | None = None,
    read_stdin: bool = True,
    stop: asyncio.Event | None = None,
    settings: ClientSettings | None = None,
    lines: asyncio.Queue[str | None] | None = None,
) -> None:
    """Join the invite's room and stay until ``duration``, ``stop`` or an error.

    ``lines``: where command and chat lines come from instead of stdin (a UI puts the
    same lines a user would type; None ends the input, not the call).
    """
    settings = settings or ClientSettings()
    stop = stop or asyncio.Event()
    identity = load_identity()
    known_members = KnownMembers.default()
    samples = settings.frame_samples  # every source and sink works in our ticks

    def pin(client: ControlClient) -> None:
        client.verify_fingerprint(invite.fingerprint)
        KnownServers.default().remember(invite.host, invite.port, invite.fingerprint)

    if login.ask_password is not None:  # asked once: a reconnect logs in with the same
        login = dataclasses.replace(login, ask_password=_asked_once(login.ask_password))

    def room_invite() -> Invite:
        """The invite as it is now: a rotation in this call replaces its secret."""
        if call is not None and call.invite is not None:
            return call.invite
        return invite

    async def enter(resume: bytes = b"") -> Entered:
        """Log in and join the room: at the start and on each reconnect. Always at the
        invite's address: a cluster node there sends us on to the room's node (MOVED),
        with the same server key (3.14)."""
        current = room_invite()
        client, welcome, joined = await enter_room(
            invite.host,
            invite.port,
            login,
            current.room_id.hex(),
            derive_join_token(current.secret, current.room_id),
            settings,
            check=pin,
            resume=resume,
        )
        # The server names us as our account is stored (`Alice` logs in to `alice`), and
        # we claim that name to the members; but never another account's. Members check
        # each other's names against the server's word; a server that renamed us
        # consistently would pass that check, so we check too.
        if joined.you.user != welcome.user or user_key(welcome.user) != user_key(login.user):
            await client.leave()
            raise RemoteProtocolError(
                f"the server calls us {joined.you.user!r}, not {login.user!r}; not joining"
            )
        return client, welcome, joined

    call: _Call | None = None

    async with contextlib.AsyncExitStack() as stack:
        with contextlib.ExitStack() as opening:  # one that fails closes the others
            # No sound card (or no PortAudio): the call still works, silent on that side.
            source: Source
            missing: dict[str, str] = {}  # what could not be opened: why
            try:
                source = open_source(source_spec, samples)
            except DeviceError as exc:
                missing["a microphone"] = str(exc)
                source = SilenceSource(samples)
            opening.callback(source.close)
            sink: Sink
            try:
                sink = open_sink(sink_spec, samples)
            except DeviceError as exc:
                missing["sound output"] = str(exc)
                sink = NullSink(samples)
            opening.callback(sink.close)
            if len(set(missing.values())) == 1:  # one cause (no sound card): one warning
                emit(
                    ev.WarningEvent(
                        f"{next(iter(missing.values()))}; joining without {' or '.join(missing)}"
                    )
                )
            else:
                for what, why in missing.items():
                    emit(ev.WarningEvent(f"{why}; joining without {what}"))
            recorder = None
            if record_path is not None:
                recorder = OpusFileSink(record_path, frame_ms=settings.frame_ms)
                opening.callback(_close_recorder, recorder, emit)
            devices = opening.pop_all()
        reason = "left the room"
        in_room = False  # a login or join that failed left nothing: no `left` then

        def left() -> None:
            if in_room:
                emit(ev.Left(reason))  # the reason as it is by then, last

        stack.callback(left)
        stack.enter_context(devices)
        try:
            client, welcome, joined = await enter()

            async def leave() -> None:  # whichever control session is the call's by then
                await (call.client if call is not None else client).leave()

            stack.push_async_callback(leave)
            shell = MediaShell(
                source,
                sink,
                settings.frame_ms,
                recorder=recorder,
                on_problem=lambda message: emit(ev.WarningEvent(message)),
            )
            stack.callback(shell.stop)
            await shell.connect(*client.address)  # the room's node, in a cluster

            def new_session(welcome: msg.Welcome, joined: msg.RoomJoined) -> MediaSession:
                crypto = RoomCrypto(
                    room_id=invite.room_id,
                    secret=room_invite().secret,
                    session_id=welcome.session_id,
                    user=joined.you.user,
                    nick=joined.you.nick,
                    identity_private=identity,
                    settings=settings,
                )
                session = MediaSession(
                    welcome.session_id,
                    derive_media_keys(welcome.media_secret),
                    settings,
                    crypto,
                    shell.server_addr,
                    shell.host_candidates(),
                )
                session.set_max_bitrate(joined.max_bitrate or None, shell.clock())
                return session

            session = new_session(welcome, joined)
            call = _Call(
                client,
                session,
                shell,
                emit,
                known_members,
                KnownServers.key(invite.host, invite.port),
                {m.session_id: _info(m) for m in joined.members},
                welcome.resume,
                enter,
                new_session,
                invite=invite,
                user=login.user,
            )
            call.keep_invite(joined.name)
            shell.on_output = call.drain
            stack.callback(call.finish)  # before the shell stops and the client leaves
            shell.start(session, [(m.session_id, m.user) for m in joined.members])
            emit(
                ev.Joined(
                    joined.room_id, joined.name, _info(joined.you), tuple(call.members.values())
                )
            )
            in_room = True
            reason = await call.run(stop, duration, read_stdin, lines)
        except BangorError as exc:
            reason = str(exc)
            raise


def _asked_once(ask: Callable[[], str]) -> Callable[[], str]:
    """``ask``, remembering its answer: a reconnect must not prompt again mid-call."""
    answers: list[str] = []

    def once() -> str:
        if not answers:
            answers.append(ask())
        return answers[0]

    return once


def _close_recorder(recorder: Sink, emit: Emit) -> None:
    try:
        recorder.close()
    except BangorError as exc:
        emit(ev.WarningEvent(str(exc)))


@dataclass
class _Call:
    """A joined call: routes server messages, lines and the session's events."""

    client: ControlClient
    session: MediaSession
    shell: MediaShell
    emit: Emit
    known_members: KnownMembers
    server_key: str
    members: dict[int, ev.MemberInfo]
    resume: bytes = b""  # the server's ticket to get our session id back after a restart
    # Log in and join again (with a resume ticket); a media session for a new login.
    enter: Callable[[bytes], Awaitable[Entered]] | None = None
    new_session: Callable[[msg.Welcome, msg.RoomJoined], MediaSession] | None = None
    # While reconnecting: pair messages kept for a resumed session; members we had
    # before and not seen back yet (gone once rejoin_grace passes).
    reconnecting: bool = False
    held: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    missing: set[int] = dataclasses.field(default_factory=set)
    grace: asyncio.TimerHandle | None = None
    # The room's invite as it is now (a rotation replaces its secret), and our account.
    invite: Invite | None = None
    user: str = ""
    room_name: str = ""
    tasks: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)
    # The voice path to each member we told the UI of; the relay works (its first ack).
    paths: dict[int, str] = dataclasses.field(default_factory=dict)
    relay_up: bool = False

    async def run(
        self,
        stop: asyncio.Event,
        duration: float | None,
        read_stdin: bool,
        lines: asyncio.Queue[str | None] | None = None,
    ) -> str:
        """Until ``stop`` (or ``duration``): one task per input feeds one queue."""
        loop = asyncio.get_running_loop()
        if lines is None:
            lines = asyncio.Queue()
            if read_stdin:
                _stdin_lines(lines)
        if duration is not None:
            loop.call_later(duration, stop.set)
        inputs: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def control(client: ControlClient) -> None:
            while True:
                inputs.put_nowait(("control", (client, await client.events.get())))

        async def back(error: BangorError) -> None:
            """Reconnect; what comes of it is the next input."""
            assert self.enter is not None
            enter = self.enter
            started = loop.time()
            try:
                entered, attempt = await reconnect(
                    error, self.session.settings, lambda: enter(self.resume), self.emit, loop.time
                )
                # A cluster may serve the room from another node now: relay there.
                await self.shell.retarget(*entered[0].address)
            except BangorError as exc:
                inputs.put_nowait(("gave_up", exc))
            else:
                inputs.put_nowait(("back", (entered, attempt, loop.time() - started)))

        async def typed(source: asyncio.Queue[str | None]) -> None:
            # Once the lines end, the call goes on.
            while (line := await source.get()) is not None:
                inputs.put_nowait(("line", line))

        async def stopped() -> None:
            await stop.wait()
            inputs.put_nowait(("stop", None))

        async def stats_due() -> None:
            every = self.session.settings.stats_interval
            due = loop.time() + every
            while True:  # against absolute times, so the count does not drift
                await asyncio.sleep(max(due - loop.time(), 0))
                inputs.put_nowait(("stats", None))
                due = max(due + every, loop.time())

        tasks = [
            loop.create_task(control(self.client)),
            loop.create_task(typed(lines)),
            loop.create_task(stopped()),
            loop.create_task(stats_due()),
        ]
        try:
            while True:
                kind, item = await inputs.get()
                if kind == "stop":
                    return "left the room"
                if kind == "control":
                    client, item = item
                    if client is not self.client or self.reconnecting:
                        continue  # the session we had before a reconnect
                    if isinstance(item, BangorError):
                        # A refused request: the call goes on. Otherwise the session
                        # ended (a fatal error, or the connection): we reconnect, or the
                        # call ends.
                        if isinstance(item, RefusedError) and client.closed is None:
                            self.emit(ev.ErrorEvent(item.code, str(item)))
                            continue
                        error = client.closed or item
                        if self.enter is None or not worth_reconnecting(
                            error, self.session.settings
                        ):
                            raise error
                        self.reconnecting = True
                        tasks.append(loop.create_task(back(error)))
                        continue
                    self.on_message(item, self.shell.clock())
                elif kind == "back":
                    (client, welcome, joined), attempt, outage = item
                    self.adopt(client, welcome, joined, attempt, outage)
                    tasks.append(loop.create_task(control(client)))
                elif kind == "gave_up":
                    raise item
                elif kind == "line":
                    self.on_line(item)
                else:
                    self.emit(self.stats())
        finally:
            tasks += self.tasks
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def on_line(self, line: str) -> None:
        """A line of stdin: a /command, or chat ("//" sends a line starting with "/")."""
        if line.startswith("//"):
            self.say(line[1:])
        elif line.startswith("/"):
            self.command(line[1:].split())
        else:
            self.say(line)

    def command(self, words: list[str]) -> None:
        """``words`` after the "/": run it if :data:`COMMANDS` has it and its arguments
        fit its usage, else a warning that says what was wrong."""
        name, args = (words[0].lower(), words[1:]) if words else ("help", [])
        command = COMMANDS.get(name)
        if command is None:
            self.emit(ev.WarningEvent(f"unknown command /{words[0]} (type /help)"))
            return
        problem = command.check(name, args)
        if problem:
            self.emit(ev.WarningEvent(problem))
            return
        command.run(self, args)

    def set_audio(self, **changes: bool) -> None:
        """Mute, deafen or talk, then say how the audio is now."""
        for name, value in changes.items():
            setattr(self.session, name, value)
        self.emit(self.audio_state())

    def talk(self, args: list[str]) -> None:
        session = self.session
        session.talking = not session.talking if not args else args[0].lower() == "on"
        if not session.settings.push_to_talk:
            self.emit(ev.Notice("push-to-talk is off (join with --ptt): /talk changes nothing"))
        self.emit(self.audio_state())

    def process(self, stage: str, args: list[str]) -> None:
        """Switch a stage of the capture chain (``stage``: its keyword)."""
        session = self.session
        on = not getattr(session.processing, stage) if not args else args[0].lower() == "on"
        try:
            session.set_processing(**{stage: on})
        except AudioError as exc:  # its library is missing: the call goes on without
            self.emit(ev.WarningEvent(str(exc)))
            return
        self.emit(self.audio_state())

    def set_volume(self, who: str, percent_text: str) -> None:
        member = self.find_member(who)
        try:
            percent = int(percent_text.removesuffix("%"))
        except ValueError:
            percent = -1
        if member is None:
            self.emit(ev.WarningEvent(f"no member called {who!r} in this room"))
        elif not 0 <= percent <= MAX_VOLUME_PERCENT:
            self.emit(ev.WarningEvent(f"volume must be 0..{MAX_VOLUME_PERCENT} %"))
        else:
            self.session.volumes[member.session_id] = percent / 100
            self.emit(self.audio_state())

    def find_member(self, who: str) -> ev.MemberInfo | None:
        """By nick, account name or session id (decimal, as events give it), in that order."""
        folded = who.casefold()
        for match in (
            lambda m: m.nick.casefold() == folded,
            lambda m: m.user.casefold() == folded,
            lambda m: str(m.session_id) == folded,
        ):
            found = [m for m in self.members.values() if match(m)]
            if len(found) == 1:
                return found[0]
        return None

    def audio_state(self) -> ev.AudioState:
        session = self.session
        volumes = {
            self._member(sid).nick: round(gain * 100)
            for sid, gain in session.volumes.items()
            if round(gain * 100) != 100
        }
        return ev.AudioState(
            session.muted,
            session.deafened,
            session.settings.push_to_talk,
            session.talking,
            volumes,
            session.processing.noise_suppression,
            session.processing.echo_cancellation,
            session.processing.agc,
        )

    def say(self, line: str) -> None:
        if len(line) > MAX_CHAT_TEXT:
            self.emit(ev.WarningEvent(f"chat line too long (over {MAX_CHAT_TEXT} characters)"))
        elif self.reconnecting:
            self.emit(ev.WarningEvent("not sent: reconnecting to the server"))
        elif line.strip():
            self.client.send_chat(self.session.seal_chat(line))

    # --- the room's owner in a call: /kick, /ban, /unban, and the rotations they bring --

    def keep_invite(self, name: str) -> None:
        """Keep the room's invite on this device, to print it again (``room invite``)."""
        self.room_name = name
        if self.invite is None:
            return
        try:
            RoomBook.default().remember(self.invite, name, self.user)
        except BangorError as exc:
            self.emit(ev.WarningEvent(f"{exc}; the invite is not kept on this device"))

    def remove_member(self, who: str, *, ban: bool) -> None:
        member = self.find_member(who)
        if member is None:
            self.emit(ev.WarningEvent(f"no member called {who!r} in this room"))
            return
        self.spawn(self._remove(member, ban))

    async def _remove(self, member: ev.MemberInfo, ban: bool) -> None:
        assert self.invite is not None
        room_id = self.invite.room_id.hex()
        try:
            await self.client.kick(room_id, session_id=member.session_id, ban=ban)
        except BangorError as exc:
            self.refused(exc, "not removed")
            return
        what = "banned" if ban else "removed"
        self.emit(ev.Notice(f"{member.nick} ({member.user}) was {what}; changing the invite"))
        # They know the room secret: the room gets a new one, given to those still here.
        await self.rotate()

    async def show_bans(self) -> None:
        assert self.invite is not None
        try:
            banned = await self.client.list_bans(self.invite.room_id.hex())
        except BangorError as exc:
            self.refused(exc, "no list")
            return
        more = f" and {banned.more} more" if banned.more else ""
        names = ", ".join(banned.users)
        self.emit(ev.Notice(f"banned: {names}{more}" if names else "nobody is banned here"))

    async def unban(self, user: str) -> None:
        assert self.invite is not None
        try:
            lifted = await self.client.unban(self.invite.room_id.hex(), user)
        except BangorError as exc:
            self.refused(exc, "not unbanned")
            return
        self.emit(ev.Notice(f"{lifted.user} may join again (with the room's invite: /invite)"))

    async def rotate(self) -> None:
        """A new room secret: to every verified member over its pair channel, then the
        new join token to the server; the secret is ours once the server confirms it."""
        assert self.invite is not None
        secret = secrets.token_bytes(SECRET_SIZE)
        self.session.crypto.offer_secret(secret)
        self.drain()
        try:
            await self.client.rotate_room(
                self.invite.room_id.hex(), derive_join_token(secret, self.invite.room_id)
            )
        except BangorError as exc:
            self.refused(exc, "the invite was not changed")

    def refused(self, exc: BangorError, what: str) -> None:
        """A management request failed: the server's refusal (with its code) or a warning."""
        if isinstance(exc, RefusedError):
            self.emit(ev.ErrorEvent(exc.code, f"{what}: {exc}"))
        else:
            self.emit(ev.WarningEvent(f"{what}: {exc}"))

    def on_token_changed(self, token: bytes) -> None:
        assert self.invite is not None
        secret = self.session.crypto.token_changed(token)
        if secret is None:
            self.emit(
                ev.WarningEvent(
                    "the room's owner changed its invite and this device did not get the new "
                    "one: members who join with it cannot verify you; ask the owner for it"
                )
            )
            return
        self.invite = dataclasses.replace(self.invite, secret=secret)
        self.keep_invite(self.room_name)
        self.emit(ev.InviteChanged(self.invite.encode()))

    def show_invite(self) -> None:
        if self.invite is not None:
            self.emit(ev.Notice(f"the room's invite: {self.invite.encode()}"))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a request of the call's (a kick, a rotation) beside it; cancelled at its end."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_message(self, message: msg.ServerMessage, now: float) -> None:
        session = self.session
        if isinstance(message, msg.TokenChanged):
            self.on_token_changed(message.token)
        elif isinstance(message, msg.MemberJoined):
            member = message.member
            known = session.members.get(member.session_id)
            if known is not None and known != member.user:
                self.drop_member(member.session_id, now)  # another account has the id now
            info = self.members[member.session_id] = _info(member)
            if member.session_id in self.missing and known == member.user:
                # Back after the server restarted, with its keys and paths: as if never gone.
                self.missing.discard(member.session_id)
            else:
                session.member_joined(member.session_id, member.user, now)
                self.emit(ev.MemberJoined(info))
                self.show_relay_paths()
        elif isinstance(message, msg.MemberLeft):
            self.drop_member(message.session_id, now)
        elif isinstance(message, msg.PeerReceived):
            session.receive_peer(message.sender, message.data, now)
        elif isinstance(message, msg.Chat):
            session.receive_chat(message.sender, message.data, now)
        self.shell.flush()  # its datagrams and timer; then drain() below

    def drop_member(self, session_id: int, now: float) -> None:
        gone = self.members.pop(session_id, None)
        self.paths.pop(session_id, None)
        self.missing.discard(session_id)
        self.session.member_left(session_id, now)
        if gone is not None:
            self.emit(ev.MemberLeft(gone))

    def drain(self) -> None:
        """Send the session's pair messages and show what it found."""
        for to, data in self.session.peer_messages_to_send():
            if self.reconnecting:
                # Kept for a resumed session (the members' channels go on); the oldest go
                # first if the outage is long (the pair protocol copes with a lost message).
                self.held.append((to, data))
                del self.held[: -self.session.settings.max_queued_peer_messages]
            else:
                self.client.send_peer(to, data)
        while (event := self.session.next_event()) is not None:
            self.on_media_event(event)

    def _member(self, session_id: int, user: str = "?") -> ev.MemberInfo:
        return self.members.get(session_id) or ev.MemberInfo(session_id, user, user)

    def on_media_event(self, event: me.CallEvent) -> None:
        if isinstance(event, e2ee.ChatOpened):
            member = self._member(event.session_id)
            self.emit(ev.ChatReceived(event.session_id, member.nick, event.text, member.user))
        elif isinstance(event, e2ee.MemberVerified):
            self.on_verified(event)
        elif isinstance(event, e2ee.MemberRejected):
            self.emit(ev.MemberRejected(self._member(event.session_id, event.user), event.reason))
        elif isinstance(event, e2ee.ChatGap):
            member = self._member(event.session_id)
            self.emit(
                ev.WarningEvent(
                    f"{event.missing} chat message(s) from {member.nick} never arrived "
                    "(withheld by the server?)",
                )
            )
        elif isinstance(event, e2ee.PeerProblem):
            member = self._member(event.session_id, event.user or "?")  # it may have left
            self.emit(ev.WarningEvent(f"end-to-end problem with {member.nick}: {event.message}"))
        elif isinstance(event, me.DirectPathRefused):
            member = self._member(event.session_id)
            self.emit(ev.WarningEvent(f"direct path to {member.nick}: {event.message}"))
        elif isinstance(event, me.RelayPathUp):
            self.relay_up = True
            self.show_relay_paths()
        elif isinstance(event, PathChanged):
            rtt = None if event.rtt is None else round(event.rtt * 1000, 2)
            nick = self._member(event.session_id).nick
            self.paths[event.session_id] = event.path
            self.emit(ev.PathChanged(event.path, event.session_id, rtt, nick))

    def show_relay_paths(self) -> None:
        """Each member's first path event, "relay", once the relay works: a path is to
        somebody, so alone in the room we say nothing about it."""
        if not self.relay_up:
            return
        for sid, member in self.members.items():
            if sid not in self.paths:
                self.paths[sid] = "relay"
                self.emit(ev.PathChanged("relay", sid, None, member.nick))

    def adopt(
        self,
        client: ControlClient,
        welcome: msg.Welcome,
        joined: msg.RoomJoined,
        attempt: int,
        outage: float,
    ) -> None:
        """Back in the room on ``client``.

        Our own session id back (the server restarted; nobody saw anybody leave): new hop
        keys for the relay, and everything end to end goes on — members' channels, keys and
        direct paths. Members not back yet keep theirs for ``rejoin_grace``. Any other id:
        the others saw us leave, so this is a rejoin — a new media session whose channels
        and keys start afresh (direct paths are found again)."""
        now = self.shell.clock()
        self.client = client
        self.resume = welcome.resume
        self.reconnecting = False
        session = self.session
        resumed = welcome.session_id == session.session_id
        present = {m.session_id: m for m in joined.members}
        if resumed:
            session.server_addr = self.shell.server_addr  # another node, in a cluster
            session.rekey_hop(derive_media_keys(welcome.media_secret), now)
            fresh = []
            for sid, member in present.items():
                known = session.members.get(sid)
                if known == member.user:
                    self.members[sid] = _info(member)
                    continue
                if known is not None:
                    self.drop_member(sid, now)
                fresh.append(member)
            for member in fresh:
                self.members[member.session_id] = _info(member)
            session.greet([(m.session_id, m.user) for m in fresh], now)
            for member in fresh:
                self.emit(ev.MemberJoined(_info(member)))
            self.show_relay_paths()
            self.missing = set(session.members) - set(present)
            held, self.held = self.held, []
            for to, data in held:
                client.send_peer(to, data)
        else:
            assert self.new_session is not None
            # The old session is dropped as it is (its members' state goes with it).
            for gone in self.members.values():
                self.emit(ev.MemberLeft(gone))
            self.held.clear()
            self.missing.clear()
            self.paths.clear()  # the new session finds them again, the relay first
            self.relay_up = False
            new = self.new_session(welcome, joined)
            new.muted, new.deafened, new.talking = session.muted, session.deafened, session.talking
            new.set_processing(**dataclasses.asdict(session.processing))
            by_user = {session.members.get(sid): gain for sid, gain in session.volumes.items()}
            for member in joined.members:
                if member.user in by_user:
                    new.volumes[member.session_id] = by_user[member.user]
            self.session = new
            self.members = {m.session_id: _info(m) for m in joined.members}
            self.shell.start(new, [(m.session_id, m.user) for m in joined.members])
            for info in self.members.values():
                self.emit(ev.MemberJoined(info))
        self.session.set_max_bitrate(joined.max_bitrate or None, now)
        self.emit(ev.Reconnected(attempt, round(outage, 3), resumed))
        if self.grace is not None:
            self.grace.cancel()
        if self.missing:
            self.grace = asyncio.get_running_loop().call_later(
                session.settings.rejoin_grace, self._grace_over, client
            )
        self.shell.flush()

    def _grace_over(self, client: ControlClient) -> None:
        if client is self.client and not self.reconnecting:
            self.forget_missing()
            self.shell.flush()

    def forget_missing(self) -> None:
        """Members that did not come back after the server restarted: gone (fresh keys)."""
        now = self.shell.clock()
        for sid in list(self.missing):
            self.drop_member(sid, now)

    def finish(self) -> None:
        """The call is over: the counts of problems not shown one by one come now, then
        the final count, for scripts."""
        if self.grace is not None:
            self.grace.cancel()
        self.session.finish(self.shell.clock())
        while (event := self.session.next_event()) is not None:
            if isinstance(event, e2ee.PeerProblem):
                self.on_media_event(event)
        self.emit(self.stats())

    def on_verified(self, event: e2ee.MemberVerified) -> None:
        member = self._member(event.session_id, event.user)
        number = safety_number(self.session.crypto.identity_public, event.identity)
        fp = identity_fingerprint(event.identity)
        try:
            result = self.known_members.check(self.server_key, event.user, event.identity)
        except BangorError as exc:
            self.emit(ev.WarningEvent(str(exc)))  # the call goes on without pinning
            trust = "unknown"
        else:
            trust = result.trust.value
            if result.trust is Trust.CHANGED:
                self.emit(ev.KeyChanged(member, number, fp))
        self.emit(ev.MemberVerified(member, number, fp, trust))

    def stats(self) -> ev.Stats:
        m = self.session.stats(self.shell.clock())
        senders = {}
        for sender in m.senders:
            s = sender.jitter
            senders[str(sender.session_id)] = {
                "received": s.received,
                "played": s.played,
                "lost": s.lost,  # frames concealed in the end (after copies and FEC)
                "late": s.late,
                "dropped": s.dropped,  # played-out delay cut back (adaptive buffer)
                "recovered": s.recovered,  # lost packets rebuilt from later packets' copies
                "loss": round(sender.loss, 4),  # packets the network lost, 0..1
                "frame_ms": sender.frame_ms,  # the duration this sender chose
                "target_frames": s.target,  # in the sender's frames
                "delay_ms": s.delay_ms,
                "jitter_ms": s.jitter_ms,
                "kbps": round(sender.kbps, 1),
                "speaking": sender.speaking,  # a real frame played in the last 200 ms
            }
        paths: dict[str, dict[str, Any]] = {}
        for path in m.paths:
            paths[str(path.session_id)] = {
                "path": "direct" if path.direct else "relay",
                "rtt_ms": None if path.rtt is None else round(path.rtt * 1000, 2),
            }
        rtt = m.rtt if m.rtt is not None else self.client.rtt
        return ev.Stats(
            rtt_ms=None if rtt is None else round(rtt * 1000, 2),
            sent=m.sent,
            received=m.received,
            dropped=m.dropped,
            undecryptable=m.undecryptable,
            senders=senders,
            suppressed=m.suppressed,
            sending={
                "bitrate": m.bitrate,
                "redundancy": m.redundancy,
                "fec_loss_pct": m.fec_loss_pct,
                "reported_loss": round(m.reported_loss, 4),
            },
            paths=paths,
            direct_sent=m.direct_sent,
            direct_received=m.direct_received,
            input_level=round(m.input_level, 1),
        )


def _info(member: msg.Member) -> ev.MemberInfo:
    return ev.MemberInfo(member.session_id, member.user, member.nick)


@dataclass(frozen=True)
class CallCommand:
    """An in-call command (``/NAME ARGS``). ``usage`` names its arguments: "" takes
    none, ``[x]`` is optional (last), ``a|b`` is one of those words (any case). /help
    and the usage warnings show it; ``run`` gets the arguments once they fit."""

    usage: str
    about: str
    run: Callable[[_Call, list[str]], None]

    def check(self, name: str, args: list[str]) -> str:
        """Why ``args`` do not fit the usage ("" when they do)."""
        words = self.usage.split()
        if args and not words:
            return f"/{name} takes no argument"
        required = [word for word in words if not word.startswith("[")]
        fits = len(required) <= len(args) <= len(words) and all(
            arg.lower() in choices
            for spec, arg in zip(words, args, strict=False)
            if len(choices := spec.strip("[]").split("|")) > 1
        )
        return "" if fits else f"usage: /{name} {self.usage}"

    def describe(self, name: str) -> str:
        usage = f" {self.usage}" if self.usage else ""
        about = f" ({self.about})" if self.about else ""
        return f"/{name}{usage}{about}"


# Every in-call command: a new one is one entry here (and a method of _Call if need be).
COMMANDS: dict[str, CallCommand] = {
    "mute": CallCommand("", "", lambda call, args: call.set_audio(muted=True)),
    "unmute": CallCommand("", "", lambda call, args: call.set_audio(muted=False)),
    "deafen": CallCommand(
        "", "hear nobody, nobody hears you", lambda call, args: call.set_audio(deafened=True)
    ),
    "undeafen": CallCommand("", "", lambda call, args: call.set_audio(deafened=False)),
    "talk": CallCommand("[on|off]", "push-to-talk", _Call.talk),
    "ns": CallCommand(
        "[on|off]", "noise suppression", lambda call, args: call.process("noise_suppression", args)
    ),
    "aec": CallCommand(
        "[on|off]", "echo cancellation", lambda call, args: call.process("echo_cancellation", args)
    ),
    "agc": CallCommand("[on|off]", "gain control", lambda call, args: call.process("agc", args)),
    "volume": CallCommand(
        "NAME PERCENT",
        f"0..{MAX_VOLUME_PERCENT}, per speaker",
        lambda call, args: call.set_volume(args[0], args[1]),
    ),
    "audio": CallCommand("", "show the state", lambda call, args: call.emit(call.audio_state())),
    "invite": CallCommand("", "show the room's invite", lambda call, args: call.show_invite()),
    "rotate": CallCommand(
        "",
        "the room's owner: a new invite; the old one stops working",
        lambda call, args: call.spawn(call.rotate()),
    ),
    "kick": CallCommand(
        "NICK",
        "the room's owner: remove a member; the invite changes",
        lambda call, args: call.remove_member(args[0], ban=False),
    ),
    "ban": CallCommand(
        "NICK",
        "the room's owner: remove a member's account for good; the invite changes",
        lambda call, args: call.remove_member(args[0], ban=True),
    ),
    "bans": CallCommand(
        "",
        "the room's owner: the accounts banned from the room",
        lambda call, args: call.spawn(call.show_bans()),
    ),
    "unban": CallCommand(
        "ACCOUNT",
        "the room's owner: let a banned account join again",
        lambda call, args: call.spawn(call.unban(args[0])),
    ),
    "help": CallCommand("", "", lambda call, args: call.emit(ev.Notice(command_help()))),
}


def command_help() -> str:
    """The /help text: every command, then how chat lines go."""
    commands = ", ".join(command.describe(name) for name, command in COMMANDS.items())
    return (
        f"commands: {commands}; other lines are chat "
        "(start with // to send a line beginning with /)"
    )
