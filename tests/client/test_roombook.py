"""The invites a device keeps: private, never silently lost, replaced on rotation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bangor.client.roombook import MAX_BOOK_BYTES, RoomBook, RoomBookError
from bangor.wire.invite import Invite

FINGERPRINT = bytes(16)


def invite(secret: bytes, room: str = "0123456789abcdef", host: str = "example.org") -> Invite:
    return Invite(host, 7600, bytes.fromhex(room), secret, FINGERPRINT)


def test_invites_are_kept_private_and_found_by_name_and_server(tmp_path: Path) -> None:
    book = RoomBook(tmp_path / "home" / "rooms.json")
    assert book.load() == []
    first = invite(b"a" * 16)
    book.remember(first, "friends", "alice", owner=True)
    assert stat.S_IMODE(book.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(book.path.parent.stat().st_mode) == 0o700
    [known] = book.find("friends", "example.org:7600")
    assert known.decoded() == first and known.owner and known.user == "alice"
    assert book.find("friends", "other.org:7600") == []
    # A rotation replaces the invite; ownership stays.
    second = invite(b"b" * 16)
    book.remember(second, "friends", "alice")
    [known] = book.find("friends")
    assert known.decoded() == second and known.owner
    book.remember(invite(b"c" * 16, room="fedcba9876543210"), "games", "alice")
    assert book.get("fedcba9876543210") is not None
    book.forget("0123456789abcdef")
    assert [r.name for r in book.load()] == ["games"]


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'{"rooms": [{"name": 1}]}',
        b'{"rooms": [{"room_id": "x", "name": "n", '
        b'"server": "s", "invite": "bangor:zzz", "user": "u", "owner": true}]}',
    ],
)
def test_a_damaged_book_is_an_error_and_is_not_overwritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "rooms.json"
    path.write_bytes(content)
    book = RoomBook(path)
    with pytest.raises(RoomBookError, match="damaged"):
        book.load()
    with pytest.raises(RoomBookError):
        book.remember(invite(b"a" * 16), "friends", "alice")
    assert path.read_bytes() == content  # maybe the only copy of an invite: left alone


def test_a_huge_book_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rooms.json"
    path.write_bytes(b" " * (MAX_BOOK_BYTES + 1))
    with pytest.raises(RoomBookError, match="too large"):
        RoomBook(path).load()
