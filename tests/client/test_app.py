"""join_call against an in-process server that lies about who we are."""

from __future__ import annotations

from pathlib import Path

import pytest

from bangor.client.app import Login, create_room, join_call
from bangor.client.events import Event
from bangor.errors import RemoteProtocolError
from bangor.server.app import Connection
from bangor.wire import control as msg
from bangor.wire.invite import Invite
from tests.server.test_app import PASSWORD, make_server


async def test_a_server_that_renames_us_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path / "home"))
    server = await make_server(tmp_path)
    try:
        host, port = server.address
        invite = await create_room(host, port, Login("alice", PASSWORD), "r", lambda _: None)
        # From now on the server tells alice she is bob (and would tell the others so).
        monkeypatch.setattr(
            Connection, "member", lambda self: msg.Member(self.session_id, "bob", "bob")
        )
        events: list[Event] = []
        with pytest.raises(RemoteProtocolError, match="calls us 'bob'"):
            await join_call(
                Invite.parse(invite), Login("alice", PASSWORD), events.append, read_stdin=False
            )
        assert events[-1].kind == "left"
    finally:
        await server.close()
