"""What `bangor join` and `bangor room create` do, over the client pieces.

Interfaces get events through a callback; this module never prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bangor.client import events as ev
from bangor.client.control import ControlClient
from bangor.client.identity import KnownMembers, Trust, load_identity
from bangor.client.media import MediaShell
from bangor.client.pinning import KnownServers
from bangor.errors import (
    AudioError,
    BangorError,
    BusyError,
    ConnectError,
    DeviceError,
    DroppedError,
    PasswordRequiredError,
    RefusedError,
    RemoteProtocolError,
)
from bangor.io.devices import NullSink, SilenceSource, Sink, Source, open_sink, open_source
from bangor.io.recording import OpusFileSink
from bangor.media import events as me
from bangor.media.session import MediaSession
from bangor.settings import MAX_CHAT_TEXT, ClientSettings
from bangor.wire import control as msg
from bangor.wire import e2ee
from bangor.wire.direct import PathChanged
from bangor.wire.e2ee import RoomCrypto
from bangor.wire.identity import identity_fingerprint, safety_number
from bangor.wire.invite import SECRET_SIZE, Invite
from bangor.wire.media import derive_media_keys

Emit = Callable[[ev.Event], None]

MAX_VOLUME_PERCENT = 400
# In-call commands that switch a stage of the capture chain: the stage's keyword.
PROCESSING_COMMANDS = {"ns": "noise_suppression", "aec": "echo_cancellation", "agc": "agc"}
MIN_LOGIN_RETRY = 0.25  # seconds: even a server that says "now" is not asked again at once
# A connection the server closed before welcome: try again after this, doubling up to the max.
DROPPED_RETRY = 0.25
MAX_DROPPED_RETRY = 2.0
COMMAND_HELP = (
    "commands: /mute, /unmute, /deafen, /undeafen, /talk [on|off] (push-to-talk), "
    "/ns, /aec, /agc [on|off] (noise suppression, echo cancellation, gain control), "
    "/volume NAME PERCENT (0..400), /audio (show state), /help; "
    "other lines are chat (start with // to send a line beginning with /)"
)


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
            welcome = await client.login(login.user, password or "", login.nick)
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
                f"server {host}:{port} is too busy to check our login; gave up after "
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


def retry_wait(retry_after: float) -> float:
    """Seconds to wait before trying a refused login again: the server's hint plus up
    to half as much again at random, so refused clients do not all come back at once."""
    hint = max(retry_after, MIN_LOGIN_RETRY)
    return hint + random.uniform(0, hint / 2)


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

    def pin(client: ControlClient) -> None:
        if KnownServers.default().check(host, port, client.server_fingerprint):
            warn(f"first connection to {host}:{port}; trusting its key from now on")

    client, _ = await connect_and_login(host, port, login, check=pin)
    try:
        created = await client.create_room(name, max_bitrate or 0)
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

    async with contextlib.AsyncExitStack() as stack:
        with contextlib.ExitStack() as opening:  # one that fails closes the others
            # No sound card (or no PortAudio): the call still works, silent on that side.
            source: Source
            try:
                source = open_source(source_spec, samples)
            except DeviceError as exc:
                emit(ev.ErrorEvent(0, f"{exc}; joining without a microphone"))
                source = SilenceSource(samples)
            opening.callback(source.close)
            sink: Sink
            try:
                sink = open_sink(sink_spec, samples)
            except DeviceError as exc:
                emit(ev.ErrorEvent(0, f"{exc}; joining without sound output"))
                sink = NullSink(samples)
            opening.callback(sink.close)
            recorder = None
            if record_path is not None:
                recorder = OpusFileSink(record_path, frame_ms=settings.frame_ms)
                opening.callback(_close_recorder, recorder, emit)
            devices = opening.pop_all()
        reason = "left the room"
        stack.callback(lambda: emit(ev.Left(reason)))  # the reason as it is by then, last
        stack.enter_context(devices)
        try:
            client, welcome = await connect_and_login(
                invite.host, invite.port, login, settings, check=pin
            )
            stack.push_async_callback(client.leave)
            joined = await client.join_room(invite.room_id.hex())
            if joined.you.user != login.user:
                # Members check each other's names against the server's word; a server
                # that renamed us consistently would pass that check, so we check too.
                raise RemoteProtocolError(
                    f"the server calls us {joined.you.user!r}, not {login.user!r}; not joining"
                )
            shell = MediaShell(
                source,
                sink,
                settings.frame_ms,
                recorder=recorder,
                on_problem=lambda message: emit(ev.ErrorEvent(0, message)),
            )
            stack.callback(shell.stop)
            await shell.connect(invite.host, invite.port)
            crypto = RoomCrypto(
                room_id=invite.room_id,
                secret=invite.secret,
                session_id=welcome.session_id,
                user=login.user,
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
            call = _Call(
                client,
                session,
                shell,
                emit,
                known_members,
                KnownServers.key(invite.host, invite.port),
                {m.session_id: _info(m) for m in joined.members},
            )
            shell.on_output = call.drain
            stack.callback(call.finish)  # before the shell stops and the client leaves
            shell.start(session, [(m.session_id, m.user) for m in joined.members])
            emit(
                ev.Joined(
                    joined.room_id, joined.name, _info(joined.you), tuple(call.members.values())
                )
            )
            reason = await call.run(stop, duration, read_stdin, lines)
        except BangorError as exc:
            reason = str(exc)
            raise


def _close_recorder(recorder: Sink, emit: Emit) -> None:
    try:
        recorder.close()
    except BangorError as exc:
        emit(ev.ErrorEvent(0, str(exc)))


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

        async def control() -> None:
            while True:
                inputs.put_nowait(("control", await self.client.events.get()))

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
            loop.create_task(control()),
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
                    if isinstance(item, BangorError):
                        # A refused request: the call goes on. Otherwise the session
                        # ended (a fatal error, or the connection): so does the call.
                        if isinstance(item, RefusedError) and self.client.closed is None:
                            self.emit(ev.ErrorEvent(item.code, str(item)))
                            continue
                        raise self.client.closed or item
                    self.on_message(item, self.shell.clock())
                elif kind == "line":
                    self.on_line(item)
                else:
                    self.emit(self.stats())
        finally:
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
        session = self.session
        name, args = (words[0].lower(), words[1:]) if words else ("help", [])
        if name in ("mute", "unmute") and not args:
            session.muted = name == "mute"
        elif name in ("deafen", "undeafen") and not args:
            session.deafened = name == "deafen"
        elif name == "talk" and len(args) <= 1 and set(args) <= {"on", "off"}:
            session.talking = not session.talking if not args else args[0] == "on"
            if not session.settings.push_to_talk:
                self.emit(ev.Notice("push-to-talk is off (join with --ptt): /talk changes nothing"))
        elif name in PROCESSING_COMMANDS and len(args) <= 1 and set(args) <= {"on", "off"}:
            stage = PROCESSING_COMMANDS[name]
            on = not getattr(session.processing, stage) if not args else args[0] == "on"
            try:
                session.set_processing(**{stage: on})
            except AudioError as exc:  # its library is missing: the call goes on without
                self.emit(ev.ErrorEvent(0, str(exc)))
                return
        elif name == "volume" and len(args) == 2:
            self.set_volume(args[0], args[1])
            return
        elif name == "audio" and not args:
            pass
        else:
            self.emit(ev.Notice(COMMAND_HELP))
            return
        self.emit(self.audio_state())

    def set_volume(self, who: str, percent_text: str) -> None:
        member = self.find_member(who)
        try:
            percent = int(percent_text.removesuffix("%"))
        except ValueError:
            percent = -1
        if member is None:
            self.emit(ev.ErrorEvent(0, f"no member called {who!r} in this room"))
        elif not 0 <= percent <= MAX_VOLUME_PERCENT:
            self.emit(ev.ErrorEvent(0, f"volume must be 0..{MAX_VOLUME_PERCENT} %"))
        else:
            self.session.volumes[member.session_id] = percent / 100
            self.emit(self.audio_state())

    def find_member(self, who: str) -> ev.MemberInfo | None:
        """By nick, account name or session id (hex), in that order."""
        folded = who.casefold()
        for match in (
            lambda m: m.nick.casefold() == folded,
            lambda m: m.user.casefold() == folded,
            lambda m: f"{m.session_id:08x}" == folded,
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
            self.emit(ev.ErrorEvent(0, f"chat line too long (over {MAX_CHAT_TEXT} characters)"))
        elif line.strip():
            self.client.send_chat(self.session.seal_chat(line))

    def on_message(self, message: msg.ServerMessage, now: float) -> None:
        session = self.session
        if isinstance(message, msg.MemberJoined):
            member = message.member
            info = self.members[member.session_id] = _info(member)
            session.member_joined(member.session_id, member.user, now)
            self.emit(ev.MemberJoined(info))
        elif isinstance(message, msg.MemberLeft):
            gone = self.members.pop(message.session_id, None)
            session.member_left(message.session_id, now)
            if gone is not None:
                self.emit(ev.MemberLeft(gone))
        elif isinstance(message, msg.PeerReceived):
            session.receive_peer(message.sender, message.data, now)
        elif isinstance(message, msg.Chat):
            session.receive_chat(message.sender, message.data, now)
        self.shell.flush()  # its datagrams and timer; then drain() below

    def drain(self) -> None:
        """Send the session's pair messages and show what it found."""
        for to, data in self.session.peer_messages_to_send():
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
                ev.ErrorEvent(
                    0,
                    f"{event.missing} chat message(s) from {member.nick} never arrived "
                    "(withheld by the server?)",
                )
            )
        elif isinstance(event, e2ee.PeerProblem):
            member = self._member(event.session_id, event.user or "?")  # it may have left
            self.emit(ev.ErrorEvent(0, f"end-to-end problem with {member.nick}: {event.message}"))
        elif isinstance(event, me.DirectPathRefused):
            member = self._member(event.session_id)
            self.emit(ev.ErrorEvent(0, f"direct path to {member.nick}: {event.message}"))
        elif isinstance(event, me.RelayPathUp):
            self.emit(ev.PathChanged("relay"))
        elif isinstance(event, PathChanged):
            rtt = None if event.rtt is None else round(event.rtt * 1000, 2)
            nick = self._member(event.session_id).nick
            self.emit(ev.PathChanged(event.path, event.session_id, rtt, nick))

    def finish(self) -> None:
        """The call is over: the counts of problems not shown one by one come now, then
        the final count, for scripts."""
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
            self.emit(ev.ErrorEvent(0, str(exc)))  # the call goes on without pinning
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
            senders[f"{sender.session_id:08x}"] = {
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
            paths[f"{path.session_id:08x}"] = {
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
