"""Churn and floods from a member, with real processes: the call keeps its audio."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bangor.wire.invite import Invite
from bangor.wire.pairwise import derive_join_token
from tests.audiocheck import longest_gap_ms, read_wav_48k, tone_present
from tests.integration.churner import ChurnStats, churn, flood
from tests.integration.conftest import PASSWORD, ServerProcess

pytestmark = pytest.mark.integration

ATTACK_SECONDS = 6.0
FLOOD_RATE = 10_000.0  # peer messages a second, as in the issue
MAX_GAP_MS = 200
MAX_ERROR_EVENTS = 20


async def attack(server: ServerProcess, invite: Invite) -> list[ChurnStats]:
    room = invite.room_id.hex()
    token = derive_join_token(invite.secret, invite.room_id)  # trudy and eve have the invite
    args = (server.host, server.port)
    return list(
        await asyncio.gather(
            churn(*args, "mallory", PASSWORD, room, ATTACK_SECONDS),  # an account, no secret
            churn(*args, "trudy", PASSWORD, room, ATTACK_SECONDS, secret=invite.secret),
            flood(*args, "eve", PASSWORD, room, ATTACK_SECONDS, FLOOD_RATE, token),
        )
    )


def test_churn_and_peer_floods_do_not_cut_the_call(server: ServerProcess, tmp_path: Path) -> None:
    for user in ("alice", "bob", "mallory", "trudy", "eve"):
        server.add_user(user)
    invite = server.create_room("alice")
    heard = tmp_path / "bob.wav"
    call = ("--relay-only", "--vad", "off")  # every frame through the server, none held back
    bob = server.join(invite, "bob", "--output", str(heard), "--duration", "16", *call)
    bob.event("joined")
    alice = server.join(invite, "alice", "--input", "tone:440", "--duration", "13", *call)
    bob.event("member_verified")
    mallory, trudy, eve = asyncio.run(attack(server, Invite.parse(invite)))
    assert alice.wait() == 0 and bob.wait() == 0
    # The attackers did what they could: many rounds, trudy verified, eve's flood sent.
    # mallory, without the invite, never got in: every try refused at the door.
    assert mallory.joins == 0 and mallory.refused + mallory.throttled > 20, mallory
    assert trudy.verified > 0, trudy
    assert eve.peer_sent > FLOOD_RATE * ATTACK_SECONDS / 2, eve
    present = tone_present(read_wav_48k(heard), 440)
    assert present.sum() * 10 > 8000, "alice must be heard for most of her 13 s"
    gap = longest_gap_ms(present)
    assert gap <= MAX_GAP_MS, f"longest gap in alice's tone: {gap} ms; {mallory}; {trudy}; {eve}"
    errors = [str(e["message"]) for e in bob.events() if e["event"] in ("error", "warning")]
    assert len(errors) <= MAX_ERROR_EVENTS, (len(errors), errors[:10])
