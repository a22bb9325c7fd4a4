"""Python's side of web/test/wire/interop_e2ee.test.ts: bangor.wire's end-to-end layer
driven by JSON lines.

One request per stdin line, one reply per stdout line; bytes are hex. Ops: SFrame seal
and open, identity (public key, safety number, fingerprint), pair channels (``pair_*``)
and RoomCrypto members (``rc_*``), each named by an ``id``. A failure replies
``{"error": "..."}`` and the script goes on.
"""

from __future__ import annotations

from typing import Any

from interop_loop import serve

from bangor.errors import PeerError
from bangor.wire import e2ee
from bangor.wire.identity import identity_fingerprint, safety_number
from bangor.wire.noise import public_key
from bangor.wire.pairwise import (
    PairChannel,
    PeerMessage,
    PeerVerified,
    derive_join_token,
    derive_room_psk,
)
from bangor.wire.sframe import SFrameHeader, SFrameKey

channels: dict[str, PairChannel] = {}
members: dict[str, e2ee.RoomCrypto] = {}


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def event_json(event: e2ee.E2EEEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(event).__name__}
    for name, value in vars(event).items():
        if isinstance(value, bytes):
            out[name] = value.hex()
        elif isinstance(value, tuple):
            out[name] = [list(v) for v in value]
        else:
            out[name] = value
    return out


def pair_events(events: list[PeerVerified | PeerMessage]) -> list[dict[str, str]]:
    out = []
    for e in events:
        if isinstance(e, PeerVerified):
            out.append(
                {"type": "verified", "identity": e.remote_identity.hex(), "hello": e.hello.hex()}
            )
        else:
            out.append({"type": "message", "payload": e.payload.hex()})
    return out


def handle(req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    if op == "sframe_seal":
        key = SFrameKey(int(req["kid"]), h(req["base_key"]))
        return {"frame": key.seal(int(req["ctr"]), h(req["metadata"]), h(req["plaintext"])).hex()}
    if op == "sframe_open":
        frame = h(req["frame"])
        header, size = SFrameHeader.parse(frame)
        key = SFrameKey(header.kid, h(req["base_key"]))
        plain = key.open(header.ctr, frame[:size], h(req["metadata"]), frame[size:])
        return {"plaintext": plain.hex(), "kid": str(header.kid), "ctr": str(header.ctr)}
    if op == "identity":
        public = public_key(h(req["private"]))
        return {"public": public.hex(), "fingerprint": identity_fingerprint(public)}
    if op == "safety":
        return {"number": safety_number(h(req["local"]), h(req["remote"]))}
    if op == "decode":
        decoder = {
            "hello": e2ee._hello_decoder,
            "payload": e2ee._payload_decoder,
            "chat": e2ee._chat_decoder,
        }[req["what"]]
        try:
            e2ee._decode(decoder, h(req["data"]), req["what"])  # type: ignore[arg-type]
        except PeerError as exc:
            return {"ok": False, "reason": str(exc)}
        return {"ok": True}
    if op == "psk":
        return {"psk": derive_room_psk(h(req["secret"]), h(req["room_id"])).hex()}
    if op == "join_token":
        return {"token": derive_join_token(h(req["secret"]), h(req["room_id"])).hex()}
    if op == "pair_new":
        channels[req["id"]] = PairChannel(
            initiator=req["initiator"],
            identity_private=h(req["identity"]),
            psk=h(req["psk"]),
            prologue=h(req["prologue"]),
            hello=h(req["hello"]),
        )
        return {"ok": True}
    if op.startswith("pair_"):
        ch = channels[req["id"]]
        events: list[PeerVerified | PeerMessage] = []
        if op == "pair_start":
            ch.start()
        elif op == "pair_receive":
            events = ch.receive(h(req["data"]))
        elif op == "pair_send":
            ch.send(h(req["payload"]))
        else:
            raise ValueError(f"unknown op {op!r}")
        return {
            "events": pair_events(events),
            "messages": [m.hex() for m in ch.messages_to_send()],
            "established": ch.established,
            "failed": ch.failed,
        }
    if op == "rc_new":
        members[req["id"]] = e2ee.RoomCrypto(
            room_id=h(req["room_id"]),
            secret=h(req["secret"]),
            session_id=req["session_id"],
            user=req["user"],
            nick=req["nick"],
            identity_private=h(req["identity"]),
        )
        return {"public": members[req["id"]].identity_public.hex()}
    rc = members[req["id"]]
    now = float(req.get("now", 0.0))
    if op == "rc_start":
        rc.start([(sid, user) for sid, user in req["members"]], now)
    elif op == "rc_member_joined":
        rc.member_joined(req["session_id"], req["user"], now)
    elif op == "rc_member_left":
        rc.member_left(req["session_id"], now)
    elif op == "rc_peer":
        rc.peer_received(req["sender"], h(req["data"]), now)
    elif op == "rc_timer":
        rc.handle_timer(now)
    elif op == "rc_report":
        rc.send_report(req["to"], req["loss"], req.get("burst", 0.0))
    elif op == "rc_candidates":
        rc.send_candidates(
            req["to"], h(req["key"]), [(k, ip, port) for k, ip, port in req["candidates"]]
        )
    elif op == "rc_offer_secret":
        rc.offer_secret(h(req["secret"]))
    elif op == "rc_token_changed":
        taken = rc.token_changed(h(req["token"]))
        return {"secret": None if taken is None else taken.hex()}
    elif op == "rc_seal_voice":
        return {"frame": rc.seal_voice(h(req["payload"])).hex()}
    elif op == "rc_open_voice":
        voice = rc.open_voice(req["sender"], h(req["frame"]), now)
        return {"plaintext": None if voice is None else voice.hex()}
    elif op == "rc_seal_chat":
        return {"data": rc.seal_chat(req["text"]).hex()}
    elif op == "rc_open_chat":
        rc.open_chat(req["sender"], h(req["data"]), now)
    elif op == "rc_key":
        sender_key = rc.sender_key
        return {
            "generation": sender_key.generation,
            "step": sender_key.step,
            "base_key": sender_key.base_key.hex(),
        }
    elif op != "rc_poll":
        raise ValueError(f"unknown op {op!r}")
    drained = []
    while (event := rc.next_event()) is not None:
        drained.append(event_json(event))
    return {
        "events": drained,
        "messages": [[to, data.hex()] for to, data in rc.messages_to_send()],
    }


def main() -> None:
    serve(handle)


if __name__ == "__main__":
    main()
