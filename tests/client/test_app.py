"""join_call against an in-process server that lies about who we are."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from bangor.client import events as ev
from bangor.client.app import Login, create_room, join_call, pump_lines
from bangor.client.events import Event
from bangor.errors import AuthError, RemoteProtocolError
from bangor.server.app import Connection
from bangor.settings import ClientSettings
from bangor.wire import control as msg
from bangor.wire.invite import Invite
from tests.server.test_app import PASSWORD, make_server, reopen


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
        # Never in the room: nothing to have left (a `left` read as if we had been in).
        assert [e.kind for e in events if e.kind in ("joined", "left")] == []
    finally:
        await server.close()


async def test_a_failed_login_says_no_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path / "home"))
    server = await make_server(tmp_path)
    try:
        host, port = server.address
        invite = await create_room(host, port, Login("alice", PASSWORD), "r", lambda _: None)
        events: list[Event] = []
        with pytest.raises(AuthError):
            await join_call(
                Invite.parse(invite), Login("alice", "wrong"), events.append, read_stdin=False
            )
        assert not [e for e in events if isinstance(e, ev.Left)]
    finally:
        await server.close()


async def test_commands_paths_and_ids_in_a_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown commands and stray arguments are warnings (not the help); alone in the
    room no path is reported; bob's first path event names him; ids are decimal."""
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path / "home"))
    server = await make_server(tmp_path)
    settings = ClientSettings(vad=False, stats_interval=0.1)
    stop = asyncio.Event()
    alice, bob = Recorder(), Recorder()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    calls: list[asyncio.Task[None]] = []
    try:
        host, port = server.address
        invite = Invite.parse(
            await create_room(host, port, Login("alice", PASSWORD), "r", lambda _: None)
        )

        def call(user: str, record: Recorder, **options: object) -> None:
            calls.append(
                asyncio.create_task(
                    join_call(
                        invite,
                        Login(user, PASSWORD),
                        record,
                        source_spec="tone",
                        read_stdin=False,
                        stop=stop,
                        settings=settings,
                        **options,  # type: ignore[arg-type]
                    )
                )
            )

        call("alice", alice, lines=lines)
        await alice.wait(lambda e: isinstance(e, ev.Stats) and e.rtt_ms is not None)
        assert not [e for e in alice.events if isinstance(e, ev.PathChanged)]  # nobody to
        for line in ("/foo", "/mute extra", "/talk maybe", "/volume alice"):
            lines.put_nowait(line)
        for want in (
            "unknown command /foo (type /help)",
            "/mute takes no argument",
            "usage: /talk [on|off]",
            "usage: /volume NAME PERCENT",
        ):
            await alice.wait(lambda e, want=want: e == ev.WarningEvent(want))  # type: ignore[misc]
        assert not [e for e in alice.events if isinstance(e, ev.Notice | ev.AudioState)]
        lines.put_nowait("/help")
        help_text = await alice.wait(lambda e: isinstance(e, ev.Notice))
        assert isinstance(help_text, ev.Notice)
        assert "/mute, /unmute" in help_text.message and "/volume NAME PERCENT" in help_text.message

        call("bob", bob)
        joined = await bob.wait(lambda e: isinstance(e, ev.Joined))
        assert isinstance(joined, ev.Joined)
        bob_id = joined.you.session_id
        path = await alice.wait(lambda e: isinstance(e, ev.PathChanged))
        assert isinstance(path, ev.PathChanged)
        assert (path.path, path.peer, path.nick) == ("relay", bob_id, "bob")
        lines.put_nowait(f"/volume {bob_id} 50")  # by the id events give
        state = await alice.wait(lambda e: isinstance(e, ev.AudioState))
        assert isinstance(state, ev.AudioState) and state.volumes == {"bob": 50}
        stats = await alice.wait(
            lambda e: isinstance(e, ev.Stats) and str(bob_id) in e.senders and bool(e.paths)
        )
        assert isinstance(stats, ev.Stats) and stats.paths is not None
        assert list(stats.paths) == [str(bob_id)]
    finally:
        stop.set()
        await asyncio.gather(*calls, return_exceptions=True)


async def test_a_login_in_another_case_joins_as_the_account_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 (6): `ALICE` logs in to `alice`. The server calls her `alice`, and so must
    she in her members' hello, or bob rejects her; another account's name is refused."""
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path / "home"))
    server = await make_server(tmp_path)
    stop = asyncio.Event()
    alice, bob = Recorder(), Recorder()
    try:
        host, port = server.address
        invite = Invite.parse(
            await create_room(host, port, Login("ALICE", PASSWORD), "r", lambda _: None)
        )
        calls = [
            asyncio.create_task(
                join_call(invite, Login(user, PASSWORD), record, read_stdin=False, stop=stop)
            )
            for user, record in (("bob", bob), ("ALICE", alice))
        ]
        joined = await alice.wait(lambda e: isinstance(e, ev.Joined))
        assert isinstance(joined, ev.Joined) and joined.you.user == "alice"
        verified = await bob.wait(lambda e: isinstance(e, ev.MemberVerified))
        assert isinstance(verified, ev.MemberVerified) and verified.member.user == "alice"
        await alice.wait(lambda e: isinstance(e, ev.MemberVerified))
        assert not any(isinstance(e, ev.MemberRejected) for e in alice.events + bob.events)
        stop.set()
        await asyncio.gather(*calls)
        # A server that names us as another account (bob's) is refused as before.
        monkeypatch.setattr(
            Connection, "member", lambda self: msg.Member(self.session_id, "bob", "bob")
        )
        with pytest.raises(RemoteProtocolError, match="calls us 'bob'"):
            await join_call(invite, Login("ALICE", PASSWORD), lambda _: None, read_stdin=False)
    finally:
        stop.set()
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


class Recorder:
    """A call's events, and a way to wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, predicate: Callable[[Event], bool], after: int = 0) -> Event:
        """The first event (from index ``after``) that satisfies ``predicate``."""
        async with asyncio.timeout(20), self._changed:
            while True:
                found = [e for e in self.events[after:] if predicate(e)]
                if found:
                    return found[0]
                await self._changed.wait()


async def test_a_dropped_control_channel_rejoins_with_fresh_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stays up but alice's control channel drops (a Wi-Fi change): the room
    saw her leave, so she comes back as a new member, with new channels and keys, and is
    heard again."""
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path / "home"))
    server = await make_server(tmp_path)
    settings = ClientSettings(vad=False, stats_interval=0.2, reconnect_delay=0.05)
    stop = asyncio.Event()
    alice, bob = Recorder(), Recorder()
    try:
        host, port = server.address
        invite = Invite.parse(
            await create_room(host, port, Login("alice", PASSWORD), "r", lambda _: None)
        )
        calls = [
            asyncio.create_task(
                join_call(
                    invite,
                    Login(user, PASSWORD),
                    record,
                    source_spec=source,
                    read_stdin=False,
                    stop=stop,
                    settings=settings,
                )
            )
            for user, record, source in (("bob", bob, "silence"), ("alice", alice, "tone"))
        ]
        first = await alice.wait(lambda e: isinstance(e, ev.Joined))
        assert isinstance(first, ev.Joined)
        await bob.wait(lambda e: isinstance(e, ev.MemberVerified))
        conn = next(c for c in server.connections.values() if c.user == "alice")
        conn.writer.transport.abort()

        back = await alice.wait(lambda e: isinstance(e, ev.Reconnected))
        assert isinstance(back, ev.Reconnected) and back.resumed is False
        kinds = [e.kind for e in alice.events]
        assert kinds.index("reconnecting") < kinds.index("reconnected")
        # bob saw the old alice leave and a new one join, and verified her again.
        left = await bob.wait(lambda e: isinstance(e, ev.MemberLeft))
        assert isinstance(left, ev.MemberLeft) and left.member.session_id == first.you.session_id
        new = await bob.wait(lambda e: isinstance(e, ev.MemberJoined), bob.events.index(left))
        assert isinstance(new, ev.MemberJoined) and new.member.user == "alice"
        new_id = new.member.session_id
        assert new_id != first.you.session_id
        mark = len(bob.events)
        await bob.wait(lambda e: isinstance(e, ev.MemberVerified) and e.member.session_id == new_id)
        await alice.wait(lambda e: isinstance(e, ev.MemberVerified), kinds.index("reconnected"))

        # And bob hears the new alice.
        def hears(e: Event) -> bool:
            return isinstance(e, ev.Stats) and e.senders.get(str(new_id), {}).get("played", 0) > 10

        await bob.wait(hears, mark)
        assert not any(isinstance(e, ev.ErrorEvent) for e in alice.events + bob.events)
        stop.set()
        await asyncio.gather(*calls)
    finally:
        stop.set()
        await server.close()


async def test_after_a_restart_a_member_not_back_within_the_grace_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice gets her session back from the restarted server; bob never returns (his
    client ended during the outage): once rejoin_grace has passed he counts as gone."""
    monkeypatch.setenv("BANGOR_HOME", str(tmp_path / "home"))
    server = await make_server(tmp_path)
    settings = ClientSettings(vad=False, stats_interval=0.2, rejoin_grace=0.5)
    stop_alice, stop_bob = asyncio.Event(), asyncio.Event()
    alice, bob = Recorder(), Recorder()
    host, port = server.address
    try:
        invite = Invite.parse(
            await create_room(host, port, Login("alice", PASSWORD), "r", lambda _: None)
        )
        calls = [
            asyncio.create_task(
                join_call(
                    invite,
                    Login(user, PASSWORD),
                    record,
                    read_stdin=False,
                    stop=stop,
                    settings=settings,
                )
            )
            for user, record, stop in (("alice", alice, stop_alice), ("bob", bob, stop_bob))
        ]
        joined = await alice.wait(lambda e: isinstance(e, ev.Joined))
        assert isinstance(joined, ev.Joined)
        await alice.wait(lambda e: isinstance(e, ev.MemberVerified))
        server.restarting = True
        await server.close()
        await alice.wait(lambda e: isinstance(e, ev.Reconnecting))
        await bob.wait(lambda e: isinstance(e, ev.Reconnecting))
        stop_bob.set()  # bob gives up on the call while the server is away
        await calls[1]
        server = await reopen(tmp_path, port)
        back = await alice.wait(lambda e: isinstance(e, ev.Reconnected))
        assert isinstance(back, ev.Reconnected) and back.resumed
        kinds = [e.kind for e in alice.events]
        assert "member_left" not in kinds  # bob is kept for the grace
        left = await alice.wait(lambda e: isinstance(e, ev.MemberLeft))
        assert isinstance(left, ev.MemberLeft) and left.member.user == "bob"
        server_alice = server.connections[joined.you.session_id]
        assert server_alice.user == "alice"  # the same id on the new server
        stop_alice.set()
        await calls[0]
    finally:
        stop_alice.set()
        stop_bob.set()
        await server.close()
