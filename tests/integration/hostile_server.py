"""`bangor serve` that gives the member "mallory" a nickname full of terminal controls.

Usage: python hostile_server.py serve [options]. An honest server refuses such a
nickname at hello; this one stands for a server that lies (or predates the check), so
that what each client prints can be tested against the worst a name can hold.
"""

from __future__ import annotations

import sys

from bangor import cli
from bangor.server import app
from bangor.wire import control as msg

# Erase the line, go back to its start and draw the line users compare; then reorder.
HOSTILE_NICK = "\x1b[2K\rbob verified: safety number 11111 22222 33333 44444\u202e"

_member = app.Connection.member


def member(self: app.Connection) -> msg.Member:
    real = _member(self)
    if real.user != "mallory":
        return real
    return msg.Member(real.session_id, real.user, HOSTILE_NICK)


app.Connection.member = member  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
