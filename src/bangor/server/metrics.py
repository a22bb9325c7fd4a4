"""``serve --metrics``: the server's counters in Prometheus's text format at ``/metrics``.

Imported only when ``--metrics`` is given (prometheus_client is an optional extra). The
server's objects keep plain integers (``RelayStats``, ``ResponderStats``,
``ServerCounts``, admission's ``closed``, ``WebStats``); :class:`BangorCollector` reads
them when a scrape comes, so the hot path never calls prometheus_client. Scrapes are
served on the server's own event loop (a small HTTP/1.1 GET server, one request per
connection), so the collector reads the server's state between two events, never
while it changes.

No label names a user, a room or an address: totals, by kind or by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from bangor import __version__
from bangor.address import format_address
from bangor.errors import BangorError
from bangor.server.admission import Reason
from bangor.server.http1 import request_line, write_response
from bangor.server.limits import Kind
from bangor.settings import ServerSettings
from bangor.wire import control as msg

if TYPE_CHECKING:
    from bangor.server.app import Server
    from bangor.server.web import WebEndpoint


PATH = b"/metrics"
# Label values always present (zero until counted), so rate() works from the start.
LOGIN_FAILURES = (
    # No such account, a wrong password, or a name no account can have (they look alike).
    "bad_credentials",
    "password_required",  # a hello without a password, to a server with accounts
    "throttled",  # the name is locked out after failures
    "busy",  # the hashing pool was full, or a login for the name was under way
    "unavailable",  # the accounts database could not be reached
    "limit",  # server full, or too many sessions of the account
    "bad_nickname",  # a nickname with control, bidi or zero-width characters
)
ROOM_REQUESTS = tuple(msg.tag(request) for request in msg.ROOM_REQUESTS)
ADMISSION = {
    Reason.ADDRESS: "address_full",
    Reason.NETWORK: "network_full",
    Reason.TOTAL: "server_full",
    Reason.FIRST_MESSAGE: "first_message_timeout",
    Reason.HANDSHAKE: "login_timeout",
    Reason.PROTOCOL: "protocol_error",
}


def _le(bound: float) -> str:
    """A bucket's upper bound as the text format writes it."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _by(
    family: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    label: str,
    values: Iterable[tuple[str, float]],
) -> Metric:
    metric = family(name, doc, labels=[label])
    for value, n in values:
        metric.add_metric([value], n)
    return metric


def _known(known: Iterable[str], counts: Counter[str]) -> Iterator[tuple[str, int]]:
    """Every known label value (0 if never counted), then any other that was counted."""
    for key in dict.fromkeys([*known, *counts]):
        yield key, counts[key]


class BangorCollector(Collector):
    """Reads the server's counters at scrape time (on the server's loop)."""

    def __init__(
        self,
        server: Server,
        web: WebEndpoint | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.web = web
        self.clock = clock  # the clock the relay stamps voice with (app.RelayProtocol)

    def collect(self) -> Iterator[Metric]:
        yield from self._sessions()
        yield from self._media()
        yield from self._control()
        yield from self._web()
        yield from self._cluster()

    def _sessions(self) -> Iterator[Metric]:
        server = self.server
        info = GaugeMetricFamily("bangor_info", "The server's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield _gauge(
            "bangor_sessions", "Logged-in sessions (TCP and browser).", len(server.connections)
        )
        yield _gauge(
            "bangor_unauthenticated_connections",
            "Control connections still in their handshake or login.",
            len(server.admission),
        )
        yield _gauge("bangor_rooms", "Rooms with at least one member in a call.", len(server.rooms))
        members = sum(1 for conn in server.connections.values() if conn.room_id is not None)
        yield _gauge("bangor_room_members", "Sessions in a room's call.", members)
        every, some, none = server.relay.voice_paths(
            self.clock(), server.settings.metrics_voice_window
        )
        yield _by(
            GaugeMetricFamily,
            "bangor_room_members_relay_use",
            "Members in rooms by what the relay carried of their voice lately "
            "(metrics_voice_window): 'all' to every other member, 'some' (the sender "
            "reaches the others directly), 'none' (quiet, or direct to everyone).",
            "use",
            [("all", every), ("some", some), ("none", none)],
        )

    def _media(self) -> Iterator[Metric]:
        server = self.server
        relay, stun = server.relay.stats, server.stun.stats
        other = relay.received - relay.voice - relay.keepalives
        other_bytes = relay.received_bytes - relay.voice_bytes - relay.keepalive_bytes
        yield _by(
            CounterMetricFamily,
            "bangor_media_datagrams_received",
            "Datagrams on the media port (UDP and WebTransport) by kind; 'other': dropped "
            "before its kind was known, or a kind the server does not take.",
            "kind",
            [
                ("voice", relay.voice),
                ("keepalive", relay.keepalives),
                ("stun", stun.received),
                ("other", other),
            ],
        )
        yield _by(
            CounterMetricFamily,
            "bangor_media_received_bytes",
            "Bytes of those datagrams (UDP payloads), by kind.",
            "kind",
            [
                ("voice", relay.voice_bytes),
                ("keepalive", relay.keepalive_bytes),
                ("stun", stun.received_bytes),
                ("other", other_bytes),
            ],
        )
        yield _by(
            CounterMetricFamily,
            "bangor_media_datagrams_sent",
            "Datagrams the server sent on the media port, by kind.",
            "kind",
            [
                ("voice", relay.forwarded),
                ("keepalive_ack", relay.keepalive_answers),
                ("stun", stun.answered),
            ],
        )
        yield _by(
            CounterMetricFamily,
            "bangor_media_sent_bytes",
            "Bytes of those datagrams, by kind.",
            "kind",
            [
                ("voice", relay.forwarded_bytes),
                ("keepalive_ack", relay.keepalive_answer_bytes),
                ("stun", stun.answered_bytes),
            ],
        )
        yield _counter(
            "bangor_relay_forwarded",
            "Voice datagrams forwarded to listeners (one per listener).",
            relay.forwarded,
        )
        yield _counter(
            "bangor_relay_skipped_direct",
            "Voice copies not forwarded because the sender reaches that listener directly.",
            relay.skipped_direct,
        )
        yield _by(
            CounterMetricFamily,
            "bangor_relay_dropped",
            "Media datagrams (or copies) dropped, by reason.",
            "reason",
            [
                ("malformed", relay.dropped_malformed),
                ("unknown_session", relay.dropped_unknown),
                ("bad_tag", relay.dropped_auth),
                ("replay", relay.dropped_replay),
                ("oversize", relay.dropped_oversize),
                ("too_big_for_listener", relay.dropped_too_big),
            ],
        )
        timings = server.counts.forward_times
        yield HistogramMetricFamily(
            "bangor_relay_forward_seconds",
            "Time to forward one voice datagram: open, route, seal and send to every listener.",
            buckets=[(_le(bound), n) for bound, n in timings.cumulative()],
            sum_value=timings.total_ns / 1e9,
        )
        yield _counter("bangor_stun_answers", "STUN Binding requests answered.", stun.answered)
        yield _by(
            CounterMetricFamily,
            "bangor_stun_dropped",
            "STUN requests not answered, by reason ('no_credit': the source has not sent "
            "as many bytes as the answer has; 'rate_limit': over stun_rate).",
            "reason",
            [
                ("malformed", stun.malformed),
                ("no_credit", stun.no_credit),
                ("rate_limit", stun.rate_limited),
            ],
        )

    def _control(self) -> Iterator[Metric]:
        server = self.server
        counts = server.counts
        yield _counter(
            "bangor_handshakes_started", "Control connections accepted.", counts.handshakes_started
        )
        yield _counter(
            "bangor_handshakes_completed",
            "Noise handshakes completed.",
            counts.handshakes_completed,
        )
        yield _counter(
            "bangor_handshakes_failed",
            "Connections that broke the protocol before login.",
            counts.handshakes_failed,
        )
        yield _counter("bangor_logins", "Successful logins.", counts.logins)
        yield _by(
            CounterMetricFamily,
            "bangor_login_failures",
            "Logins refused, by reason.",
            "reason",
            _known(LOGIN_FAILURES, counts.login_failures),
        )
        yield _by(
            CounterMetricFamily,
            "bangor_room_requests",
            "Room requests received, by request.",
            "request",
            _known(ROOM_REQUESTS, counts.room_requests),
        )
        yield _by(
            CounterMetricFamily,
            "bangor_room_requests_refused",
            "Room requests refused (no such room, not the owner, full, throttled...), by request.",
            "request",
            _known(ROOM_REQUESTS, counts.room_refusals),
        )
        closed = server.admission.closed
        yield _by(
            CounterMetricFamily,
            "bangor_admission_closed",
            "Connections closed before login by admission, by reason (evicted for a "
            "newcomer when a cap was full, timed out, broke the protocol).",
            "reason",
            [(label, closed[reason]) for reason, label in ADMISSION.items()],
        )
        kinds = [kind.value for kind in Kind]
        yield _by(
            CounterMetricFamily,
            "bangor_throttled",
            "Requests over a session's or account's rate, refused or dropped, by kind.",
            "kind",
            _known(kinds, counts.throttled),
        )
        yield _by(
            CounterMetricFamily,
            "bangor_throttle_closed",
            "Sessions closed for staying over a rate too long, by kind.",
            "kind",
            _known(kinds, counts.throttle_closed),
        )
        yield _counter(
            "bangor_control_backlog_drops",
            "Sessions dropped for not reading their control channel (max_control_backlog).",
            counts.backlog_drops,
        )

    def _web(self) -> Iterator[Metric]:
        web = self.web
        yield _gauge(
            "bangor_web_sessions",
            "Browser (WebTransport) sessions open, logged in or not; 0 without --web.",
            0 if web is None else len(web.sessions),
        )
        if web is None:
            return
        stats = web.stats
        yield _counter(
            "bangor_web_connections", "QUIC connections accepted (--web).", stats.connections
        )
        yield _by(
            CounterMetricFamily,
            "bangor_web_connections_closed",
            "QUIC connections refused or closed by a limit, by reason.",
            "reason",
            [
                ("refused", stats.refused_connections),
                ("evicted", stats.evicted_connections),
                ("bad_stream", stats.closed_bad_stream),
                ("overrun", stats.closed_overrun),
            ],
        )
        yield _by(
            CounterMetricFamily,
            "bangor_web_datagrams_dropped",
            "WebTransport datagrams dropped, by reason.",
            "reason",
            [("no_session", stats.dropped_datagrams), ("queue_full", stats.dropped_queue_full)],
        )

    def _cluster(self) -> Iterator[Metric]:
        server = self.server
        cluster = server.cluster
        if cluster is None:
            return
        yield _gauge(
            "bangor_cluster_load",
            "This node's load as its heartbeat reports it: logged-in sessions.",
            len(server.connections),
        )
        yield _gauge(
            "bangor_cluster_rooms",
            "Rooms placed on this node (claimed in the routing store).",
            len(cluster.held),
        )
        yield _gauge("bangor_cluster_draining", "1 while this node drains.", int(cluster.draining))
        yield _counter(
            "bangor_cluster_heartbeat_failures",
            "Heartbeats the database did not take.",
            server.counts.heartbeat_failures,
        )


def registry_for(server: Server, web: WebEndpoint | None = None) -> CollectorRegistry:
    """Bangor's metrics and the process's own (CPU, memory, open files: Linux only)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BangorCollector(server, web))
    ProcessCollector(registry=registry)
    return registry


@dataclass
class MetricsServer:
    """GET /metrics over HTTP/1.1, one request per connection, on the server's loop."""

    registry: CollectorRegistry
    settings: ServerSettings
    tcp: asyncio.Server | None = None
    scrapes: int = 0
    # Connections being served, oldest first: when full, the oldest makes room.
    tasks: dict[asyncio.Task[None], None] = field(default_factory=dict)

    async def start(self, host: str, port: int) -> asyncio.Server:
        self.tcp = await asyncio.start_server(
            self._on_connect,
            host,
            port,
            reuse_address=True,
            limit=self.settings.max_metrics_request,
        )
        return self.tcp

    def close(self) -> None:
        if self.tcp is not None:
            self.tcp.close()
        for task in self.tasks:
            task.cancel()

    def respond(self, head: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request head."""
        request = request_line(head.split(b"\r\n", 1)[0])
        text = "text/plain; charset=utf-8"
        if isinstance(request, int):
            return request, text, b""
        if request[1].split(b"?", 1)[0] != PATH:
            return 404, text, b"not found; the metrics are at /metrics\n"
        self.scrapes += 1
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.tasks) >= self.settings.max_metrics_connections:
            oldest = next(iter(self.tasks))
            del self.tasks[oldest]
            oldest.cancel()
        task = asyncio.current_task()
        assert task is not None
        self.tasks[task] = None
        closed = False
        try:
            async with asyncio.timeout(self.settings.metrics_request_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
                status, content_type, body = self.respond(head)
                head_only = head.startswith(b"HEAD ")
                write_response(writer, status, [("Content-Type", content_type)], body, head_only)
                writer.close()
                await writer.wait_closed()
                closed = True
        except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.LimitOverrunError:
            pass  # a request head over max_metrics_request: no answer
        except asyncio.CancelledError:
            pass  # close(), or a newcomer needed the place (as app.py, no traceback)
        finally:
            self.tasks.pop(task, None)
            if not closed:
                with contextlib.suppress(Exception):
                    writer.transport.abort()


async def start_metrics(
    server: Server, host: str, port: int, web: WebEndpoint | None = None
) -> str:
    """Serve ``server``'s metrics on ``host``:``port`` (0: any free port) until the
    server closes; returns the URL. BangorError when it cannot listen there."""
    metrics = MetricsServer(registry_for(server, web), server.settings)
    try:
        tcp = await metrics.start(host, port)
    except OSError as exc:
        where = format_address(host, port)
        raise BangorError(
            f"cannot listen on {where} for --metrics: {exc.strerror or exc}"
        ) from None
    server.closers.append(metrics.close)
    server.counts.timing = True  # the forwarding-time histogram has a reader now
    bound = int(tcp.sockets[0].getsockname()[1])
    return f"http://{format_address(host, bound)}{PATH.decode()}"
