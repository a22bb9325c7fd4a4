"""Admission before login (sans-I/O), with a hand-set clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bangor.server.admission import Admission, Closing, Reason, Stage, source_of
from bangor.settings import ServerSettings

SETTINGS = ServerSettings(
    max_unauthenticated=8,
    max_unauthenticated_per_address=3,
    max_unauthenticated_per_network=5,
    first_message_timeout=2.0,
    handshake_timeout=5.0,
    admission_log_interval=10.0,
)


def fill(admission: Admission[str], address: str, count: int, now: float = 0.0) -> list[str]:
    keys = [f"{address}#{i}" for i in range(count)]
    for i, key in enumerate(keys):
        assert admission.admit(key, address, now + i * 0.01) == []
    return keys


def test_a_full_address_evicts_its_oldest_idle_connection_not_the_newcomer() -> None:
    admission: Admission[str] = Admission(SETTINGS)
    old = fill(admission, "10.0.0.1", 3)
    assert admission.admit("new", "10.0.0.1", 1.0) == [Closing(old[0], Reason.ADDRESS)]
    assert "new" in admission and old[0] not in admission and len(admission) == 3
    # Another address of the same network is not touched by that cap.
    assert admission.admit("other", "10.0.0.2", 1.0) == []


def test_eviction_spares_connections_that_progress_and_logins_being_checked() -> None:
    admission: Admission[str] = Admission(SETTINGS)
    real, idle, checking = fill(admission, "10.0.0.1", 3)
    admission.progressed(checking, Stage.LOGGING_IN, 0.1)
    admission.progressed(checking, Stage.CONNECTED, 0.2)  # never moves back
    # A flood from the same address pushes out what sits longest without progress,
    # while a real client gets a stage further every round trip.
    admission.progressed(real, Stage.GREETED, 0.9)
    assert admission.admit("flood0", "10.0.0.1", 1.0) == [Closing(idle, Reason.ADDRESS)]
    admission.progressed(real, Stage.HANDSHAKEN, 1.9)
    assert admission.admit("flood1", "10.0.0.1", 2.0) == [Closing("flood0", Reason.ADDRESS)]
    # A flood that finishes the handshake and then idles is not spared for its stage.
    admission.progressed("flood1", Stage.HANDSHAKEN, 2.1)
    admission.progressed(real, Stage.LOGGING_IN, 2.9)
    assert admission.admit("flood2", "10.0.0.1", 3.0) == [Closing("flood1", Reason.ADDRESS)]
    assert admission.stage(real) is Stage.LOGGING_IN
    assert admission.stage(checking) is Stage.LOGGING_IN
    # Only logins being checked besides the newest: the newest goes first...
    assert admission.admit("flood3", "10.0.0.1", 4.0) == [Closing("flood2", Reason.ADDRESS)]
    # ...and among logins being checked, the one longest without progress.
    admission.progressed("flood3", Stage.LOGGING_IN, 4.5)
    assert admission.admit("flood4", "10.0.0.1", 5.0) == [Closing(checking, Reason.ADDRESS)]


def test_a_handshake_flood_that_idles_never_evicts_a_real_login() -> None:
    """Finding 2 with a smarter flood: 50 connections a second from the users' own
    address that finish the Noise handshake at once, then send nothing."""
    admission: Admission[str] = Admission(ServerSettings())
    closed: set[str] = set()
    timeline: list[tuple[float, str, str]] = []
    for i in range(500):
        timeline += [(i / 50, "flood", f"flood{i}"), (i / 50 + 0.002, "handshaken", f"flood{i}")]
    for j in range(20):
        start = 1.0 + j * 0.4 + 0.007  # a 30 ms round trip spans the next flood connection
        timeline += [
            (start, "connect", f"real{j}"),
            (start + 0.001, "greeted", f"real{j}"),
            (start + 0.031, "logging_in", f"real{j}"),
            (start + 0.2, "done", f"real{j}"),
        ]
    for now, what, key in sorted(timeline):
        closed.update(c.key for c in admission.handle_timer(now))
        if what in ("flood", "connect"):
            closed.update(c.key for c in admission.admit(key, "198.51.100.7", now))
        elif what == "greeted":
            admission.progressed(key, Stage.GREETED, now)
        elif what == "handshaken":
            admission.progressed(key, Stage.HANDSHAKEN, now)
        elif what == "logging_in":
            admission.progressed(key, Stage.LOGGING_IN, now)
        else:
            admission.done(key)
    assert not {key for key in closed if key.startswith("real")}
    assert len(closed) >= 450


def test_a_full_network_evicts_within_it() -> None:
    admission: Admission[str] = Admission(SETTINGS)
    first = fill(admission, "10.0.0.1", 3)
    fill(admission, "10.0.0.2", 2, now=1.0)
    assert admission.admit("x", "10.0.0.3", 2.0) == [Closing(first[0], Reason.NETWORK)]
    assert admission.admit("elsewhere", "10.0.1.1", 2.0) == []  # another /24


def test_a_full_server_evicts_from_the_busiest_network() -> None:
    admission: Admission[str] = Admission(SETTINGS)
    quiet = fill(admission, "192.0.2.1", 1)  # the oldest, alone in its network
    busy = fill(admission, "10.0.0.1", 3, now=1.0) + fill(admission, "10.0.0.2", 2, now=2.0)
    others = fill(admission, "198.51.100.1", 2, now=3.0)
    assert len(admission) == 8
    assert admission.admit("new", "203.0.113.1", 4.0) == [Closing(busy[0], Reason.TOTAL)]
    assert quiet[0] in admission and all(key in admission for key in others)


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("10.1.2.3", ("10.1.2.3", "10.1.2.0/24")),
        ("::ffff:10.1.2.3", ("10.1.2.3", "10.1.2.0/24")),  # a dual-stack socket's IPv4
        ("2001:db8:1:2:3:4:5:6", ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64")),
        ("fe80::1%eth0", ("fe80::1", "fe80::/64")),
        ("?", ("?", "?")),
    ],
)
def test_sources_and_their_networks(address: str, source: tuple[str, str]) -> None:
    assert source_of(address, 24, 64) == source


def test_one_ipv6_network_shares_one_cap() -> None:
    admission: Admission[str] = Admission(SETTINGS)
    for i in range(5):
        assert admission.admit(f"k{i}", f"2001:db8::{i + 1}", i) == []
    assert admission.admit("k5", "2001:db8::ff", 9.0) == [Closing("k0", Reason.NETWORK)]


def test_deadlines_first_message_then_login() -> None:
    admission: Admission[str] = Admission(SETTINGS)
    assert admission.get_timer() is None
    admission.admit("silent", "10.0.0.1", 0.0)
    admission.admit("greeted", "10.0.0.2", 0.5)
    admission.admit("done", "10.0.0.3", 0.5)
    admission.progressed("greeted", Stage.GREETED, 0.5)
    admission.done("done")  # logged in: no deadline any more
    assert admission.get_timer() == 2.0
    assert admission.handle_timer(1.999) == []
    assert admission.handle_timer(2.0) == [Closing("silent", Reason.FIRST_MESSAGE)]
    assert admission.get_timer() == 2.0  # the first report is due at once
    assert admission.report(2.0) is not None
    assert admission.get_timer() == 5.5  # the greeted one's login deadline
    assert admission.handle_timer(5.5) == [Closing("greeted", Reason.HANDSHAKE)]
    assert len(admission) == 0
    assert all(reason.timed_out for reason in (Reason.FIRST_MESSAGE, Reason.HANDSHAKE))
    assert not Reason.ADDRESS.timed_out


def test_done_frees_the_place() -> None:
    admission: Admission[str] = Admission(SETTINGS)
    keys = fill(admission, "10.0.0.1", 3)
    admission.done(keys[0])
    admission.done(keys[0])  # idempotent
    admission.failed("unknown", 1.0)  # not ours: nothing happens
    assert admission.admit("new", "10.0.0.1", 1.0) == []


def test_reports_are_rate_limited_and_count_by_reason_and_source() -> None:
    admission: Admission[str] = Admission(SETTINGS)
    assert admission.report(0.0) is None  # nothing happened
    fill(admission, "10.0.0.1", 3)
    admission.admit("a", "10.0.0.1", 1.0)
    first = admission.report(1.0)  # the first one at once
    assert first is not None and first.total == 1
    assert str(first) == (
        "closed 1 connection(s) before login (1 evicted, address full); most from 10.0.0.1 (1)"
    )
    for i in range(4):
        admission.admit(f"b{i}", "10.0.0.1", 2.0)
    admission.failed("b3", 2.5)
    admission.admit("c", "10.0.0.9", 2.5)
    admission.handle_timer(5.0)  # "c" sent nothing
    assert admission.report(10.9) is None  # then at most one per interval
    assert admission.get_timer() == 11.0
    second = admission.report(11.0)
    assert second is not None
    assert str(second) == (
        "closed 8 connection(s) before login in the last 9 s (4 evicted, address full; "
        "3 no first message in time; 1 broke the protocol); most from 10.0.0.1 (7)"
    )
    assert admission.report(30.0) is None and admission.get_timer() is None


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Admission(replace(SETTINGS, max_unauthenticated_per_address=0))


def test_a_flood_from_the_users_address_never_evicts_a_real_login() -> None:
    """The issue's target, without sockets: 50 idle connections a second from one
    address (the table fills within a second) while 20 real logins from that address
    each send message 1 within 50 ms and finish within 200 ms."""
    admission: Admission[str] = Admission(ServerSettings())
    closed: set[str] = set()
    timeline: list[tuple[float, str, str]] = []  # (time, what, key)
    for i in range(500):
        timeline.append((i / 50, "flood", f"flood{i}"))
    for j in range(20):
        start = 1.0 + j * 0.4
        timeline += [
            (start, "connect", f"real{j}"),
            (start + 0.05, "greeted", f"real{j}"),
            (start + 0.1, "logging_in", f"real{j}"),
            (start + 0.2, "done", f"real{j}"),
        ]
    for now, what, key in sorted(timeline):
        closed.update(c.key for c in admission.handle_timer(now))
        if what in ("flood", "connect"):
            closed.update(c.key for c in admission.admit(key, "198.51.100.7", now))
        elif what == "greeted":
            admission.progressed(key, Stage.GREETED, now)
        elif what == "logging_in":
            admission.progressed(key, Stage.LOGGING_IN, now)
        else:
            admission.done(key)
    assert not {key for key in closed if key.startswith("real")}
    assert len(closed) >= 450  # the flood did go
