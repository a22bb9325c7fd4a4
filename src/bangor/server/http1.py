"""The little HTTP/1.1 the server speaks: the page for browsers (webpage.py) and
``/metrics`` (metrics.py). One GET or HEAD a connection, answered and closed."""

from __future__ import annotations

import asyncio
import re

_REQUEST_LINE = re.compile(rb"^(GET|HEAD) (/[!-~]*) HTTP/1\.[01]$")
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
}


def request_line(line: bytes) -> tuple[bytes, bytes] | int:
    """(method, target) of a GET or HEAD request line; else the status to answer it
    with: 400 for a malformed GET or HEAD, 405 for any other method."""
    match = _REQUEST_LINE.match(line)
    if match is None:
        return 400 if line.split(b" ", 1)[0] in (b"GET", b"HEAD") else 405
    return match.group(1), match.group(2)


def write_response(
    writer: asyncio.StreamWriter,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    head_only: bool,
) -> None:
    """The status line, ``headers``, the length and ``Connection: close``, then ``body``
    (not for HEAD, which gets GET's headers, its length too)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    writer.write("\r\n".join(lines).encode("ascii") + (b"" if head_only else body))
