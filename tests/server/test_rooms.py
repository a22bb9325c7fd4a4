"""The live room registry."""

from __future__ import annotations

import pytest

from bangor.errors import LimitError
from bangor.server.rooms import RoomRegistry, unique_nick


def test_join_leave_and_others() -> None:
    rooms: RoomRegistry[str] = RoomRegistry(max_members=3)
    rooms.join("r", "friends", 1, "a")
    rooms.join("r", "friends", 2, "b")
    assert list(rooms.others("r", 1)) == ["b"]
    rooms.leave("r", 2)
    assert list(rooms.others("r", 1)) == []
    rooms.leave("r", 1)
    assert rooms.get("r") is None and len(rooms) == 0


def test_room_full() -> None:
    rooms: RoomRegistry[str] = RoomRegistry(max_members=2)
    rooms.join("r", "friends", 1, "a")
    rooms.join("r", "friends", 2, "b")
    with pytest.raises(LimitError, match="room is full"):
        rooms.join("r", "friends", 3, "c")
    rooms.join("r", "friends", 2, "b")  # rejoining is not a new member


def test_a_nick_already_in_the_room_gets_the_first_free_number() -> None:
    assert unique_nick("bob", []) == "bob"
    assert unique_nick("bob", ["alice"]) == "bob"
    assert unique_nick("bob", ["BOB"]) == "bob2"  # as /volume finds members: any case
    assert unique_nick("bob", ["bob", "bob2", "Bob3"]) == "bob4"
    assert unique_nick("b" * 64, ["b" * 64], max_len=64) == "b" * 63 + "2"  # still 64
