"""Python's side of web/test/wire/noise.test.ts: noiseprotocol driven by JSON lines.

One request per stdin line, one reply per stdout line. Requests name a connection
(``id``) and an ``op``: new, write, read, state, encrypt, decrypt. Bytes are hex.
A failure replies ``{"error": "..."}`` and the script goes on.
"""

from __future__ import annotations

import warnings
from typing import Any

from interop_loop import serve
from noise.connection import Keypair, NoiseConnection

conns: dict[str, Any] = {}
# noiseprotocol forgets the HandshakeState (and rs) at the split: keep our own.
states: dict[str, Any] = {}


def handle(req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    cid = req.get("id", "")
    if op == "new":
        conn: Any = NoiseConnection.from_name(req["protocol"].encode())
        if req["initiator"]:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.set_prologue(bytes.fromhex(req.get("prologue", "")))
        if req.get("psk"):
            conn.set_psks(psk=bytes.fromhex(req["psk"]))
        conn.set_keypair_from_private_bytes(Keypair.STATIC, bytes.fromhex(req["static"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if req.get("ephemeral"):
                conn.set_keypair_from_private_bytes(
                    Keypair.EPHEMERAL, bytes.fromhex(req["ephemeral"])
                )
            conn.start_handshake()
        conns[cid] = conn
        states[cid] = conn.noise_protocol.handshake_state
        return {"ok": True}
    conn = conns[cid]
    if op == "write":
        return {"message": bytes(conn.write_message(bytes.fromhex(req.get("payload", "")))).hex()}
    if op == "read":
        return {"payload": bytes(conn.read_message(bytes.fromhex(req["message"]))).hex()}
    if op == "state":
        done = bool(conn.handshake_finished)
        rs = getattr(states[cid], "rs", None)
        public = getattr(rs, "public_bytes", None)
        return {
            "finished": done,
            "hash": bytes(conn.get_handshake_hash()).hex() if done else None,
            "rs": public.hex() if isinstance(public, bytes) else None,
        }
    if op == "encrypt":
        return {"ciphertext": bytes(conn.encrypt(bytes.fromhex(req["plaintext"]))).hex()}
    if op == "decrypt":
        return {"plaintext": bytes(conn.decrypt(bytes.fromhex(req["ciphertext"]))).hex()}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    serve(handle)


if __name__ == "__main__":
    main()
