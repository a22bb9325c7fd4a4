"""Python's side of the web/test/wire cross tests: bangor.wire driven by JSON lines.

One request per stdin line (``{"op": ..., ...}``), one reply per stdout line. Bytes
travel as hex; in control messages a byte string is ``{"$bytes": "<hex>"}``. A failure
replies ``{"error": "<message>", "type": "<exception class>"}`` and the script goes on.
The ``server_*`` ops run one in-memory ControlSession in the server role, which the
test answers for (the script is no server: it sends what it is told).
"""

from __future__ import annotations

from typing import Any

import msgspec
from interop_loop import serve

from bangor.errors import CloseCode
from bangor.wire import control, session
from bangor.wire.invite import Invite, normalize_host
from bangor.wire.media import HopOpener, HopSealer, PacketType, derive_media_keys
from bangor.wire.noise import fingerprint, format_fingerprint
from bangor.wire.session import ControlSession, Role, SessionEvent

_ANY: Any = control.ClientMessage | control.ServerMessage
_any_decoder: Any = msgspec.msgpack.Decoder(_ANY)
server: ControlSession | None = None


def to_json(value: Any) -> Any:
    """A message (or part of one) as JSON: bytes become {"$bytes": hex}."""
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def message_from_json(value: Any) -> Any:
    # Through msgpack and the strict union decoder, so the message is checked as on the wire.
    return _any_decoder.decode(msgspec.msgpack.encode(from_json(value)))


def message_to_json(message: Any) -> Any:
    return to_json(msgspec.to_builtins(message, builtin_types=(bytes,)))


def event_to_json(event: SessionEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"event": type(event).__name__}
    for name in ("message", "remote_static", "handshake_hash", "error", "reason"):
        value = getattr(event, name, None)
        if value is None:
            continue
        if isinstance(value, bytes):
            out[name] = value.hex()
        elif isinstance(value, msgspec.Struct):
            out[name] = message_to_json(value)
        else:
            out[name] = getattr(value, "value", value)
    return out


def invite_json(invite: Invite) -> dict[str, Any]:
    return {
        "host": invite.host,
        "port": invite.port,
        "room_id": invite.room_id.hex(),
        "secret": invite.secret.hex(),
        "fingerprint": invite.fingerprint.hex(),
    }


def drain(session: ControlSession) -> list[dict[str, Any]]:
    events = []
    while (event := session.next_event()) is not None:
        events.append(event_to_json(event))
    return events


def handle(req: dict[str, Any]) -> dict[str, Any]:
    global server
    op = req["op"]
    if op == "invite_encode":
        invite = Invite(
            req["host"],
            req["port"],
            bytes.fromhex(req["room_id"]),
            bytes.fromhex(req["secret"]),
            bytes.fromhex(req["fingerprint"]),
        )
        return {"code": invite.encode(), "bytes": invite.to_bytes().hex(), **invite_json(invite)}
    if op == "invite_parse":
        return invite_json(Invite.parse(req["text"]))
    if op == "normalize_host":
        return {"host": normalize_host(req["host"])}
    if op == "fingerprint":
        fp = fingerprint(bytes.fromhex(req["public"]))
        return {"fingerprint": fp.hex(), "text": format_fingerprint(fp)}
    if op == "media_keys":
        keys = derive_media_keys(bytes.fromhex(req["secret"]))
        return {"c2s": keys.client_to_server.hex(), "s2c": keys.server_to_client.hex()}
    if op == "hop_seal":
        sealer = HopSealer(bytes.fromhex(req["key"]), req["session_id"])
        sealer._counter = req.get("counter", 0)  # a test starts anywhere
        out = [
            sealer.seal(PacketType(p["type"]), bytes.fromhex(p["payload"])).hex()
            for p in req["packets"]
        ]
        return {"datagrams": out}
    if op == "hop_open":
        opener = HopOpener(bytes.fromhex(req["key"]), req["session_id"])
        results: list[dict[str, Any]] = []
        for d in req["datagrams"]:
            try:
                header, payload = opener.open(bytes.fromhex(d))
                results.append(
                    {
                        "type": int(header.type),
                        "session_id": header.session_id,
                        "counter": str(header.counter),
                        "payload": payload.hex(),
                    }
                )
            except Exception as exc:
                results.append({"error": str(exc), "type": type(exc).__name__})
        return {"results": results}
    if op == "control_encode":
        return {"data": control.encode(message_from_json(req["message"])).hex()}
    if op == "control_decode":
        data = bytes.fromhex(req["data"])
        if req["side"] == "server":
            decoded: Any = control.decode_server_message(data)
        else:
            decoded = control.decode_client_message(data)
        return {"message": message_to_json(decoded)}
    if op == "tables":
        # The session's tables by tag, for the TS mirror (web/src/wire/session.ts).
        return {
            "client_sends": {
                state.name: sorted(control.tag(t) for t in table)
                for state, table in session.CLIENT_SENDS.items()
            },
            "server_sends": {
                state.name: sorted(control.tag(t) for t in table)
                for state, table in session.SERVER_SENDS.items()
            },
            "replies": {
                control.tag(reply): [control.tag(request), None if then is None else then.name]
                for reply, (request, then) in session.REPLIES.items()
            },
            "tracked": sorted(session._TRACKED),
        }
    if op == "server_new":
        server = ControlSession(
            Role.SERVER, bytes.fromhex(req["static"]), idle_timeout=req.get("idle_timeout", 15.0)
        )
        return {}
    assert server is not None
    if op == "server_feed":
        error = None
        events: list[dict[str, Any]] = []
        try:
            server.receive_data(bytes.fromhex(req["data"]), req["now"])
            events = drain(server)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        return {
            "out": server.data_to_send().hex(),
            "events": events,
            "state": server.state.name,
            "raised": error,
        }
    if op == "server_send":
        server.send(message_from_json(req["message"]))
        return {"out": server.data_to_send().hex(), "state": server.state.name}
    if op == "server_fail":
        server.fail(CloseCode(req["code"]), req["message"], req.get("ref", ""))
        return {"out": server.data_to_send().hex(), "state": server.state.name}
    if op == "server_timer":
        server.handle_timer(req["now"])
        return {
            "out": server.data_to_send().hex(),
            "events": drain(server),
            "state": server.state.name,
            "timer": server.get_timer(),
        }
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    serve(handle, lambda exc: {"error": str(exc), "type": type(exc).__name__})


if __name__ == "__main__":
    main()
