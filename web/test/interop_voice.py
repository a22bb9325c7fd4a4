"""Python's wire/voice.py for web/test/wire/voice.test.ts: JSON on stdin, JSON on stdout.

In: {"pack": [{"seq", "packet", "depth", "redundant": [hex], "opus": hex,
               "distances": [int], "plan": [int]}],
     "parse": [hex], "relay": [{"sender", "payload": hex}], "unrelay": [hex]}
Out: {"packed": [hex], "parsed": [frame | {"error": msg}], "relayed": [hex],
      "unrelayed": [{"sender", "payload": hex} | {"error": msg}]}
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bangor.errors import PacketError
from bangor.wire.voice import VoiceFrame, pack_relayed, unpack_relayed


def frame_json(frame: VoiceFrame) -> dict[str, Any]:
    return {
        "seq": frame.seq,
        "packet": frame.packet,
        "depth": frame.depth,
        "redundant": [r.hex() for r in frame.redundant],
        "opus": frame.opus.hex(),
        "distances": list(frame.distances),
        "plan": list(frame.plan),
        "copies": [[seq, r.hex()] for seq, r in frame.copies()],
        "reach": frame.reach,
    }


def parse(data: str) -> dict[str, Any]:
    try:
        return frame_json(VoiceFrame.parse(bytes.fromhex(data)))
    except PacketError as exc:
        return {"error": str(exc)}


def unrelay(data: str) -> dict[str, Any]:
    try:
        sender, payload = unpack_relayed(bytes.fromhex(data))
    except PacketError as exc:
        return {"error": str(exc)}
    return {"sender": sender, "payload": payload.hex()}


def main() -> None:
    request = json.load(sys.stdin)
    packed = [
        VoiceFrame(
            f["seq"],
            bytes.fromhex(f["opus"]),
            f["packet"],
            tuple(bytes.fromhex(r) for r in f["redundant"]),
            f["depth"],
            tuple(f["distances"]),
            tuple(f["plan"]),
        )
        .serialize()
        .hex()
        for f in request.get("pack", [])
    ]
    json.dump(
        {
            "packed": packed,
            "parsed": [parse(d) for d in request.get("parse", [])],
            "relayed": [
                pack_relayed(r["sender"], bytes.fromhex(r["payload"])).hex()
                for r in request.get("relay", [])
            ],
            "unrelayed": [unrelay(d) for d in request.get("unrelay", [])],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
