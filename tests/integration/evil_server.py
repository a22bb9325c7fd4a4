"""`bangor serve` that attacks the members' end-to-end messages it relays.

Usage: python evil_server.py serve [options]. With every `peer` message it relays,
the server also sends the receiver every earlier message of that pair again
(replays: old handshakes, old key messages) and a copy with one bit flipped.
"""

from __future__ import annotations

import sys

from bangor import cli
from bangor.server import app
from bangor.wire import control as msg

_history: list[tuple[int, msg.PeerSend]] = []
_relay = app.Connection.on_peer


def on_peer(self: app.Connection, peer: msg.PeerSend) -> None:
    _relay(self, peer)
    target = self.server.connections.get(peer.to)
    if target is None or target.room_id != self.room_id:
        return
    for sender, old in _history:
        if sender == self.session_id and old.to == peer.to:
            target.send(msg.PeerReceived(sender, old.data))
    flipped = bytearray(peer.data)
    flipped[-1] ^= 0x01
    target.send(msg.PeerReceived(self.session_id, bytes(flipped)))
    _history.append((self.session_id, peer))


app.Connection.on_peer = on_peer  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
