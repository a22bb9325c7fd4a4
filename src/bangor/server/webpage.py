"""The page server for browser clients: a small, strict HTTP/1.1 GET server on TCP.

It serves the built client (package data ``bangor/web/static``) and ``/config.json``,
one request per connection, with limits on the request size, its time and the number of
connections. HTTPS when the operator gives a certificate (``--tls-cert``/``--tls-key``);
plain HTTP only on loopback (checked by :func:`check_web_host`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import cast

from bangor.errors import UsageError
from bangor.server.admission import source_of
from bangor.server.http1 import request_line, write_response
from bangor.settings import PROTOCOL_VERSION, ServerSettings

log = logging.getLogger("bangor.server.web")

WEBTRANSPORT_PATH = "/bangor/1"
FILES = {
    "/": "index.html",
    "/index.html": "index.html",
    "/app.js": "app.js",
    "/style.css": "style.css",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
}
PLACEHOLDER = (
    b'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    b"<title>Bangor</title></head><body><h1>Bangor</h1>"
    b"<p>The browser client is not built in this installation "
    b"(src/bangor/web/static is empty): build it with <code>npm run build</code> "
    b"in web/.</p></body></html>\n"
)
_HOST = re.compile(r"^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_web_host(host: str, tls: bool) -> None:
    """Browsers give the microphone and WebTransport only to a secure context: plain
    HTTP works on loopback alone."""
    if not tls and not is_loopback(host):
        raise UsageError(
            f"--web {host}: a page on a non-loopback address needs HTTPS "
            "(give --tls-cert FILE --tls-key FILE), or serve it on 127.0.0.1"
        )


def load_static() -> dict[str, bytes]:
    """The built client's files by name; a placeholder page when it is not built."""
    files: dict[str, bytes] = {}
    static = resources.files("bangor").joinpath("web").joinpath("static")
    for name in set(FILES.values()):
        item = static.joinpath(name)
        with contextlib.suppress(OSError):
            if item.is_file():
                files[name] = item.read_bytes()
    files.setdefault("index.html", PLACEHOLDER)
    return files


@dataclass
class PerSource:
    """Open connections per source, for the --web caps (page and WebTransport alike).

    A source is the IPv4 address, or the IPv6 /64 (``network_prefix_v6``): one host
    commonly has a whole /64 to pick from."""

    prefix_v6: int
    counts: dict[str, int] = field(default_factory=dict)

    def source(self, address: str) -> str:
        return source_of(address, 32, self.prefix_v6)[1]

    def at_limit(self, source: str, limit: int) -> bool:
        return self.counts.get(source, 0) >= limit

    def add(self, source: str) -> None:
        self.counts[source] = self.counts.get(source, 0) + 1

    def remove(self, source: str) -> None:
        left = self.counts.get(source, 1) - 1
        if left > 0:
            self.counts[source] = left
        else:
            self.counts.pop(source, None)

    def __bool__(self) -> bool:
        return bool(self.counts)


@dataclass
class PageServer:
    settings: ServerSettings
    web_port: int
    certificate_hashes: Callable[[], list[str]]
    ssl_context: ssl.SSLContext | None = None
    files: dict[str, bytes] = field(default_factory=load_static)
    tcp: asyncio.Server | None = None
    per_address: PerSource = field(init=False)
    connections: int = 0
    served: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Connections still in their TLS handshake or request head, oldest first.
    reading: dict[asyncio.Task[None], None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.per_address = PerSource(self.settings.network_prefix_v6)

    async def start(self, host: str, port: int) -> asyncio.Server:
        self.tcp = await asyncio.start_server(
            self._on_connect,
            host,
            port,
            reuse_address=True,
            limit=self.settings.max_page_request,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.settings.page_request_timeout if self.ssl_context else None,
        )
        return self.tcp

    def close(self) -> None:
        if self.tcp is not None:
            self.tcp.close()
        for task in self.tasks:
            task.cancel()

    def config(self) -> bytes:
        return json.dumps(
            {
                "protocol": PROTOCOL_VERSION,
                "webtransport": {"port": self.web_port, "path": WEBTRANSPORT_PATH},
                "certificate_hashes": self.certificate_hashes(),
                "accounts": not self.settings.open,
            }
        ).encode()

    def headers(self, content_type: str, host: str | None) -> list[tuple[str, str]]:
        # The page talks to the WebTransport endpoint on the same port; 'self' covers
        # https on it from an http page too, the named origin says it plainly.
        connect = "'self'"
        if host is not None:
            connect += f" https://{host}:{self.web_port}"
        # blob: in script-src: AudioWorklet modules load under script-src, and the page
        # makes its two (capture, playback) as Blob URLs from its own bundle; only script
        # already running in the page can make one.
        csp = (
            "default-src 'self'; script-src 'self' blob:; worker-src 'self' blob:; "
            f"connect-src {connect}; media-src 'self' blob:; style-src 'self'; "
            "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'"
        )
        return [
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", csp),
            # Cross-origin isolated: the page may use SharedArrayBuffer (audio worklets).
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Embedder-Policy", "require-corp"),
        ]

    def respond(
        self, method: bytes, target: bytes, host: str | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        path = target.split(b"?", 1)[0].decode("ascii")
        if path == "/config.json":
            body = self.config()
            content_type = TYPES[".json"]
        elif (name := FILES.get(path)) is not None and name in self.files:
            body = self.files[name]
            content_type = TYPES["." + name.rsplit(".", 1)[1]]
        else:
            return 404, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n"
        return 200, self.headers(content_type, host), body

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = self.per_address.source(str(peer[0])) if peer else "?"
        settings = self.settings
        if self.per_address.at_limit(address, settings.max_page_connections_per_address):
            writer.transport.abort()
            return
        if self.connections >= settings.max_page_connections and self.reading:
            # Full: the connection waiting longest for its request makes room (a real
            # request takes a round trip, so idlers cannot keep everyone out).
            oldest = next(iter(self.reading))
            del self.reading[oldest]
            oldest.cancel()
        elif self.connections >= settings.max_page_connections:
            writer.transport.abort()
            return
        self.connections += 1
        self.per_address.add(address)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.reading[task] = None
        closed = False
        try:
            await self._serve(reader, writer)
            # Until the client has taken the whole answer the connection counts, and no
            # longer than this: the body would otherwise wait in our buffer (and the
            # socket stay open) for as long as the client keeps its window closed.
            async with asyncio.timeout(settings.page_send_timeout):
                writer.close()
                await writer.wait_closed()
            closed = True
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # close() cancels us. Ending cancelled would make Python 3.11's streams
            # callback log a CancelledError traceback (as in app.py).
            pass
        finally:
            self.tasks.discard(task)
            self.reading.pop(task, None)
            self.connections -= 1
            self.per_address.remove(address)
            if not closed:
                writer.transport.abort()  # the answer not taken in time, or cancelled

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status: int
        try:
            async with asyncio.timeout(self.settings.page_request_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
            self.reading.pop(cast("asyncio.Task[None]", asyncio.current_task()), None)
        except TimeoutError:
            status, body, method = 408, b"", b"GET"
        except asyncio.LimitOverrunError:
            status, body, method = 431, b"", b"GET"
        except asyncio.IncompleteReadError:
            return  # the client went away
        else:
            lines = head[:-4].split(b"\r\n")
            request = request_line(lines[0])
            host = self._host(lines[1:])
            if isinstance(request, int):
                status, body, method = request, b"", b"GET"
                headers: list[tuple[str, str]] = []
            else:
                method, target = request
                status, headers, body = self.respond(method, target, host)
            self.served += 1
            write_response(writer, status, headers, body, method == b"HEAD")
            return
        write_response(writer, status, [], body, False)

    @staticmethod
    def _host(lines: list[bytes]) -> str | None:
        """The Host header when it is a plain host[:port] (it goes into the CSP)."""
        for line in lines:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"host":
                text = value.strip().decode("ascii", "replace")
                host = text.rsplit(":", 1)[0] if not text.endswith("]") else text
                return host if _HOST.match(host) else None
        return None
