"""join_call against an in-process server that lies about who we are."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from bangor.client.app import Login, create_room, join_call, pump_lines
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


def test_stdin_lines_after_the_loop_closed_end_quietly() -> None:
    """The call can end while a line (or the end of input) is on its way from the stdin
    thread: handing it to a closed loop must not raise (a thread's traceback on stderr)."""
    loop = asyncio.new_event_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    loop.close()
    pump_lines(io.StringIO("late line\n"), loop, queue)  # raised RuntimeError before
    assert queue.empty()


async def test_stdin_lines_reach_the_queue_then_none() -> None:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(pump_lines, io.StringIO("hello\r\n/mute\n"), loop, queue)
    assert [await queue.get() for _ in range(3)] == ["hello", "/mute", None]
