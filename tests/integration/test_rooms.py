"""A room's whole life run by its owner from the CLI and in a call, with real processes:
owner, members, an outsider with an account, a kicked and a banned member, old and new
invites; the call of the others goes on through every kick and rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bangor.wire.invite import SECRET_SIZE, Invite
from tests.integration.conftest import (
    Client,
    ServerProcess,
    client_env,
    run_bangor,
)

pytestmark = pytest.mark.integration


def room(
    server: ServerProcess, user: str, *args: str, home: str | None = None
) -> tuple[int, str, str]:
    """``home``: whose device (default: the user's own)."""
    result = run_bangor(
        ["room", *args, "--server", server.address, "--user", user],
        env=client_env(server.home / (home or user)),
    )
    return result.returncode, result.stdout.strip(), result.stderr


def join(server: ServerProcess, invite: str, user: str, *args: str) -> Client:
    """In the call until the test ends it (stdin stays open for /commands)."""
    return server.join(
        invite, user, "--input", "silence", "--output", "null", *args, "--duration", "60", stdin=""
    )


def verified(client: Client, *users: str) -> None:
    """Wait until ``client`` has verified every one of ``users``."""
    seen: set[str] = set()

    def all_seen(line: str) -> bool:
        if line.startswith("{") and (event := json.loads(line))["event"] == "member_verified":
            seen.add(event["member"]["user"])
        return set(users) <= seen

    client.stdout.wait_for(all_seen)


def left_reason(client: Client) -> str:
    """Why the client stopped: the error it ended with (a refused join has no ``left``)."""
    return str(client.event("error")["message"])


def test_an_owner_runs_a_room_from_the_command_line(server: ServerProcess) -> None:
    for user in ("alice", "bob", "eve", "mallory", "dave"):
        server.add_user(user)
    first = server.create_room("alice")

    # The device that created the room prints its invite again; the owner sees it listed.
    assert room(server, "alice", "invite", "friends") == (0, first, "")
    code, listed, _ = room(server, "alice", "list")
    assert code == 0
    assert listed.startswith("friends\t") and "owner alice" in listed and "invite saved" in listed

    # An account without the invite (the room id but not the secret) never enters.
    real = Invite.parse(first)
    forged = Invite(real.host, real.port, real.room_id, bytes(SECRET_SIZE), real.fingerprint)
    outsider = join(server, forged.encode(), "mallory")
    assert outsider.wait() == 4 and "no such room" in left_reason(outsider)

    bob = join(server, first, "bob")
    bob.event("joined")
    eve = join(server, first, "eve")
    verified(bob, "eve")

    # Kick: eve is out at once, bob stays and gets the new invite over his pair channel.
    code, second, err = room(server, "alice", "kick", "friends", "eve")
    assert code == 0, err
    assert eve.wait() == 4 and "removed from the room by its owner" in left_reason(eve)
    assert bob.event("member_left")["member"]["user"] == "eve"  # type: ignore[index]
    assert bob.event("invite_changed")["invite"] == second != first
    assert room(server, "bob", "invite", "friends")[1] == second  # bob's device keeps it
    # eve knows the old secret; the old invite no longer opens the room.
    again = join(server, first, "eve")
    assert again.wait() == 4 and "no such room" in left_reason(again)

    # Ban (eve is not in the call): not even the new invite lets her account in.
    code, third, err = room(server, "alice", "kick", "friends", "eve", "--ban")
    assert code == 0, err
    assert bob.events_of("invite_changed", 2, timeout=20)[-1]["invite"] == third
    banned = join(server, third, "eve")
    assert banned.wait() == 4 and "banned" in left_reason(banned)

    # A newcomer with the new invite and bob verify each other: bob's secret moved on.
    dave = join(server, third, "dave")
    verified(dave, "bob")

    # Rotate with two members in the call: both stay, both get it; the old one fails.
    # (The owner types her name in capitals: the members know her as stored, "alice".)
    code, fourth, err = room(server, "ALICE", "rotate", "friends", home="alice")
    assert code == 0, err
    for member, before in ((bob, 2), (dave, 0)):
        assert member.events_of("invite_changed", before + 1, timeout=20)[-1]["invite"] == fourth
    late = join(server, third, "mallory")
    assert late.wait() == 4

    # Only the owner manages the room.
    assert room(server, "bob", "rotate", "friends")[0] == 4

    # The server's operator sees every room, its owner and its bans.
    result = run_bangor(["room", "list", *server.store_args()], check=True)
    assert result.stdout.startswith("friends\t")
    assert "owner alice" in result.stdout and "1 banned" in result.stdout

    assert room(server, "alice", "bans", "friends")[:2] == (0, "eve")

    # Unban: eve's account may come back, with the room's current invite.
    code, out, err = room(server, "alice", "unban", "friends", "EVE")
    assert (code, out) == (0, "") and "eve may join room friends again" in err, err
    code, _, err = room(server, "alice", "unban", "friends", "eve")
    assert code == 1 and "eve is not banned from this room" in err
    back = join(server, fourth, "eve")
    back.event("joined")
    assert room(server, "alice", "bans", "friends")[:2] == (0, "")

    # Delete: the members in the call are told and leave; the room is gone.
    code, _, err = room(server, "alice", "delete", "friends")
    assert code == 0, err
    for member in (bob, dave, back):
        assert member.wait() == 4 and "deleted" in left_reason(member)
    assert room(server, "alice", "list")[1] == ""
    assert room(server, "alice", "invite", "friends")[0] == 4


def test_the_owner_kicks_and_bans_from_the_call(server: ServerProcess, tmp_path: Path) -> None:
    for user in ("alice", "bob", "eve"):
        server.add_user(user)
    invite = server.create_room("alice")
    alice = join(server, invite, "alice")
    alice.event("joined")
    bob = join(server, invite, "bob", "--name", "Bobby")
    eve = join(server, invite, "eve", "--name", "Evie")
    verified(alice, "bob", "eve")
    verified(bob, "eve")

    # bob is no owner: his /kick is refused and nothing changes.
    assert bob.proc.stdin is not None
    bob.proc.stdin.write("/kick Evie\n")
    bob.proc.stdin.flush()
    assert "owner" in str(bob.event("error")["message"])

    assert alice.proc.stdin is not None
    alice.proc.stdin.write("/ban Evie\n")
    alice.proc.stdin.flush()
    assert eve.wait() == 4 and "banned" in left_reason(eve)
    new = alice.event("invite_changed", timeout=20)["invite"]
    assert bob.event("invite_changed", timeout=20)["invite"] == new != invite
    assert room(server, "alice", "invite", "friends")[1] == new
    refused = join(server, str(new), "eve")
    assert refused.wait() == 4 and "banned" in left_reason(refused)
    # /rotate: another new invite, which both get; /invite shows the room's invite now.
    alice.proc.stdin.write("/rotate\n")
    alice.proc.stdin.flush()
    newer = alice.events_of("invite_changed", 2, timeout=20)[-1]["invite"]
    assert bob.events_of("invite_changed", 2, timeout=20)[-1]["invite"] == newer != new
    alice.proc.stdin.write("/invite\n")
    alice.proc.stdin.flush()
    shown = alice.stdout.wait_for(lambda line: f"invite: {newer}" in line)
    assert json.loads(shown)["event"] == "notice"
    # The call goes on: alice and bob are still in it together.
    for client in (alice, bob):
        assert client.proc.poll() is None
        client.proc.terminate()
        assert client.wait() == 0
