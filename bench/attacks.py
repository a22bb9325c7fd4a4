"""The attackers of ``bench/abuse.py``: each runs in a child process on its own event loop.

``attack_main`` is the child's entry. It prepares (binds sockets, logs in the account
holders), sends ``"ready"`` up its pipe, waits for ``"go"``, attacks for the spec's
seconds and sends back an :class:`AttackResult`, or a string saying what broke. What the
server does to an attacker (refuses it, closes it, never answers) is counted, never
raised: a refused connection is a number in the table.

The unauthenticated attacks are paced (the rates are in :class:`Rates`, printed by the
bench) so that they do not take the whole machine from the server and the call they are
meant to disturb; the two account holders go as fast as the server answers (churn) or
TCP takes it (peer flood), as issue 12 asks, which costs them 5-10 % of a core here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import cast

import uvloop

from bangor.client.app import Login, connect_and_login
from bangor.client.control import ControlClient
from bangor.errors import BangorError, ProtocolError, RefusedError
from bangor.settings import PROTOCOL_VERSION
from bangor.wire import control as msg
from bangor.wire import stun
from bangor.wire.media import HEADER_SIZE, MAGIC, TAG_SIZE
from bangor.wire.noise import MessageReceived, NoiseSession, generate_static_key

Address = tuple[str, int]

_STUN_HEADER = struct.Struct(">HHI12s")
_ATTR = struct.Struct(">HH")
BINDING_INDICATION = 0x0011

SETUP_TIMEOUT = 20.0  # logins of the account holders, before "ready"
GO_TIMEOUT = 60.0  # the parent's "go" after "ready"
TICK = 0.01  # seconds between paced batches
READ_SIZE = 65536
REQUEST_TIMEOUT = 10.0  # one attacker's login or join/leave answer
LATE_ANSWERS = 0.5  # seconds the UDP attackers still listen after their last datagram
DRIP_PERIOD = 1.0  # slowloris: one byte this often on a dripping connection
NOISE_MESSAGE_1 = 32  # bytes of Noise XX message 1 (the initiator's ephemeral key)
# Account holders of the churn and peer-flood attacks, and the real account the login
# storm names among its unknown ones (bench/abuse.py creates them all).
CHURNER = "churner"
FLOODER = "flooder"
VICTIM = "victim"


@dataclass(frozen=True)
class Rates:
    """How hard each attack pushes; modest, so the bench leaves the server a core."""

    slowloris_connections: int = 128  # held open at once, half of them dripping bytes
    connects_per_s: float = 100.0  # new TCP connections at most (slowloris, login storm)
    handshakes_per_s: float = 50.0
    storm_concurrency: int = 200  # wrong-password logins in flight at once
    datagrams_per_s: float = 2000.0  # UDP garbage, STUN flood (over all sockets)
    udp_sockets: int = 8
    # The account holders go as fast as the server answers (churn) or TCP takes it (peer
    # flood), as the issue asks: 0 is unpaced (about 5 % of a core each, measured).
    churn_per_s: float = 0.0  # join + leave cycles a second at most
    peer_per_s: float = 0.0  # peer messages a second at most
    peer_size: int = 1024

    def describe(self) -> str:
        def most(rate: float) -> str:
            return f"<= {rate:g}/s" if rate > 0 else "unpaced"

        return (
            f"slowloris {self.slowloris_connections} connections (half dripping 1 B/s); "
            f"new connections <= {self.connects_per_s:g}/s; handshake flood "
            f"{self.handshakes_per_s:g}/s; login storm {self.storm_concurrency} in flight; "
            f"UDP {self.datagrams_per_s:g} datagrams/s from {self.udp_sockets} ports; "
            f"churn join+leave {most(self.churn_per_s)}; peer flood messages of "
            f"{self.peer_size} B {most(self.peer_per_s)}"
        )


@dataclass(frozen=True)
class AttackSpec:
    name: str
    host: str
    port: int
    source: str  # the attacker's own address (TCP and UDP sockets bind to it)
    seconds: float
    rates: Rates
    password: str  # of the account holders
    room_id: str  # hex, from the invite
    member_sessions: tuple[int, ...]  # the call's session ids, for forged media
    token: bytes = b""  # the room's join token (PROTOCOL.md 3.15): the attackers hold the invite


@dataclass
class AttackResult:
    counts: dict[str, int] = field(default_factory=dict)  # what it did and what it met
    # Bytes the server sent to sources that sent only unauthenticated garbage (None: the
    # attack sent no datagrams).
    unauth_answered: int | None = None
    stun_request_bytes: int = 0  # valid Binding requests sent ...
    stun_answer_bytes: int = 0  # ... and the bytes answered to them (bounded by design)
    cpu_seconds: float = 0.0  # the attacker process's own
    elapsed: float = 0.0


# --- pacing --------------------------------------------------------------------------------


class Pacer:
    """Hands out start slots at most ``rate`` a second (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.period = 1 / rate if rate > 0 else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.period:
            await asyncio.sleep(0)  # still let others run
            return
        now = time.monotonic()
        slot = max(now, self.next)
        self.next = slot + self.period
        await asyncio.sleep(slot - now)


async def paced(rate: float, end: float, action: Callable[[], None]) -> None:
    """Call ``action`` ``rate`` times a second until ``end``, in batches every TICK."""
    start = time.monotonic()
    done = 0
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate) - done
        for _ in range(due):
            action()
        done += due
        await asyncio.sleep(TICK)


async def run_until(end: float, workers: list[Awaitable[None]]) -> None:
    """Run ``workers`` until ``end``, then cancel what is left (a worker's error is counted
    by the worker itself; one escaping here would be a bug in the bench)."""
    tasks = [asyncio.ensure_future(w) for w in workers]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks), max(end - time.monotonic(), 0))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def tcp_connect(spec: AttackSpec) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(spec.host, spec.port, local_addr=(spec.source, 0)),
        REQUEST_TIMEOUT,
    )


async def counted_connect(
    spec: AttackSpec, counts: Counter[str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A new connection, counted; None (counted too) when the server would not take it."""
    try:
        streams = await tcp_connect(spec)
    except (OSError, TimeoutError):
        counts["connect failed"] += 1
        return None
    counts["connections opened"] += 1
    return streams


async def until_closed(reader: asyncio.StreamReader, end: float, counts: Counter[str]) -> None:
    """Read (and count) what the server sends until it closes the connection or ``end``."""
    while (left := end - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(READ_SIZE), left)
        except TimeoutError:
            return
        if not data:
            counts["closed by server"] += 1
            return
        counts["tcp bytes received"] += len(data)


def hello_frame() -> tuple[NoiseSession, bytes]:
    """A fresh initiator and its framed Noise message 1."""
    noise = NoiseSession(initiator=True, static_private=generate_static_key())
    noise.initiate()
    return noise, noise.data_to_send()


# --- TCP attacks -----------------------------------------------------------------------------


async def slowloris(spec: AttackSpec, counts: Counter[str], end: float) -> None:
    """Connections from one address that send nothing, or drip message 1 a byte at a time;
    each one the server closes is opened again (at most ``connects_per_s``)."""
    pacer = Pacer(spec.rates.connects_per_s)

    async def hold(drip: bool) -> None:
        while time.monotonic() < end:
            await pacer.wait()
            streams = await counted_connect(spec, counts)
            if streams is None:
                continue
            reader, writer = streams
            try:
                if not drip:
                    await until_closed(reader, end, counts)
                    continue
                _, frame = hello_frame()
                for byte in frame[:-1]:  # never the last: the server must keep waiting
                    writer.write(bytes([byte]))
                    counts["bytes dripped"] += 1
                    closed_before = counts["closed by server"]
                    await until_closed(reader, min(end, time.monotonic() + DRIP_PERIOD), counts)
                    if counts["closed by server"] != closed_before:
                        break
            except (ConnectionError, OSError):
                counts["reset by server"] += 1
            finally:
                writer.close()

    n = spec.rates.slowloris_connections
    await run_until(end, [hold(drip=i % 2 == 1) for i in range(n)])


async def handshake_flood(spec: AttackSpec, counts: Counter[str], end: float) -> None:
    """New connections at ``handshakes_per_s``: half send a valid Noise message 1 and stop,
    half finish the handshake and never log in; each stays open until the server closes it."""
    tasks: list[asyncio.Task[None]] = []

    async def one(finish: bool) -> None:
        streams = await counted_connect(spec, counts)
        if streams is None:
            return
        reader, writer = streams
        try:
            noise, frame = hello_frame()
            writer.write(frame)
            if finish:
                while not noise.handshake_complete:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), REQUEST_TIMEOUT)
                    if not data:
                        counts["closed by server"] += 1
                        return
                    counts["tcp bytes received"] += len(data)
                    noise.receive_data(data, time.monotonic())
                    writer.write(noise.data_to_send())
                counts["handshakes completed"] += 1
            await until_closed(reader, end, counts)
        except (ConnectionError, OSError, TimeoutError, ProtocolError):
            counts["reset or failed"] += 1
        finally:
            writer.close()

    def start() -> None:
        tasks.append(asyncio.ensure_future(one(finish=len(tasks) % 2 == 1)))

    await paced(spec.rates.handshakes_per_s, end, start)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def raw_login(spec: AttackSpec, user: str, password: str) -> str:
    """One login over a bare Noise session from ``spec.source``: the outcome's name."""
    reader, writer = await tcp_connect(spec)
    try:
        noise, frame = hello_frame()
        writer.write(frame)
        sent_hello = False
        while True:
            data = await asyncio.wait_for(reader.read(READ_SIZE), REQUEST_TIMEOUT)
            if not data:
                return "closed by server" if sent_hello else "closed in handshake"
            noise.receive_data(data, time.monotonic())
            while (event := noise.next_event()) is not None:
                if isinstance(event, MessageReceived):
                    reply = msg.decode_server_message(event.payload)
                    if isinstance(reply, msg.Welcome):
                        return "logged in (!)"
                    if isinstance(reply, msg.Error):
                        return f"refused, code {reply.code}"
            if noise.handshake_complete and not sent_hello:
                noise.send(msg.encode(msg.Hello(PROTOCOL_VERSION, user, password, user)))
                sent_hello = True
            writer.write(noise.data_to_send())
    finally:
        writer.close()


async def login_storm(spec: AttackSpec, counts: Counter[str], end: float) -> None:
    """``storm_concurrency`` wrong-password logins in flight at once, each followed by the
    next: random unknown names, and every tenth the real account ``VICTIM``."""
    pacer = Pacer(spec.rates.connects_per_s * 2)  # a storm: twice the connection rate
    attempts = 0

    async def worker() -> None:
        nonlocal attempts
        while time.monotonic() < end:
            await pacer.wait()
            attempts += 1
            user = VICTIM if attempts % 10 == 0 else f"x{secrets.token_hex(6)}"
            try:
                outcome = await raw_login(spec, user, secrets.token_urlsafe(12))
            except TimeoutError:
                outcome = "timed out"
            except (ConnectionError, OSError):
                outcome = "reset or refused"
            except ProtocolError:
                outcome = "protocol error"
            counts[f"login {outcome}"] += 1

    await run_until(end, [worker() for _ in range(spec.rates.storm_concurrency)])


# --- account holders -------------------------------------------------------------------------


async def log_in(spec: AttackSpec, user: str) -> ControlClient:
    client, _ = await asyncio.wait_for(
        connect_and_login(spec.host, spec.port, Login(user, spec.password, user)),
        SETUP_TIMEOUT,
    )
    return client


async def churn(
    spec: AttackSpec, counts: Counter[str], end: float, client: ControlClient
) -> ControlClient:
    """Join and leave the call's room as fast as the server answers (at most ``churn_per_s``);
    logs in again if the server drops the session."""
    pacer = Pacer(spec.rates.churn_per_s)
    while time.monotonic() < end:
        await pacer.wait()
        try:
            await asyncio.wait_for(client.join_room(spec.room_id, spec.token), REQUEST_TIMEOUT)
            await asyncio.wait_for(client.request(msg.LeaveRoom()), REQUEST_TIMEOUT)
            counts["join+leave cycles"] += 1
        except RefusedError as exc:
            counts[f"refused, code {exc.code}"] += 1
        except (BangorError, ConnectionError, OSError, TimeoutError):
            counts["session lost"] += 1
            await client.close()
            try:
                client = await log_in(spec, CHURNER)
            except (BangorError, OSError, TimeoutError):
                counts["login again failed"] += 1
                await asyncio.sleep(0.5)
    return client


async def peer_flood(
    spec: AttackSpec, counts: Counter[str], end: float, client: ControlClient
) -> None:
    """From inside the room, peer messages to both members as fast as TCP takes them
    (at most ``peer_per_s``)."""
    joined = await asyncio.wait_for(client.join_room(spec.room_id, spec.token), REQUEST_TIMEOUT)
    targets = [m.session_id for m in joined.members]
    if not targets:
        counts["no members to flood"] += 1
        return
    data = os.urandom(spec.rates.peer_size)
    rate = spec.rates.peer_per_s
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate) - sent if rate > 0 else 256
        try:
            for _ in range(due):
                client.send_peer(targets[sent % len(targets)], data)
                sent += 1
            await asyncio.wait_for(client.writer.drain(), max(end - now, 0.01))
        except TimeoutError:
            counts["held back by TCP"] += 1
        except (BangorError, ConnectionError, OSError):
            counts["session lost"] += 1
            break
        # drain() does not yield while TCP takes everything: let our reader run too.
        await asyncio.sleep(TICK if rate > 0 else 0)
    counts["peer messages sent"] += sent
    # Anything the server pushed back: errors refusing us, the members' key messages.
    while not client.events.empty():
        event = client.events.get_nowait()
        counts[f"pushed to us: {type(event).__name__}"] += 1


# --- UDP attacks ---------------------------------------------------------------------------


class Catcher(asyncio.DatagramProtocol):
    """An attacker's UDP socket: counts every byte the server sends back to it."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.sent_bytes = 0
        self.received_bytes = 0
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received += 1
        self.received_bytes += len(data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP from a closed port: nothing was answered

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)
        self.sent_bytes += len(data)


async def open_catchers(spec: AttackSpec, n: int) -> list[Catcher]:
    loop = asyncio.get_running_loop()
    catchers = []
    for _ in range(n):
        _, catcher = await loop.create_datagram_endpoint(
            Catcher, local_addr=(spec.source, 0), remote_addr=(spec.host, spec.port)
        )
        catchers.append(catcher)
    return catchers


async def flood(
    spec: AttackSpec, end: float, send: Callable[[], None], catchers: list[Catcher]
) -> None:
    """``send`` at the datagram rate until ``end``; answers that come late still count."""
    try:
        await paced(spec.rates.datagrams_per_s, end, send)
        await asyncio.sleep(LATE_ANSWERS)
    finally:
        for c in catchers:
            assert c.transport is not None
            c.transport.close()


def garbage(i: int, sessions: tuple[int, ...]) -> bytes:
    """The i-th datagram of the garbage mix: random bytes, media-like ones with random or
    real session ids (forged: their tags cannot verify), and runts."""
    kind = i % 4
    if kind == 0:
        return os.urandom(1 + secrets.randbelow(1400))
    if kind == 3:
        return bytes([MAGIC]) + os.urandom(secrets.randbelow(HEADER_SIZE + TAG_SIZE))
    session = secrets.choice(sessions) if kind == 2 and sessions else secrets.randbits(32)
    header = bytes([MAGIC, 1 + secrets.randbelow(6)]) + session.to_bytes(4, "big")
    return header + os.urandom(8 + TAG_SIZE + secrets.randbelow(200))


async def udp_garbage(
    spec: AttackSpec, counts: Counter[str], end: float, result: AttackResult
) -> None:
    catchers = await open_catchers(spec, spec.rates.udp_sockets)
    sent = 0

    def send() -> None:
        nonlocal sent
        catchers[sent % len(catchers)].send(garbage(sent, spec.member_sessions))
        sent += 1

    await flood(spec, end, send, catchers)
    counts["datagrams sent"] = sent
    counts["bytes sent"] = sum(c.sent_bytes for c in catchers)
    counts["datagrams answered"] = sum(c.received for c in catchers)
    result.unauth_answered = sum(c.received_bytes for c in catchers)


def stun_message(msg_type: int, txid: bytes, padding: int | None = None) -> bytes:
    """A STUN message with, unless None, a PADDING attribute of ``padding`` zero bytes."""
    attrs = b"" if padding is None else _ATTR.pack(stun.ATTR_PADDING, padding) + bytes(padding)
    return _STUN_HEADER.pack(msg_type, len(attrs), stun.MAGIC_COOKIE, txid) + attrs


def stun_request(i: int) -> bytes:
    """Valid Binding requests: padded to our size, bare (20 B, a stock client's), and padded
    to the largest request (548 B)."""
    txid = stun.new_transaction_id()
    kind = i % 3
    if kind == 0:
        return stun.binding_request(txid)
    if kind == 1:
        return stun_message(stun.BINDING_REQUEST, txid)
    return stun_message(stun.BINDING_REQUEST, txid, stun.MAX_MESSAGE - stun.HEADER_SIZE - 4)


def stun_malformed(i: int) -> bytes:
    """STUN-looking datagrams that must get no answer: a wrong cookie, a length that lies,
    a Binding success (an answer, not a request), an indication, an oversize request."""
    txid = stun.new_transaction_id()
    good = stun.binding_request(txid)
    kind = i % 5
    if kind == 0:
        return good[:4] + os.urandom(4) + good[8:]
    if kind == 1:
        return good[:2] + (len(good)).to_bytes(2, "big") + good[4:]
    if kind == 2:
        return stun.binding_success(txid, ("198.51.100.7", 3478))
    if kind == 3:
        return stun_message(BINDING_INDICATION, txid)
    return stun_message(stun.BINDING_REQUEST, txid, stun.MAX_MESSAGE)  # too long to be STUN


async def stun_flood(
    spec: AttackSpec, counts: Counter[str], end: float, result: AttackResult
) -> None:
    """Half the sockets send valid Binding requests (answered by design, never with more
    bytes than they sent), half malformed STUN (which must get nothing)."""
    n = max(spec.rates.udp_sockets // 2, 1)
    valid = await open_catchers(spec, n)
    malformed = await open_catchers(spec, n)
    sent = 0

    def send() -> None:
        nonlocal sent
        i = sent // 2
        if sent % 2 == 0:
            valid[i % n].send(stun_request(i))
        else:
            malformed[i % n].send(stun_malformed(i))
        sent += 1

    await flood(spec, end, send, [*valid, *malformed])
    counts["requests sent"] = sent
    counts["valid requests answered"] = sum(c.received for c in valid)
    counts["malformed answered"] = sum(c.received for c in malformed)
    result.stun_request_bytes = sum(c.sent_bytes for c in valid)
    result.stun_answer_bytes = sum(c.received_bytes for c in valid)
    result.unauth_answered = sum(c.received_bytes for c in malformed)


# --- the child process -----------------------------------------------------------------------

ATTACKS = (
    "slowloris",
    "handshake-flood",
    "login-storm",
    "udp-garbage",
    "stun-flood",
    "churn",
    "peer-flood",
)


async def attack(spec: AttackSpec, conn: Connection) -> AttackResult:
    result = AttackResult()
    counts: Counter[str] = Counter()
    holder: ControlClient | None = None
    try:
        if spec.name in ("churn", "peer-flood"):
            holder = await log_in(spec, CHURNER if spec.name == "churn" else FLOODER)
        conn.send("ready")
        if not await asyncio.to_thread(conn.poll, GO_TIMEOUT) or conn.recv() != "go":
            raise RuntimeError("no go from the bench")
        cpu0, start = time.process_time(), time.monotonic()
        end = start + spec.seconds
        if spec.name == "slowloris":
            await slowloris(spec, counts, end)
        elif spec.name == "handshake-flood":
            await handshake_flood(spec, counts, end)
        elif spec.name == "login-storm":
            await login_storm(spec, counts, end)
        elif spec.name == "udp-garbage":
            await udp_garbage(spec, counts, end, result)
        elif spec.name == "stun-flood":
            await stun_flood(spec, counts, end, result)
        elif spec.name == "churn":
            assert holder is not None
            holder = await churn(spec, counts, end, holder)
        elif spec.name == "peer-flood":
            assert holder is not None
            await peer_flood(spec, counts, end, holder)
        else:
            raise RuntimeError(f"no attack named {spec.name!r}")
        result.cpu_seconds = time.process_time() - cpu0
        result.elapsed = time.monotonic() - start
    finally:
        if holder is not None:
            await holder.leave()
    result.counts = dict(counts)
    return result


def attack_main(spec: AttackSpec, conn: Connection) -> None:
    """Child process entry: attack, then send back an AttackResult or an error string."""
    outcome: AttackResult | str
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            outcome = runner.run(
                asyncio.wait_for(attack(spec, conn), SETUP_TIMEOUT + GO_TIMEOUT + spec.seconds + 30)
            )
    except Exception as exc:  # the bench reports it in the attack's row and goes on
        outcome = f"{spec.name}: {type(exc).__name__}: {exc}"
    with contextlib.suppress(OSError):
        conn.send(outcome)
    conn.close()
