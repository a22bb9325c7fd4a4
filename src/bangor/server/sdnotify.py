"""systemd's readiness protocol (sd_notify(3)) without libsystemd: a datagram of
``KEY=VALUE`` lines to the unix socket in ``$NOTIFY_SOCKET``. Without that variable
(not started by systemd with Type=notify) it does nothing."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("bangor.server")

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notify(*states: str) -> bool:
    """Send ``states`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``); True if sent."""
    path = os.environ.get(NOTIFY_SOCKET)
    family = getattr(socket, "AF_UNIX", None)
    if not path or family is None:
        return False
    if path.startswith("@"):  # Linux's abstract namespace: a leading NUL byte
        path = "\0" + path[1:]
    elif not path.startswith("/"):  # vsock: and others: not for a service on this host
        log.warning("%s=%s: only unix socket paths are supported", NOTIFY_SOCKET, path)
        return False
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall("\n".join(states).encode())
    except OSError as exc:
        # A readiness note that cannot go is no reason to stop serving.
        log.warning("cannot notify systemd (%s): %s", NOTIFY_SOCKET, exc.strerror or exc)
        return False
    return True
