"""The request line both small HTTP servers read (the page, /metrics)."""

from __future__ import annotations

from bangor.server.http1 import request_line


def test_get_and_head_are_taken_and_the_rest_refused_by_kind() -> None:
    assert request_line(b"GET /metrics?x=1 HTTP/1.1") == (b"GET", b"/metrics?x=1")
    assert request_line(b"HEAD / HTTP/1.0") == (b"HEAD", b"/")
    for malformed in (b"GET /a b HTTP/1.1", b"GET / HTTP/2", b"GET metrics HTTP/1.1"):
        assert request_line(malformed) == 400
    for other in (b"POST / HTTP/1.1", b"get / HTTP/1.1", b"", b"\x00"):
        assert request_line(other) == 405
