"""`bangor host`: a server in open mode inside this client's process, and the host joins it.

So a group needs no third machine: one friend runs ``bangor host`` and passes the
invite code on. The embedded server keeps its key, its SQLite store and the room (id and
secret, mode 0600) in ``$BANGOR_HOME/host``, so the same invite works again next time
while the host's address stays the same.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bangor.client import events as ev
from bangor.client.identity import identity_path
from bangor.client.roombook import RoomBook
from bangor.errors import BangorError, NotFoundError
from bangor.keyfile import write_private
from bangor.server.app import Server, open_server, token_hash
from bangor.server.store import database_url
from bangor.settings import ServerSettings
from bangor.wire.invite import SECRET_SIZE, Invite, normalize_host
from bangor.wire.noise import fingerprint as server_fingerprint
from bangor.wire.noise import public_key
from bangor.wire.pairwise import derive_join_token

HOST_DIR = "host"
ROOM_FILE = "room.json"
# An address in TEST-NET-1 (RFC 5737): connecting a UDP socket to it sends nothing and
# only asks the kernel which local address the default route would use.
_ROUTE_PROBE = ("192.0.2.1", 9)

log = logging.getLogger("bangor.host")


def host_dir() -> Path:
    """Where the embedded server keeps its state: beside this device's identity key."""
    return identity_path().parent / HOST_DIR


def reachable_address() -> str:
    """This machine's address on its default route (what friends on the network reach)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(_ROUTE_PROBE)
            address: str = probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"  # no network at all: only this machine can join
    return address


def _load_room(path: Path) -> tuple[str, bytes] | None:
    try:
        data = json.loads(path.read_text())
        return str(data["room_id"]), bytes.fromhex(data["secret"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BangorError(f"host room file {path} is unreadable ({exc}); remove it") from None


def _save_room(path: Path, room_id: str, secret: bytes) -> None:
    data = json.dumps({"room_id": room_id, "secret": secret.hex()}).encode()
    try:
        write_private(path, data)
    except OSError as exc:
        raise BangorError(f"cannot save the host room in {path}: {exc.strerror}") from None


async def _room(server: Server, owner: str, name: str, path: Path) -> tuple[str, bytes]:
    """The room this host served last time (same invite, or the one a kick or rotation
    in that call made), else a new one; its join token set to match."""
    saved = _load_room(path)
    if saved is not None:
        try:
            room = await server.store.get_room(saved[0])
            if room.name == name:
                known = RoomBook.default().get(room.id)
                secret = known.decoded().secret if known is not None else saved[1]
                return await _keep(server, path, room.id, secret)
        except NotFoundError:
            pass
    owner_id = await server.store.open_user(owner)
    rooms = await server.store.list_rooms(owner_id)
    existing = next((r for r in rooms if r.name == name), None)
    if existing is None:
        existing = await server.store.create_room(
            owner_id, name, server.settings.max_rooms_per_user
        )
    return await _keep(server, path, existing.id, secrets.token_bytes(SECRET_SIZE))


async def _keep(server: Server, path: Path, room_id: str, secret: bytes) -> tuple[str, bytes]:
    token = derive_join_token(secret, bytes.fromhex(room_id))
    await server.store.set_room_token(room_id, token_hash(token))
    _save_room(path, room_id, secret)
    return room_id, secret


async def host_call(
    *,
    port: int,
    address: str | None,
    room_name: str,
    owner: str,
    emit: Callable[[ev.Event], None],
    join: Callable[[Invite], Coroutine[Any, Any, None]],
    data_dir: Path | None = None,
) -> None:
    """Serve on ``port`` (TCP and UDP, all interfaces), announce the invite, then ``join``.

    ``join`` gets the invite with the loopback address (the host reaches its own server
    there); the one announced carries ``address`` (default: the default route's).
    """
    data_dir = data_dir or host_dir()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    server = await open_server(data_dir, database_url(data_dir, None), ServerSettings(open=True))
    try:
        try:
            await server.start("0.0.0.0", port)
        except OSError as exc:
            raise BangorError(f"cannot listen on port {port}: {exc.strerror or exc}") from None
        bound = server.address[1]
        room_id, secret = await _room(server, owner, room_name, data_dir / ROOM_FILE)
        fingerprint = server_fingerprint(public_key(server.static_key))
        public = Invite(
            normalize_host(address or reachable_address()),
            bound,
            bytes.fromhex(room_id),
            secret,
            fingerprint,
        )
        log.info("hosting room %s on port %d", room_name, bound)
        emit(ev.InviteReady(public.encode(), public.host, bound))
        local = Invite("127.0.0.1", bound, public.room_id, secret, fingerprint)
        await join(local)
    finally:
        await server.close()
