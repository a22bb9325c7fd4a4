"""The page server: files, /config.json, headers, limits, HTTPS, and where plain HTTP may go."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path

import pytest

from bangor.cli import main
from bangor.errors import UsageError
from bangor.server.app import Server
from bangor.server.web import WebOptions, WebService, start_web
from tests.server.test_app import make_server
from tests.server.test_web import web_login
from tests.server.test_webcert import write_pem
from tests.webclient import web_client


async def fetch(
    port: int,
    request: bytes,
    context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=server_hostname
    )
    writer.write(request)
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    return status, headers, body


def get(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def test_the_page_and_its_headers(web: WebService) -> None:
    status, headers, body = await fetch(web.port, get("/", web.port))
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body.startswith(b"<!doctype html>") or body.lower().startswith(b"<!doctype html>")
    assert int(headers["content-length"]) == len(body)
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    csp = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    # blob: for the AudioWorklet modules the page makes from its own bundle.
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self' blob:"
    assert csp["connect-src"] == f"'self' https://127.0.0.1:{web.port}"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["worker-src"] == "'self' blob:"


async def test_config_json(web: WebService) -> None:
    status, headers, body = await fetch(web.port, get("/config.json", web.port))
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "protocol": 1,
        "webtransport": {"port": web.port, "path": "/bangor/1"},
        "certificate_hashes": web.endpoint.certificate_hashes(),
        "accounts": True,
    }
    assert len(json.loads(body)["certificate_hashes"]) == 1


async def test_config_json_of_an_open_server(tmp_path: Path) -> None:
    server = await make_server(tmp_path, open=True)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        _, _, body = await fetch(web.port, get("/config.json", web.port))
        assert json.loads(body)["accounts"] is False
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", 404),
        (b"GET /static/index.html HTTP/1.1\r\n\r\n", 404),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ],
)
async def test_bad_requests(web: WebService, request_bytes: bytes, status: int) -> None:
    got, _, _ = await fetch(web.port, request_bytes)
    assert got == status


async def test_head_has_no_body(web: WebService) -> None:
    status, headers, body = await fetch(web.port, b"HEAD /config.json HTTP/1.1\r\n\r\n")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


async def test_a_slow_request_times_out(tmp_path: Path) -> None:
    server = await make_server(tmp_path, page_request_timeout=0.2)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        status, _, _ = await fetch(web.port, b"GET / HTTP/1.1\r\n")  # never finished
        assert status == 408
    finally:
        await server.close()


async def test_connections_over_the_cap_are_closed(tmp_path: Path) -> None:
    server = await make_server(tmp_path, max_page_connections_per_address=1)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0))
        _, idle = await asyncio.open_connection("127.0.0.1", web.port)
        idle.write(b"GET")
        while web.page.connections == 0:
            await asyncio.sleep(0.001)
        reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
        writer.write(get("/", web.port))
        with contextlib.suppress(ConnectionResetError):  # or reset: either way no answer
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, unanswered
        idle.close()
    finally:
        await server.close()


async def test_https_with_an_operator_certificate(tmp_path: Path) -> None:
    cert_file, key_file = write_pem(tmp_path)
    server = await make_server(tmp_path)
    try:
        web = await start_web(server, WebOptions("127.0.0.1", 0, cert_file, key_file))
        assert web.url == f"https://127.0.0.1:{web.port}/"
        context = ssl.create_default_context(cafile=str(cert_file))
        status, _, body = await fetch(web.port, get("/config.json", web.port), context, "127.0.0.1")
        assert status == 200
        assert json.loads(body)["certificate_hashes"] == []  # the browser checks it itself
        # WebTransport with the same certificate, verified the normal way.
        async with web_client("127.0.0.1", web.port, cafile=str(cert_file)) as browser:
            alice = await web_login(browser, web, "alice")
            await alice.leave()
        # Plain HTTP to the HTTPS port gets nothing.
        with pytest.raises((ConnectionError, ValueError, IndexError)):
            await fetch(web.port, get("/", web.port))
    finally:
        await server.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.com", "::"])
async def test_plain_http_on_a_non_loopback_host_is_refused(server: Server, host: str) -> None:
    with pytest.raises(UsageError, match="needs HTTPS"):
        await start_web(server, WebOptions(host, 0))


def test_the_command_refuses_plain_http_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--host", "0.0.0.0", "--web", "8443", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "needs HTTPS" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--web", "127.0.0.1:x"], "expected [HOST:]PORT"),
        (["--web", "127.0.0.1:70000"], "expected [HOST:]PORT"),
        (["--tls-cert", "c.pem", "--tls-key", "k.pem"], "need --web"),
        (["--web", "8443", "--tls-cert", "c.pem"], "go together"),
        (["--web", "8443", "--tls-cert", "c.pem", "--tls-key", "k.pem"], "no such file"),
    ],
)
def test_the_command_checks_its_web_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["serve", "--host", "127.0.0.1", "--data-dir", str(tmp_path), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
