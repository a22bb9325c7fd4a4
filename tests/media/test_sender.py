"""Our voice on its way out: plan, copies, the gate, without a network."""

from __future__ import annotations

import numpy as np

from bangor.io.devices import open_source
from bangor.media.sender import Sender
from bangor.settings import FRAME_SAMPLES, MAX_VOICE_FRAME, ClientSettings
from bangor.wire.voice import VoiceFrame


def test_copies_are_left_out_rather_than_exceed_the_frame_limit() -> None:
    sender = Sender(ClientSettings(vad=False, bitrate=510_000, max_redundancy=3))
    sender.report(2, 0.15, 0.0)
    assert sender.plan.depth == 3
    noise = np.random.default_rng(0)
    frames = [
        VoiceFrame.parse(p)
        for _ in range(50)
        for p in sender.frames(noise.integers(-20000, 20000, FRAME_SAMPLES).astype(np.int16), True)
    ]
    assert all(len(f.serialize()) <= MAX_VOICE_FRAME for f in frames)
    assert any(len(f.redundant) < 3 for f in frames[10:])


def test_a_clean_report_turns_the_startup_copies_off_and_forget_drops_the_listener() -> None:
    sender = Sender(ClientSettings(vad=False))
    tone = open_source("tone:450")
    first = [VoiceFrame.parse(p) for p in sender.frames(tone.read(), True)]  # type: ignore[arg-type]
    assert first[0].depth == 2  # protected until someone reports
    sender.report(2, 0.0, 0.1)
    assert sender.plan.depth == 0
    sender.report(3, 0.2, 0.2)
    assert sender.plan.depth > 0
    sender.forget(3)
    sender.update_plan(0.3)
    assert sender.plan.depth == 0


def test_muting_resets_the_gate_so_nothing_from_before_goes_out_later() -> None:
    sender = Sender(ClientSettings(vad=True))
    tone = open_source("tone:450")
    for _ in range(5):
        sender.frames(tone.read(), False)  # type: ignore[arg-type]
    assert sender.sent == 0 and sender.suppressed == 5
    out = sender.frames(tone.read(), True)  # type: ignore[arg-type]
    # A tone is not speech, but whatever passes is this tick's, never older ones.
    assert len(out) <= 1


def test_reported_bursts_spread_the_copies_to_ticks_further_back() -> None:
    sender = Sender(ClientSettings(vad=False))
    sender.joined(2)
    sender.report(2, 0.15, 0.0, 3.0)
    assert sender.plan.spread == (3, 5, 8)
    tone = open_source("tone:450")
    frames = [VoiceFrame.parse(p) for _ in range(12) for p in sender.frames(tone.read(), True)]  # type: ignore[arg-type]
    # The spurt's first packets carry what was sent before them: n-3 from the 4th on.
    expected = [()] * 3 + [(3,)] * 2 + [(5, 3)] * 3 + [(8, 5, 3)] * 2
    assert [f.distances for f in frames[:10]] == expected
    assert all(f.plan == (3, 5, 8) and f.reach == 8 for f in frames)
    by_seq = {f.seq: f.opus for f in frames}
    assert all(copy == by_seq[seq] for f in frames for seq, copy in f.copies())
    sender.report(2, 0.15, 1.0, 1.1)  # the bursts are gone (pooled: 2.6 / 1.86 runs) ...
    sender.report(2, 0.15, 2.0, 1.0)
    sender.report(2, 0.15, 3.0, 1.0)
    sender.report(2, 0.15, 4.0, 1.0)
    sender.report(2, 0.15, 5.0, 1.0)
    assert sender.plan.spread == () and sender.plan.depth == 2  # pooled below 1.6
    assert Sender(ClientSettings(max_redundancy=0)).adapter.plan(0.0).spread == ()
    assert VoiceFrame.parse(sender.frames(tone.read(), True)[0]).distances == ()  # type: ignore[arg-type]
