"""What the call screen shows, folded from client events (no server, no widgets)."""

from __future__ import annotations

import dataclasses

from bangor.client import events as ev
from bangor.tui.state import CallState, fit

ME = ev.MemberInfo(1, "alice", "alice")
BOB = ev.MemberInfo(0x2A, "bob", "bobby")


def stats(sent: int, speaking: bool, loss: float = 0.02) -> ev.Stats:
    sender = {"speaking": speaking, "loss": loss}
    return ev.Stats(12.3, sent, 0, 0, 0, {"42": sender}, 0, {"bitrate": 32000.0})


def test_members_volumes_and_safety_numbers() -> None:
    state = CallState()
    state.apply(ev.Joined("r", "friends", ME, (BOB,)))
    assert state.you == ME and state.members[0x2A].label == "bobby (bob)"
    state.apply(ev.MemberVerified(BOB, "11111 22222", "fp", "new"))
    assert state.members[0x2A].safety_number == "11111 22222"
    assert state.members[0x2A].trust == "new"
    state.apply(ev.KeyChanged(BOB, "33333 44444", "fp2"))
    assert state.members[0x2A].trust == "changed"
    state.apply(ev.AudioState(False, False, False, False, {"bobby": 150}))
    assert state.members[0x2A].volume == 150
    state.apply(ev.AudioState(False, False, False, False, {}))
    assert state.members[0x2A].volume == 100
    state.apply(ev.MemberLeft(BOB))
    assert state.members == {}


def test_stats_drive_speaking_status_and_own_voice() -> None:
    state = CallState()
    state.apply(ev.Joined("r", "friends", ME, (BOB,)))
    state.apply(ev.PathChanged("relay", BOB.session_id, None, "bobby"))
    state.apply(stats(sent=10, speaking=True))
    assert state.members[0x2A].speaking and state.sending_voice
    assert state.status_line() == "path relay | ping 12 ms | loss 2.0 % | 32 kbit/s | mic ?"
    state.apply(stats(sent=10, speaking=False, loss=0.0))  # nothing sent since: not sending
    assert not state.members[0x2A].speaking and not state.sending_voice
    state.apply(ev.AudioState(True, False, True, False, {}))
    assert (state.mic_state(), state.mic_short()) == ("MUTED", "MUTE")
    state.apply(ev.AudioState(False, True, True, False, {}))
    assert state.mic_short() == "DEAF"
    state.apply(ev.AudioState(False, False, True, True, {}))
    assert state.mic_short() == "TALK"
    state.apply(ev.AudioState(False, False, False, False, {}))
    assert state.mic_short() == "on"


def test_the_status_bar_says_which_members_are_reached_directly() -> None:
    carol = ev.MemberInfo(0x2B, "carol", "carol")
    state = CallState()
    state.apply(ev.Joined("r", "friends", ME, ()))
    assert state.path_summary() == "-"  # alone: a path is to somebody
    state.apply(ev.MemberJoined(BOB))
    state.apply(ev.MemberJoined(carol))
    assert state.path_summary() == "..."  # no UDP answer from the server yet
    state.apply(ev.PathChanged("relay", BOB.session_id, None, "bobby"))
    state.apply(ev.PathChanged("relay", carol.session_id, None, "carol"))
    assert state.path_summary() == "relay"
    state.apply(ev.PathChanged("direct", BOB.session_id, 3.5, "bobby"))
    assert state.path_summary() == "direct 1/2"
    state.apply(ev.PathChanged("direct", carol.session_id, 4.0, "carol"))
    assert state.status_line().startswith("path direct |")
    state.apply(ev.PathChanged("relay", BOB.session_id, None, "bobby"))  # a path died
    assert state.path_summary() == "direct 1/2"
    state.apply(ev.MemberLeft(carol))
    assert state.path_summary() == "relay"


def test_the_microphone_meter_shows_the_level_and_the_capture_chain() -> None:
    state = CallState()
    assert state.meter() == "mic ░░░░░░░░   ? dB"  # no stats yet
    levels = {-100.0: "░░░░░░░░ -∞  dB", -30.0: "████░░░░ -30 dB", -3.0: "███████░  -3 dB"}
    for level, shown in levels.items():
        state.apply(dataclasses.replace(stats(1, False), input_level=level))
        assert state.meter() == f"mic {shown}"
    state.apply(ev.AudioState(False, False, False, False, {}, True, False, True))
    assert state.meter() == "mic ███████░  -3 dB NS AGC"
    assert len("mic ████████ -99 dB NS AEC AGC") <= 31  # the members pane's inner width


def test_fit_cuts_long_names_with_an_ellipsis() -> None:
    assert fit("erin2", 10) == "erin2"
    assert fit("a" * 12, 10) == "a" * 9 + "…"
    assert len(fit("a" * 12, 10)) == 10
