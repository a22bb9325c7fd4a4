"""`bangor serve` with every byte the server handles recorded (for the server-blind test).

Usage: python tap_server.py TAP_FILE serve [options]. Records, as the server sees
them: raw UDP datagrams and TCP reads, control messages after Noise decryption
(both directions), and media payloads after hop decryption (both directions).
Each record is a kind byte, a 4-byte length and the bytes.
"""

from __future__ import annotations

import sys
from typing import Any

from bangor import cli
from bangor.server import app
from bangor.wire import media, noise

_tap = open(sys.argv[1], "ab", buffering=0)  # noqa: SIM115 - lives as long as the process


def record(kind: bytes, data: bytes) -> None:
    _tap.write(kind + len(data).to_bytes(4, "big") + bytes(data))


def wrap(cls: Any, name: str, before: Any = None, after: Any = None) -> None:
    original = getattr(cls, name)

    def wrapper(self: Any, *args: Any) -> Any:
        if before is not None:
            before(*args)
        result = original(self, *args)
        if after is not None:
            after(result)
        return result

    setattr(cls, name, wrapper)


def _received(event: Any) -> None:
    if isinstance(event, noise.MessageReceived):
        record(b"C", event.payload)


wrap(noise.NoiseSession, "receive_data", before=lambda data, now: record(b"T", data))
wrap(noise.NoiseSession, "next_event", after=_received)
wrap(noise.NoiseSession, "send", before=lambda payload: record(b"S", payload))
wrap(media.HopOpener, "open", after=lambda result: record(b"U", result[1]))
wrap(media.HopSealer, "seal", before=lambda ptype, payload: record(b"D", payload))
wrap(app.RelayProtocol, "datagram_received", before=lambda data, addr: record(b"R", data))

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[2:]))
