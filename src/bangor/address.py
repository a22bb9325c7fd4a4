"""HOST:PORT as people type it and as we print it: one parser, one formatter.

IPv6 addresses go in brackets (``[::1]:7600``, RFC 3986), since their own colons would
otherwise swallow the port. Where a port is required, an unbracketed ``::1:7600`` still
reads as host ``::1``, port 7600 (the last colon); where it may be left out, such a text
is ambiguous (``::1:7600`` is itself an IPv6 address), so it is refused with the
bracketed spelling to use instead.
"""

from __future__ import annotations


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets: ``[::1]:7600``."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def parse_address(
    text: str, default_port: int | None = None, *, min_port: int = 1
) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, and with a ``default_port`` also ``HOST`` and
    ``[V6]``; the host comes back without brackets. ``min_port``: 0 where the system may
    choose. ValueError with a message fit to show (it quotes ``text``) otherwise."""
    text = text.strip()
    bad = f"bad address {text!r}: expected HOST:PORT or [IPv6]:PORT"
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(bad)
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(bad)
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1 and default_port is not None:
        raise ValueError(
            f"bad address {text!r}: put an IPv6 address in brackets, "
            f"[ADDRESS]:PORT (e.g. [::1]:{default_port}) or [ADDRESS]"
        )
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = text, None
    if port_text is None:
        if default_port is None:
            raise ValueError(bad)
        port = default_port
    elif port_text.isascii() and port_text.isdigit():
        port = int(port_text)
    else:
        raise ValueError(f"bad port in address {text!r}")
    if not host or not min_port <= port < 65536:
        raise ValueError(bad)
    return host, port


def parse_listen(text: str, default_host: str) -> tuple[str, int]:
    """Where to listen, as ``--web`` and ``--metrics`` take it: ``[HOST:]PORT``, a PORT
    alone (or ``:PORT``) on ``default_host``; 0 lets the system choose. ValueError as
    :func:`parse_address`."""
    port = text.removeprefix(":")
    if port.isascii() and port.isdigit():
        text = format_address(default_host, int(port))
    return parse_address(text, min_port=0)
