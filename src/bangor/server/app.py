"""The server's asyncio shell: Noise control sessions over TCP and the UDP relay.

Protocol logic lives in sans-I/O pieces (``wire.session`` over ``wire.noise`` and
``wire.control``, ``server.relay``, ``server.rooms``); this module moves bytes between
them and the sockets, does the work behind each request (login, store, rooms), and turns
every failure into an ``Error`` message and a close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from bangor import __version__
from bangor.address import format_address
from bangor.errors import (
    AccountNotFoundError,
    AuthError,
    BadNameError,
    BangorError,
    BusyError,
    CloseCode,
    LimitError,
    NotFoundError,
    PasswordRequiredError,
    RemoteProtocolError,
    StoreError,
    StoreUnavailableError,
    ThrottledError,
)
from bangor.keyfile import load_or_create_key
from bangor.server.admission import Admission, Closing, Stage
from bangor.server.counters import ServerCounts
from bangor.server.database import Database
from bangor.server.hashing import return_hash_memory
from bangor.server.limits import Kind, SessionLimits, UserBuckets, Verdict, user_rates
from bangor.server.lockout import shown_name
from bangor.server.notify import RemovalListener
from bangor.server.relay import Address, Relay, UdpAddress, WebAddress
from bangor.server.rooms import RoomRegistry, unique_nick
from bangor.server.sdnotify import notify
from bangor.server.sqlite import secure_data_dir
from bangor.server.store import Account, Room, Store, check_user_name, clash_warning
from bangor.settings import MAX_NAME, ServerSettings
from bangor.text import check_name, user_key
from bangor.wire import control as msg
from bangor.wire.media import MEDIA_SECRET_SIZE, MediaKeys, derive_media_keys
from bangor.wire.noise import fingerprint, format_fingerprint, public_key
from bangor.wire.session import ENDED, ControlSession, RequestReceived, Role, State
from bangor.wire.stun import BindingResponder

if TYPE_CHECKING:
    from bangor.server.cluster import Cluster
    from bangor.server.web import WebEndpoint, WebOptions

log = logging.getLogger("bangor.server")

READ_SIZE = 65536
KEY_FILE = "server.key"
HELLO = msg.tag(msg.Hello)
_TOO_MANY = {
    Kind.JOIN: "too many joins",
    Kind.PEER: "too many peer messages",
    Kind.CHAT: "too many chat messages",
}
STUN_FIRST_BYTE_LIMIT = 0x40
RESUME_LABEL = b"bangor resume ticket v1"
EPOCH_SIZE = 8
RESUME_MAC_SIZE = msg.RESUME_TICKET_SIZE - 4 - EPOCH_SIZE
ACCOUNTS_UNAVAILABLE = "accounts unavailable, try again"
# A wrong join token reads like an unknown room: an old invite learns nothing.
NO_SUCH_ROOM = "no such room (or the invite is out of date)"
ACCOUNT_REMOVED = "your account was removed"
MIN_RESTART_WINDOW = 0.25  # seconds: even two clients need not come back in the same instant
# Room requests the metrics count, by type (their tags name them, as refusals' refs do).
ROOM_REQUESTS: dict[type[object], str] = {
    message: msg.tag(message) for message in msg.ROOM_REQUESTS
}
_ROOM_TAGS = frozenset(ROOM_REQUESTS.values())
_perf_ns = time.perf_counter_ns


class SessionClosed(Exception):
    """Raised inside a connection to end it after a fatal Error was queued."""


class ControlReader(Protocol):
    """What a :class:`Connection` reads its client's bytes from: a TCP stream, or the
    control stream of a WebTransport session (server/web.py)."""

    async def read(self, n: int = -1) -> bytes: ...


class ControlTransport(Protocol):
    def get_write_buffer_size(self) -> int: ...

    def abort(self) -> None: ...


class ControlWriter(Protocol):
    """What a :class:`Connection` writes to (asyncio.StreamWriter for TCP)."""

    @property
    def transport(self) -> ControlTransport: ...

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...


class WebSink(Protocol):
    """Where media for a :class:`WebAddress` goes: the WebTransport shell."""

    def send_datagram(self, packet: bytes, dest: WebAddress) -> None: ...

    def flush(self) -> None:
        """Send what :meth:`send_datagram` queued."""


def send_media(
    out: list[tuple[bytes, Address]], udp: asyncio.DatagramTransport | None, web: WebSink | None
) -> None:
    """Send the relay's output: UDP addresses through the socket, WebTransport sessions
    through their QUIC connections."""
    for packet, dest in out:
        if isinstance(dest, WebAddress):
            if web is not None:
                web.send_datagram(packet, dest)
        elif udp is not None:
            udp.sendto(packet, dest)
    if web is not None:
        web.flush()


class RelayProtocol(asyncio.DatagramProtocol):
    """Thin glue from the UDP socket to the sans-I/O relay and STUN responder."""

    def __init__(
        self,
        relay: Relay,
        stun: BindingResponder,
        web: WebSink | None = None,
        counts: ServerCounts | None = None,
    ) -> None:
        self.relay = relay
        self.stun = stun
        self.transport: asyncio.DatagramTransport | None = None
        self.web = web  # set when the server also speaks WebTransport
        # With counts.timing: how long forwarding one voice datagram takes, open to the
        # last sendto, into counts.forward_times.
        self.counts = counts if counts is not None else ServerCounts()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: UdpAddress) -> None:
        transport = self.transport
        if transport is None:
            return
        now = time.monotonic()
        if data and data[0] < STUN_FIRST_BYTE_LIMIT:  # media starts 0xC1, STUN below 0x40
            answer = self.stun.datagram_received(data, addr, now)
            if answer is not None:
                transport.sendto(answer, addr)
            return
        counts = self.counts
        timing = counts.timing
        start = _perf_ns() if timing else 0
        relay = self.relay
        stats = relay.stats
        forwarded = stats.forwarded
        relay.datagram_received(data, addr, now)
        web = self.web
        if web is None:
            for packet, dest in relay.datagrams_to_send():
                transport.sendto(packet, dest)  # type: ignore[arg-type]  # no WebAddress without --web
        else:
            send_media(relay.datagrams_to_send(), transport, web)
        if timing and stats.forwarded != forwarded:  # voice went on (not drops, keepalives)
            counts.forward_times.observe(_perf_ns() - start)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable from a client that went away; nothing to do.
        log.debug("udp error: %s", exc)


@dataclass(eq=False)
class Connection:
    """One client's control session: the shell over its :class:`ControlSession`.

    The session says what may happen (states, which message when, ping, idle timeout);
    this shell does the work a request needs (login, store, rooms, relay) and answers
    through the session. ``session_id``, ``user`` and ``room_id`` are the registry's view
    of the connection, not protocol state.
    """

    server: Server
    reader: ControlReader
    writer: ControlWriter
    session: ControlSession
    peer: str  # address:port, for the log
    source: str  # the address alone: the unit of per-source limits
    session_id: int = 0
    user_id: int | None = None
    user: str = ""  # the account's name as stored
    user_key: str = ""  # and as compared (bangor.text.user_key)
    nick: str = ""  # as the room knows us: made unique there (rooms.unique_nick)
    wanted_nick: str = ""  # as asked for at hello (or the user name)
    room_id: str | None = None
    media_secret: bytes = b""
    limits: SessionLimits | None = None  # made at the first metered request

    @property
    def closing(self) -> bool:
        return self.session.state in ENDED

    # --- sending --------------------------------------------------------------

    def send(self, message: msg.ServerMessage) -> None:
        """A reply, or a push from another member's session (dropped once we are closing)."""
        self.session.send(message)
        self.flush()

    def flush(self) -> None:
        data = self.session.data_to_send()
        if not data or self.writer.is_closing():
            return
        self.writer.write(data)
        # A client that stops reading must not make the server buffer without bound.
        if self.writer.transport.get_write_buffer_size() > self.server.settings.max_control_backlog:
            log.info("session %08x: dropped, not reading its control channel", self.session_id)
            self.server.counts.backlog_drops += 1
            self.session.close()
            self.writer.transport.abort()

    def fail(
        self,
        code: CloseCode,
        message: str,
        ref: str = "",
        retry_after: float = 0.0,
        location: str = "",
    ) -> None:
        """End the session with a fatal Error (if it can still carry one)."""
        self.session.fail(code, message, ref, retry_after, location)
        self.flush()

    def refuse(self, code: CloseCode, message: str, ref: str) -> None:
        """A non-fatal refusal of one request; ``ref`` names the request's tag."""
        if ref in _ROOM_TAGS:
            self.server.counts.room_refusals[ref] += 1
        self.session.refuse(code, message, ref)
        self.flush()

    def shut(self, closing: Closing[Connection]) -> None:
        """Admission closes us before login: a deadline passed, or a newer connection
        needed our place. A login under way finds ``closing`` set and registers nothing."""
        if closing.reason.timed_out:
            self.fail(CloseCode.TIMEOUT, "session timed out")  # sent only after the handshake
            self.writer.close()
        else:
            self.session.close()
            self.writer.transport.abort()

    # --- the loop -------------------------------------------------------------

    async def run(self) -> None:
        admission = self.server.admission
        loop = asyncio.get_running_loop()
        session = self.session
        try:
            while not self.closing:
                # Before login the timer is None: admission's deadlines end this wait.
                when = session.get_timer()
                try:
                    async with asyncio.timeout_at(when):
                        data = await self.reader.read(READ_SIZE)
                except TimeoutError:
                    assert when is not None
                    # The loop may end a wait a clock tick early; the timer is due all the same.
                    session.handle_timer(max(loop.time(), when))
                else:
                    if data:
                        session.receive_data(data, loop.time())
                    else:
                        session.receive_eof(loop.time())
                if self.session_id == 0 and session.handshake_messages_read:
                    stage = Stage.GREETED if session.state is State.HANDSHAKE else Stage.HANDSHAKEN
                    if stage is Stage.HANDSHAKEN and admission.stage(self) is Stage.GREETED:
                        self.server.counts.handshakes_completed += 1
                    admission.progressed(self, stage, loop.time())
                while (event := session.next_event()) is not None:
                    if isinstance(event, RequestReceived):
                        await self.handle(event.message)
                    if self.session_id != 0:
                        admission.done(self)  # logged in: no longer counts
                    if self.closing:
                        break
                self.flush()
        except SessionClosed:
            pass
        except RemoteProtocolError as exc:
            # The session has queued the fatal error (when the channel can carry one).
            if self.session_id == 0:
                # A flood of garbage must not flood the log: admission's summary counts it.
                self.server.handshake_failed(self)
            # repr: the text can carry the client's bytes (decoder errors).
            log.log(
                logging.DEBUG if self.session_id == 0 else logging.INFO,
                "session from %s: protocol error: %r",
                self.peer,
                str(exc),
            )
        except (ConnectionError, OSError):
            pass
        except Exception as exc:  # the server keeps serving everyone else
            log.error("session from %s: internal error (%s)", self.peer, type(exc).__name__)
            log.debug("internal error", exc_info=True)
            self.fail(CloseCode.INTERNAL, "internal server error")
        finally:
            admission.done(self)
            self.server.drop(self)
            with contextlib.suppress(Exception):
                self.flush()
                self.writer.close()

    # --- messages -------------------------------------------------------------

    async def handle(self, message: msg.ClientMessage) -> None:
        """Do what a request delivered by the session needs; the session has checked that
        it may come now (ping, bye and a leave outside a room never get here)."""
        with contextlib.suppress(RequestRefused):  # refused already, with its reason
            await self.dispatch(message)

    async def dispatch(self, message: msg.ClientMessage) -> None:
        request = ROOM_REQUESTS.get(type(message))
        if request is not None:
            self.server.counts.room_requests[request] += 1
        if isinstance(message, msg.Hello):
            now = asyncio.get_running_loop().time()
            self.server.admission.progressed(self, Stage.LOGGING_IN, now)
            await self.on_hello(message)
        elif isinstance(message, msg.PeerSend):
            self.on_peer(message)
        elif isinstance(message, msg.SendChat):
            self.on_chat(message)
        elif isinstance(message, msg.JoinRoom):
            await self.on_join(message)
        elif isinstance(message, msg.LeaveRoom):
            self.on_leave()
        elif isinstance(message, msg.CreateRoom):
            await self.on_create(message)
        elif isinstance(message, msg.ListRooms):
            await self.on_list()
        elif isinstance(message, msg.RotateRoom):
            await self.on_rotate(message)
        elif isinstance(message, msg.DeleteRoom):
            await self.on_delete(message)
        elif isinstance(message, msg.KickMember):
            await self.on_kick(message)
        elif isinstance(message, msg.UnbanMember):
            await self.on_unban(message)
        elif isinstance(message, msg.ListBans):
            await self.on_list_bans(message)

    async def on_hello(self, hello: msg.Hello) -> None:
        # The session refused an unsupported version already.
        try:  # before the login: a name shown to others must not drive their terminals
            check_name(hello.nick, "nickname", MAX_NAME)
        except BadNameError as exc:
            log.info("session from %s: nickname refused", self.peer)
            self.server.counts.login_failures["bad_nickname"] += 1
            self.fail(CloseCode.NOT_ALLOWED, str(exc), ref=HELLO)
            return
        failures = self.server.counts.login_failures
        try:
            await self.login(hello)
        except PasswordRequiredError as exc:
            failures["password_required"] += 1
            self.fail(CloseCode.PASSWORD_REQUIRED, str(exc), ref=HELLO)
            return
        except ThrottledError as exc:
            log.info("login throttled for %s from %s", shown_name(hello.user), self.peer)
            failures["throttled"] += 1
            self.fail(CloseCode.THROTTLED, str(exc), ref=HELLO, retry_after=exc.retry_after)
            return
        except BusyError as exc:
            log.debug("login from %s: %s", self.peer, exc)
            failures["busy"] += 1
            self.fail(CloseCode.BUSY, str(exc), ref=HELLO, retry_after=exc.retry_after)
            return
        except StoreUnavailableError as exc:
            # Retryable: clients wait it out as they do a busy server.
            log.warning("login from %s: accounts database unreachable (%s)", self.peer, exc)
            failures["unavailable"] += 1
            retry = self.server.settings.store_retry_after
            self.fail(CloseCode.BUSY, ACCOUNTS_UNAVAILABLE, ref=HELLO, retry_after=retry)
            return
        except AuthError as exc:
            # The store logs failures for names it knows; a name may be a mistyped password.
            log.debug("login refused for %s from %s", shown_name(hello.user), self.peer)
            failures["bad_credentials"] += 1
            self.fail(CloseCode.AUTH_FAILED, str(exc), ref=HELLO)
            return
        except LimitError as exc:
            log.info("login for %s from %s refused: %s", shown_name(hello.user), self.peer, exc)
            failures["limit"] += 1
            self.fail(CloseCode.LIMIT, str(exc), ref=HELLO)
            return
        log.info("session %08x: %s logged in from %s", self.session_id, self.user, self.peer)
        self.server.counts.logins += 1
        ticket = self.server.resume_ticket(self.session_id, self.user)
        self.send(msg.Welcome(self.session_id, self.user, __version__, self.media_secret, ticket))

    def check_capacity(self, key: str) -> None:
        """Refuse (LimitError) a login the server has no room for; costs no hash.
        ``key``: the user name's :func:`user_key`."""
        settings = self.server.settings
        if len(self.server.connections) >= settings.max_sessions:
            raise LimitError("server is full")
        sessions = sum(1 for conn in self.server.connections.values() if conn.user_key == key)
        if sessions >= settings.max_sessions_per_user:
            raise LimitError(
                f"too many sessions for this user (the limit is {settings.max_sessions_per_user})"
            )

    async def login(self, hello: msg.Hello) -> None:
        """Log ``hello`` in and register the session, or raise why not.

        Cheapest checks first: capacity (sessions in all and of this user), then one
        login in flight per name, then the store (lock, hashing pool, count, hash).
        """
        server = self.server
        key = user_key(hello.user)  # Alice and alice are one account
        self.check_capacity(key)
        if key in server.logins_in_flight:
            # BUSY, not THROTTLED: nothing was counted, and clients try BUSY again on their own
            # (two devices of one user may well log in at the same moment).
            retry = server.store.hashes.admission.retry_after()
            raise BusyError(
                f"another login for this name is being checked; try again in {retry:.1f} s",
                retry,
            )
        server.logins_in_flight.add(key)
        try:
            account = await self.check_login(hello)
            if self.closing:  # the client hung up while the password was being checked
                raise SessionClosed
            self.check_capacity(key)  # others may have logged in meanwhile
            # Known by the name as stored, whatever case the login used.
            self.user_id, self.user, self.user_key = account.id, account.name, key
            self.nick = self.wanted_nick = hello.nick or account.name
            self.media_secret = secrets.token_bytes(MEDIA_SECRET_SIZE)
            wanted = server.resumed_id(hello.resume, account.name)
            self.session_id = server.register(self, derive_media_keys(self.media_secret), wanted)
        finally:
            server.logins_in_flight.discard(key)

    async def check_login(self, hello: msg.Hello) -> Account:
        """The account ``hello`` logs in to; AuthError (or a subclass) if it may not."""
        store = self.server.store
        try:  # before a password is asked for: no account can have a name that breaks it
            check_user_name(hello.user, self.server.settings)
        except StoreError as exc:
            raise AuthError(str(exc)) from None
        if self.server.settings.open:
            return await store.open_account(hello.user, self.source)  # any name, no password
        if not hello.password:
            # Asked before a password is typed; not counted as a failed login.
            raise PasswordRequiredError("this server needs a password")
        return await store.log_in(hello.user, hello.password, time.time(), self.source)

    async def on_create(self, create: msg.CreateRoom) -> None:
        assert self.user_id is not None
        ref = msg.tag(msg.CreateRoom)
        settings = self.server.settings
        try:
            room = await self.server.store.create_room(
                self.user_id,
                create.name,
                settings.max_rooms_per_user,
                # 0 on the wire is "no cap"; 1..5999 reach the store, which refuses them.
                create.max_bitrate or None,
                max_total=settings.open_max_rooms if settings.open else None,
            )
        except LimitError as exc:
            self.refuse(CloseCode.LIMIT, str(exc), ref)
            return
        except StoreUnavailableError as exc:
            log.warning("session %08x: database unreachable (%s)", self.session_id, exc)
            self.refuse(CloseCode.BUSY, "rooms unavailable, try again", ref)
            return
        except StoreError as exc:  # duplicate, bad name or cap: the store says which rule broke
            self.refuse(CloseCode.NOT_ALLOWED, str(exc), ref)
            return
        cap = f" (bitrate cap {room.max_bitrate} bit/s)" if room.max_bitrate else ""
        log.info("session %08x: created room %s%s", self.session_id, room.id, cap)
        self.send(msg.RoomCreated(room.id, room.name))

    def admit(self, kind: Kind) -> bool:
        """Whether this request is within the session's and its account's rates.

        False: refuse or drop it. Over a limit for too long: a fatal THROTTLED error
        and SessionClosed.
        """
        assert self.user_id is not None
        now = self.server.clock()
        limits = self.limits
        if limits is None:
            limits = self.limits = SessionLimits(
                self.server.settings, self.server.user_limits, self.user_id, now
            )
        first = limits.over_since(kind) is None
        verdict = limits.check(kind, now)
        if verdict is Verdict.ALLOW:
            return True
        counts = self.server.counts
        counts.throttled[kind.value] += 1
        if verdict is Verdict.CLOSE:
            counts.throttle_closed[kind.value] += 1
            log.info("session %08x: closed, over its %s rate for too long", self.session_id, kind)
            self.fail(CloseCode.THROTTLED, f"{_TOO_MANY[kind]} for too long; session closed")
            raise SessionClosed
        if first:  # one line per run over the limit, not one per request
            log.info("session %08x: over its %s rate", self.session_id, kind)
        return False

    async def on_join(self, join: msg.JoinRoom) -> None:
        ref = msg.tag(msg.JoinRoom)
        if not self.admit(Kind.JOIN):
            self.refuse(CloseCode.THROTTLED, f"{_TOO_MANY[Kind.JOIN]}; wait a moment", ref)
            return
        with self.store_refusals(ref, NO_SUCH_ROOM):
            room = await self.server.store.get_room(join.room_id)
        if self.closing:
            return
        if room.token_hash is not None and not hmac.compare_digest(
            token_hash(join.token), room.token_hash
        ):
            # The same words as an unknown room: an old invite tells its holder nothing.
            log.info("session %08x: join of room %s with a wrong token", self.session_id, room.id)
            self.refuse(CloseCode.ROOM_NOT_FOUND, NO_SUCH_ROOM, ref)
            return
        assert self.user_id is not None
        with self.store_refusals(ref):
            banned = await self.server.store.is_banned(room.id, self.user_id)
        if self.closing:
            return
        if banned:
            log.info("session %08x: banned from room %s", self.session_id, room.id)
            self.refuse(CloseCode.REMOVED, "the room's owner banned this account from it", ref)
            return
        cluster = self.server.cluster
        if cluster is not None:
            try:
                node = await cluster.locate(room.id)
            except StoreUnavailableError as exc:
                log.warning("session %08x: no node for room %s (%s)", self.session_id, room.id, exc)
                self.refuse(CloseCode.BUSY, "rooms unavailable, try again", ref)
                return
            if self.closing:
                return
            if node != cluster.node_id:
                log.info("session %08x: room %s is on %s", self.session_id, room.id, node)
                self.fail(CloseCode.MOVED, f"the room is served by {node}", ref, location=node)
                raise SessionClosed
        # Check for room before leaving the current one, so a refusal changes nothing.
        if not self.server.rooms.has_room_for(room.id, self.session_id):
            self.refuse(CloseCode.ROOM_FULL, "room is full", ref)
            return
        if self.room_id is not None:
            self.server.leave_room(self)
        members = self.server.join_room(self, room.id, room.name)
        self.send(msg.RoomJoined(room.id, room.name, self.member(), members, room.max_bitrate or 0))

    # --- room management (PROTOCOL.md 3.15) --------------------------------------

    def admit_room_request(self, ref: str) -> None:
        """Management is metered with joins (3.12); over the rate: refused (RequestRefused)."""
        if not self.admit(Kind.JOIN):
            self.refuse(CloseCode.THROTTLED, "too many room requests; wait a moment", ref)
            raise RequestRefused

    @contextlib.contextmanager
    def store_refusals(self, ref: str, not_found: str = "no such room") -> Iterator[None]:
        """A store failure refuses the request ``ref`` (and raises RequestRefused): a room
        that is not there, or a database that cannot be reached."""
        try:
            yield
        except AccountNotFoundError as exc:  # an account the owner named (kick, unban)
            self.refuse(CloseCode.NOT_ALLOWED, str(exc), ref)
            raise RequestRefused from None
        except NotFoundError:
            self.refuse(CloseCode.ROOM_NOT_FOUND, not_found, ref)
            raise RequestRefused from None
        except StoreUnavailableError as exc:
            log.warning("session %08x: database unreachable (%s)", self.session_id, exc)
            self.refuse(CloseCode.BUSY, "rooms unavailable, try again", ref)
            raise RequestRefused from None

    async def owned_room(self, room_id: str, ref: str) -> Room | None:
        """The room, if it exists and we own it; else refused (None, or RequestRefused)."""
        self.admit_room_request(ref)
        with self.store_refusals(ref):
            room = await self.server.store.get_room(room_id)
        if self.closing:
            return None
        if room.owner_id != self.user_id:
            self.refuse(CloseCode.NOT_ALLOWED, "only the room's owner may do that", ref)
            return None
        return room

    async def on_list(self) -> None:
        ref = msg.tag(msg.ListRooms)
        self.admit_room_request(ref)
        with self.store_refusals(ref):
            owned = await self.server.store.list_rooms(self.user_id)
        if self.closing:
            return
        rooms = self.server.rooms
        self.send(
            msg.RoomList(
                [
                    msg.RoomInfo(
                        room.id, room.name, room.owner_name, len(live.members) if live else 0
                    )
                    for room in owned[: msg.MAX_LISTED_ROOMS]
                    for live in (rooms.get(room.id),)
                ]
            )
        )

    async def on_rotate(self, rotate: msg.RotateRoom) -> None:
        ref = msg.tag(msg.RotateRoom)
        room = await self.owned_room(rotate.room_id, ref)
        if room is None:
            return
        with self.store_refusals(ref):
            await self.server.store.set_room_token(room.id, token_hash(rotate.token))
        log.info("session %08x: rotated room %s", self.session_id, room.id)
        self.send(msg.RoomRotated(room.id))
        # Every member (we too, if in the room) takes the secret that derives the token.
        live = self.server.rooms.get(room.id)
        for member in list(live.members.values()) if live is not None else []:
            member.send(msg.TokenChanged(rotate.token))

    async def on_delete(self, delete: msg.DeleteRoom) -> None:
        ref = msg.tag(msg.DeleteRoom)
        if self.room_id == delete.room_id:
            self.refuse(CloseCode.NOT_ALLOWED, "leave the room before deleting it", ref)
            return
        room = await self.owned_room(delete.room_id, ref)
        if room is None:
            return
        with self.store_refusals(ref):
            await self.server.store.delete_room(room.id)  # its bans and placement go with it
        # Members on this node now; in a cluster, those on the room's node at its next
        # heartbeat (Server.beat).
        ended = self.server.end_room(room.id)
        log.info("session %08x: deleted room %s (%d members)", self.session_id, room.id, ended)
        self.send(msg.RoomDeleted(room.id))

    async def on_kick(self, kick: msg.KickMember) -> None:
        ref = msg.tag(msg.KickMember)
        if kick.session_id == 0 and not kick.user:
            self.refuse(CloseCode.NOT_ALLOWED, "name a member to remove", ref)
            return
        if kick.session_id == self.session_id:
            self.refuse(CloseCode.NOT_ALLOWED, "you cannot remove yourself; leave instead", ref)
            return
        room = await self.owned_room(kick.room_id, ref)
        if room is None:
            return
        live = self.server.rooms.get(room.id)
        target = live.members.get(kick.session_id) if live and kick.session_id else None
        if kick.session_id and target is None:
            self.refuse(CloseCode.NOT_ALLOWED, "that member is not in the room", ref)
            return
        user = target.user if target is not None else kick.user
        if kick.ban:
            if self.server.settings.open:
                # Everyone on an open server is the same account: a ban would shut out all.
                self.refuse(
                    CloseCode.NOT_ALLOWED,
                    "an open server has no accounts to ban; a kick (which rotates the room) "
                    "keeps the member out",
                    ref,
                )
                return
            if user_key(user) == self.user_key:
                self.refuse(CloseCode.NOT_ALLOWED, "you cannot ban your own account", ref)
                return
            with self.store_refusals(ref):
                await self.server.store.ban(room.id, user)
        # A ban, or a kick by account name, removes every session of the account in the
        # room; a kick of a session that one.
        if target is not None and not kick.ban:
            removed = [target]
        else:
            present = list(live.members.values()) if live is not None else []
            removed = [m for m in present if m.user_key == user_key(user) and m is not self]
        why = (
            "banned from the room by its owner"
            if kick.ban
            else "removed from the room by its owner"
        )
        for member in removed:
            self.server.remove(member, why)
        log.info(
            "session %08x: %s %d session(s) from room %s",
            self.session_id,
            "banned" if kick.ban else "kicked",
            len(removed),
            room.id,
        )
        first = removed[0].session_id if removed else 0
        self.send(msg.MemberKicked(room.id, first, user, kick.ban))

    async def on_unban(self, unban: msg.UnbanMember) -> None:
        ref = msg.tag(msg.UnbanMember)
        room = await self.owned_room(unban.room_id, ref)
        if room is None:
            return
        with self.store_refusals(ref):
            user = await self.server.store.unban(room.id, unban.user)
        log.info("session %08x: lifted a ban in room %s", self.session_id, room.id)
        self.send(msg.MemberUnbanned(room.id, user))

    async def on_list_bans(self, request: msg.ListBans) -> None:
        ref = msg.tag(msg.ListBans)
        room = await self.owned_room(request.room_id, ref)
        if room is None:
            return
        with self.store_refusals(ref):
            names, total = await self.server.store.bans(room.id, msg.MAX_LISTED_BANS)
        self.send(msg.BanList(room.id, names, total - len(names)))

    def on_leave(self) -> None:
        """Leave the room (the session delivers a leave only when we are in one)."""
        room_id = self.room_id
        assert room_id is not None
        self.server.leave_room(self)
        self.send(msg.RoomLeft(room_id))

    def on_chat(self, chat: msg.SendChat) -> None:
        if not self.admit(Kind.CHAT):
            self.refuse(
                CloseCode.THROTTLED, f"{_TOO_MANY[Kind.CHAT]}; not sent", msg.tag(msg.SendChat)
            )
            return
        if self.room_id is None:
            self.refuse(
                CloseCode.NOT_ALLOWED,
                "join a room before chatting",
                msg.tag(msg.SendChat),
            )
            return
        # Sealed end to end: forwarded as it came, never stored.
        out = msg.Chat(self.session_id, chat.data)
        for other in self.server.rooms.others(self.room_id, self.session_id):
            other.send(out)

    def on_peer(self, peer: msg.PeerSend) -> None:
        """Relay an opaque member-to-member message within the sender's room."""
        if not self.admit(Kind.PEER):
            return  # dropped (and counted): no answer, a flood must not be echoed back
        target = self.server.connections.get(peer.to)
        if (
            self.room_id is None
            or target is None
            or target is self
            or target.room_id != self.room_id
        ):
            # The target may have left a moment ago; the members' protocol copes.
            log.debug("session %08x: peer message to %08x dropped", self.session_id, peer.to)
            return
        target.send(msg.PeerReceived(self.session_id, peer.data))

    def member(self) -> msg.Member:
        return msg.Member(self.session_id, self.user, self.nick)


class Server:
    """Owns the listeners, the relay, the live rooms and the store."""

    def __init__(
        self,
        store: Store,
        static_key: bytes,
        settings: ServerSettings | None = None,
    ) -> None:
        self.store = store
        self.static_key = static_key
        self.settings = settings or ServerSettings()
        self.clock: Callable[[], float] = time.monotonic  # what rate limits count time by
        self.user_limits = UserBuckets(user_rates(self.settings), self.settings.max_limited_users)
        self.relay = Relay(max_payload=self.settings.max_media_payload)
        self.counts = ServerCounts()  # what serve --metrics reports (server/metrics.py)
        self.stun = BindingResponder(
            self.settings.stun_rate, self.settings.stun_burst, self.settings.stun_max_sources
        )
        self.rooms: RoomRegistry[Connection] = RoomRegistry(self.settings.max_members_per_room)
        self.connections: dict[int, Connection] = {}
        self.admission: Admission[Connection] = Admission(self.settings)
        self._admission_timer: asyncio.TimerHandle | None = None
        self._admission_when: float | None = None
        # Names with a login being checked: a second one at the same time is throttled.
        self.logins_in_flight: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.tcp: asyncio.Server | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.udp_protocol: RelayProtocol | None = None
        self.web: WebSink | None = None  # the WebTransport shell, with --web
        # What --web adds: stopped with the listeners, and after the sessions ended.
        self.closers: list[Callable[[], None]] = []
        self.after_close: list[Callable[[], None]] = []
        # Awaited after the goodbyes are written: transports that need a moment to
        # deliver them (a WebTransport session's last bytes race its QUIC close).
        self.drains: list[Callable[[], Awaitable[None]]] = []
        self.address: tuple[str, int] = ("", 0)
        # Resume tickets: a session of an earlier run of this server (same key, another
        # epoch) may have its id back, so its members' end-to-end state goes on.
        self.epoch = secrets.token_bytes(EPOCH_SIZE)
        self._resume_key = hmac.digest(static_key, RESUME_LABEL, "sha256")
        self.restarting = False  # set before close(): the goodbye says we come back
        self.cluster: Cluster | None = None  # serve --cluster: rooms placed across nodes
        self.removals: RemovalListener | None = None  # PostgreSQL: word of removed accounts
        self._account_task: asyncio.Task[None] | None = None  # the periodic account check

    @property
    def unauthenticated(self) -> int:
        """Accepted connections without a session yet (still in handshake or login)."""
        return len(self.admission)

    @property
    def fingerprint(self) -> str:
        return format_fingerprint(fingerprint(public_key(self.static_key)))

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        # TCP and UDP share one port number; with port 0 retry until both bind.
        for _attempt in range(20):
            tcp = await asyncio.start_server(self._on_connect, host, port, reuse_address=True)
            bound = tcp.sockets[0].getsockname()[1]
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: RelayProtocol(self.relay, self.stun, self.web, self.counts),
                    local_addr=(host, bound),
                    family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                )
            except OSError:
                tcp.close()
                if port != 0:
                    raise
                continue
            self.tcp, self.udp = tcp, transport
            self.udp_protocol = protocol
            self.address = (host, bound)
            await self.watch_accounts()
            return
        raise OSError("could not bind TCP and UDP on one port number")

    async def watch_accounts(self) -> None:
        """End the sessions of accounts removed by another process (`bangor user
        remove`): at once on PostgreSQL's word (server/notify.py), and on every backend
        by checking the live sessions' accounts every ``account_check_interval``."""
        try:
            self.removals = await RemovalListener.start(self.store.db, self.end_account)
        except StoreUnavailableError as exc:
            interval = self.settings.account_check_interval
            log.warning("%s; checking accounts every %g s instead", exc, interval)
        if self.settings.account_check_interval > 0:
            self._account_task = asyncio.get_running_loop().create_task(self._account_checks())

    async def _account_checks(self) -> None:
        while True:
            await asyncio.sleep(self.settings.account_check_interval)
            await self.check_accounts()

    async def check_accounts(self) -> None:
        """End the sessions whose account is gone, in one query for all of them."""
        live = {
            Account(conn.user_id, conn.user)
            for conn in self.connections.values()
            if conn.user_id is not None
        }
        if not live:
            return
        try:
            present = await self.store.live_accounts(live)
        except StoreError as exc:  # the next check tries again
            log.debug("account check skipped: %s", exc)
            return
        gone = live - present
        self._end_sessions(
            [
                conn
                for conn in self.connections.values()
                if conn.user_id is not None and Account(conn.user_id, conn.user) in gone
            ]
        )

    def resume_ticket(self, session_id: int, user: str) -> bytes:
        """Id, epoch and a MAC over both and the account: only this server's key makes one."""
        body = session_id.to_bytes(4, "big") + self.epoch
        return body + self._resume_mac(body, user)

    def _resume_mac(self, body: bytes, user: str) -> bytes:
        mac = hmac.digest(self._resume_key, body + user.encode(), hashlib.sha256)
        return mac[:RESUME_MAC_SIZE]

    def resumed_id(self, ticket: bytes, user: str) -> int | None:
        """The id ``ticket`` claims back, if it is genuine, for ``user``, from an earlier
        run (in this one the others saw the session leave: it starts afresh) and free."""
        if len(ticket) != msg.RESUME_TICKET_SIZE:
            return None
        body, mac = ticket[: 4 + EPOCH_SIZE], ticket[4 + EPOCH_SIZE :]
        if not hmac.compare_digest(mac, self._resume_mac(body, user)):
            return None
        session_id = int.from_bytes(body[:4], "big")
        if body[4:] == self.epoch or session_id == 0 or session_id in self.connections:
            return None
        return session_id

    def restart_window(self) -> float:
        """Seconds over which clients of a restarting server should spread their return."""
        settings = self.settings
        wanted = len(self.connections) / settings.restart_logins_per_second
        return min(max(wanted, MIN_RESTART_WINDOW), settings.restart_spread)

    async def close(self) -> None:
        if self.tcp is not None:
            self.tcp.close()
        for closer in self.closers:
            closer()
        if self._admission_timer is not None:
            self._admission_timer.cancel()
        # Restarting: clients come back at once, spread over a window the new process
        # can take their logins in.
        goodbye, spread = (
            ("server is restarting", self.restart_window())
            if self.restarting
            else ("server is shutting down", 0.0)
        )
        if self.cluster is not None:
            # Draining: no new placements here, our rooms free to go to other nodes; the
            # clients come back (through their invite's node) as after a restart.
            try:
                await self.cluster.drain()
            except StoreError as exc:
                log.warning("cluster: could not give our rooms up (%s)", exc)
            goodbye, spread = "server is leaving; its rooms move", self.restart_window()
        for conn in list(self.connections.values()):
            conn.fail(CloseCode.SHUTDOWN, goodbye, retry_after=spread)
            conn.writer.close()
        for drain in self.drains:
            await drain()
        if self._account_task is not None:
            self.tasks.add(self._account_task)  # cancelled and awaited with the sessions
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.udp is not None:
            self.udp.close()
        for closer in self.after_close:
            closer()
        if self.cluster is not None:
            await self.cluster.close()
        if self.removals is not None:
            await self.removals.close()
        await self.store.close()

    async def join_cluster(self, advertise: str) -> None:
        """Take part in a cluster as ``advertise`` (HOST:PORT): the first heartbeat now,
        the next every ``cluster_heartbeat`` seconds until close."""
        from bangor.server.cluster import Cluster  # only for --cluster

        db = self.store.db
        Cluster.check(db)
        beat = await Database.open(db.url, pool_size=1)
        self.cluster = Cluster(db, advertise, self.settings, beat)
        await self.cluster.heartbeat(0, set())
        task = asyncio.get_running_loop().create_task(self._heartbeats(self.cluster))
        self.tasks.add(task)

    async def _heartbeats(self, cluster: Cluster) -> None:
        while True:
            await asyncio.sleep(self.settings.cluster_heartbeat)
            await self.beat(cluster)

    async def beat(self, cluster: Cluster) -> None:
        """One heartbeat; rooms another node took meanwhile are given up, and the calls
        of rooms deleted through another node end."""
        live = {c.room_id for c in self.connections.values() if c.room_id is not None}
        try:
            beat = await cluster.heartbeat(len(self.connections), live)
        except StoreError as exc:
            log.warning("cluster heartbeat failed: %s", exc)
            self.counts.heartbeat_failures += 1
            return
        for room_id, node in beat.lost.items():
            self.send_away(room_id, node)
        for room_id in sorted(beat.deleted):
            ended = self.end_room(room_id)
            log.info("room %s: deleted through another node (%d members)", room_id, ended)

    def end_room(self, room_id: str) -> int:
        """Its owner deleted the room: every member here is told and removed; how many."""
        live = self.rooms.get(room_id)
        members = list(live.members.values()) if live is not None else []
        for member in members:
            self.remove(member, "the room was deleted by its owner")
        return len(members)

    def remove(self, conn: Connection, why: str) -> None:
        """The room's owner removed ``conn`` (kick, ban, a deleted room): its session ends
        with REMOVED, and the others see it leave."""
        conn.fail(CloseCode.REMOVED, why)
        self.drop(conn)
        conn.writer.close()

    def end_account(self, user: str) -> None:
        """`bangor user remove` deleted ``user`` (its name as stored; on any node): its
        sessions here end."""
        self._end_sessions([conn for conn in self.connections.values() if conn.user == user])

    def _end_sessions(self, ended: list[Connection]) -> None:
        """Their accounts were removed: a fatal AUTH_FAILED (the client does not come
        back), and the others in their rooms see them leave."""
        for conn in ended:
            conn.fail(CloseCode.AUTH_FAILED, ACCOUNT_REMOVED)
            self.drop(conn)
            conn.writer.close()
        for user in sorted({conn.user for conn in ended}):
            count = sum(1 for conn in ended if conn.user == user)
            log.warning("account %s removed: ended %d session(s)", user, count)

    def send_away(self, room_id: str, node: str) -> None:
        """Another node serves ``room_id`` now (we were paused or cut off long enough to
        be taken for dead): our members go there, and we serve it no longer."""
        room = self.rooms.get(room_id)
        members = list(room.members.values()) if room is not None else []
        log.warning("room %s: lost to %s; sending %d members there", room_id, node, len(members))
        for conn in members:
            conn.fail(CloseCode.MOVED, f"the room is served by {node}", location=node)
            self.drop(conn)
            conn.writer.close()

    def set_web(self, web: WebSink | None) -> None:
        """Route media for WebTransport sessions through ``web`` (None: no longer)."""
        self.web = web
        if self.udp_protocol is not None:
            self.udp_protocol.web = web

    def send_media(self, out: list[tuple[bytes, Address]]) -> None:
        send_media(out, self.udp, self.web)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        address = str(peername[0]) if peername else "?"
        peer = format_address(address, peername[1]) if peername else "?"
        await self.run_connection(reader, writer, peer, address)

    async def run_connection(
        self, reader: ControlReader, writer: ControlWriter, peer: str, address: str
    ) -> None:
        """Admit one client's control channel and serve it until it ends: a TCP
        connection, or a WebTransport session's control stream (server/web.py).
        ``address`` is the source per-source limits count by."""
        conn = Connection(
            self,
            reader,
            writer,
            ControlSession(Role.SERVER, self.static_key, idle_timeout=self.settings.idle_timeout),
            peer,
            address,
        )
        self.counts.handshakes_started += 1
        now = asyncio.get_running_loop().time()
        for closing in self.admission.admit(conn, address, now):
            closing.key.shut(closing)
        self._admission_changed(now)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await conn.run()
        except asyncio.CancelledError:
            # Server.close cancels us. Ending cancelled would make Python 3.11's streams
            # callback log a CancelledError traceback (it calls task.exception()).
            pass
        finally:
            self.tasks.discard(task)

    def _admission_changed(self, now: float) -> None:
        """Log what admission closed (rate-limited) and arm its next deadline."""
        report = self.admission.report(now)
        if report is not None:
            log.warning("admission: %s", report)
        when = self.admission.get_timer()
        if when == self._admission_when:
            return
        if self._admission_timer is not None:
            self._admission_timer.cancel()
        self._admission_when = when
        self._admission_timer = (
            None
            if when is None
            else asyncio.get_running_loop().call_at(when, self._on_admission_timer)
        )

    def handshake_failed(self, conn: Connection) -> None:
        now = asyncio.get_running_loop().time()
        self.counts.handshakes_failed += 1
        self.admission.failed(conn, now)
        self._admission_changed(now)

    def _on_admission_timer(self) -> None:
        # The loop may run a timer a clock tick early; it is due all the same.
        now = max(asyncio.get_running_loop().time(), self._admission_when or 0.0)
        self._admission_timer = self._admission_when = None
        for closing in self.admission.handle_timer(now):
            closing.key.shut(closing)
        self._admission_changed(now)

    def register(self, conn: Connection, keys: MediaKeys, wanted: int | None = None) -> int:
        """A session id for ``conn``: ``wanted`` (checked free by resumed_id) or a new one."""
        while True:
            session_id = wanted if wanted is not None else secrets.randbits(32)
            wanted = None
            if session_id and session_id not in self.connections:
                break
        self.connections[session_id] = conn
        self.relay.add_session(session_id, keys)
        return session_id

    def drop(self, conn: Connection) -> None:
        if conn.session_id == 0 or self.connections.get(conn.session_id) is not conn:
            return
        if conn.room_id is not None:
            self.leave_room(conn)
        del self.connections[conn.session_id]
        self.relay.remove_session(conn.session_id)
        log.info("session %08x: closed", conn.session_id)

    def join_room(self, conn: Connection, room_id: str, name: str) -> list[msg.Member]:
        conn.nick = unique_nick(
            conn.wanted_nick, (o.nick for o in self.rooms.others(room_id, conn.session_id))
        )
        room = self.rooms.join(room_id, name, conn.session_id, conn)
        conn.room_id = room_id
        self.relay.set_room(conn.session_id, room_id)
        joined = msg.MemberJoined(conn.member())
        members = []
        for other in self.rooms.others(room_id, conn.session_id):
            other.send(joined)
            members.append(other.member())
        log.info(
            "session %08x: joined room %s (%d members)", conn.session_id, room_id, len(room.members)
        )
        return members

    def leave_room(self, conn: Connection) -> None:
        room_id = conn.room_id
        if room_id is None:
            return
        self.rooms.leave(room_id, conn.session_id)
        self.relay.set_room(conn.session_id, None)
        conn.room_id = None
        left = msg.MemberLeft(conn.session_id)
        for other in self.rooms.others(room_id, conn.session_id):
            other.send(left)


class RequestRefused(Exception):
    """A request was refused (the refusal is sent): the handler stops there."""


def token_hash(token: bytes) -> bytes:
    """What the store keeps of a join token: a database copy must not let anyone join."""
    return hashlib.sha256(token).digest()


async def open_server(
    data_dir: Path, db_url: str, settings: ServerSettings | None = None
) -> Server:
    """Load (or create) the static key and open the store; raises BangorError."""
    if data_dir.is_dir():
        secure_data_dir(data_dir)
    key = load_or_create_key(data_dir / KEY_FILE)
    settings = settings or ServerSettings()
    store = await Store.open(db_url, settings)
    try:
        for group in await store.name_clashes():
            log.warning("%s", clash_warning(group))
    except BaseException:
        await store.close()
        raise
    if not settings.open:
        return_hash_memory()
        try:
            await store.prepare_logins()  # the unknown-name hash, now rather than mid-burst
        except BaseException:
            await store.close()
            raise
    return Server(store, key, settings)


async def serve(
    host: str,
    port: int,
    data_dir: Path,
    db_url: str,
    settings: ServerSettings | None = None,
    web: WebOptions | None = None,
    advertise: str | None = None,
    metrics: tuple[str, int] | None = None,
) -> None:
    """Run until cancelled; logs the ready lines the command-line contract promises.
    ``advertise``: take part in a cluster as that HOST:PORT (``serve --cluster``);
    ``metrics``: serve Prometheus metrics on that (host, port) (``serve --metrics``)."""
    server = await open_server(data_dir, db_url, settings)
    try:
        await server.start(host, port)
    except OSError as exc:
        await server.store.close()
        raise BangorError(
            f"cannot listen on {format_address(host, port)}: {exc.strerror or exc}"
        ) from None
    if advertise is not None:
        try:
            await server.join_cluster(advertise)
        except BaseException:
            await server.close()
            raise
    endpoint: WebEndpoint | None = None
    if web is not None:
        from bangor.server.web import start_web  # aioquic only when asked for

        try:
            service = await start_web(server, web)
        except BaseException:
            await server.close()
            raise
        url, endpoint = service.url, service.endpoint
    if metrics is not None:
        from bangor.server.metrics import start_metrics  # prometheus_client only when asked for

        try:
            metrics_url = await start_metrics(server, *metrics, endpoint)
        except BaseException:
            await server.close()
            raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def restart() -> None:
        log.warning("restarting: telling clients to come back")
        server.restarting = True
        stop.set()

    # SIGUSR1: a restart (a supervisor starts us again): clients reconnect at once. Ours
    # before "listening on" is printed: a tool that signals on seeing it must not kill us.
    # SIGTERM/SIGINT cancel us: going away.
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGUSR1, restart)
    log.warning("server key fingerprint %s", server.fingerprint)
    listening = format_address(*server.address)
    log.warning("listening on %s", listening, extra={"address": listening})
    if advertise is not None:
        log.warning("cluster node %s", advertise)
    if web is not None:
        log.warning("web client at %s", url)
    if metrics is not None:
        log.warning("metrics at %s", metrics_url)
    # systemd Type=notify: ready once listening and SIGUSR1 is ours (a reload at once
    # must restart us, not kill us).
    notify("READY=1", f"STATUS=listening on {listening}")
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.remove_signal_handler(signal.SIGUSR1)
        # systemd: going away (a restart too: Restart= starts the new process).
        notify("STOPPING=1", "STATUS=restarting" if server.restarting else "STATUS=stopping")
        await server.close()
