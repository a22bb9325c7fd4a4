"""MediaEngine pieces that need no sockets: end-to-end opening and released frames."""

from __future__ import annotations

import numpy as np
import pytest

from bangor.audio.codec import OpusEncoder
from bangor.audio.devices import open_sink, open_source
from bangor.client.media import MediaEngine
from bangor.errors import AudioError, PacketError
from bangor.settings import FRAME_SAMPLES, MAX_VOICE_FRAME, ClientSettings
from bangor.wire.media import HopSealer, PacketType, derive_media_keys
from bangor.wire.voice import VoiceFrame, pack_relayed

KEYS = derive_media_keys(bytes(32))


class FakeCrypto:
    """Opens frames that start with b"ok:", holds b"hold:", refuses the rest."""

    def seal_voice(self, payload: bytes) -> bytes:
        return b"ok:" + payload

    def open_voice(self, sender: int, frame: bytes, now: float) -> bytes | None:
        if frame.startswith(b"ok:"):
            return frame[3:]
        if frame.startswith(b"hold:"):
            return None
        raise PacketError("no key")


def engine() -> MediaEngine:
    return MediaEngine(
        7, KEYS, open_source("silence"), open_sink("null"), ClientSettings(), FakeCrypto()
    )


def opus_frames(count: int) -> list[bytes]:
    encoder = OpusEncoder(bitrate=40_000)
    tone = (np.sin(np.arange(FRAME_SAMPLES) / 8) * 8000).astype(np.int16)
    return [VoiceFrame(i, encoder.encode(tone)).serialize() for i in range(count)]


def datagram(payload: bytes, sealer: HopSealer) -> bytes:
    """What the relay sends: sender 9's payload, hop-sealed for us."""
    return sealer.seal(PacketType.VOICE, pack_relayed(9, payload))


def test_voice_is_opened_end_to_end_before_the_jitter_buffer() -> None:
    eng = engine()
    sealer = HopSealer(KEYS.server_to_client, 7)
    frames = opus_frames(3)
    eng.datagram_received(datagram(b"ok:" + frames[0], sealer), ("127.0.0.1", 1))
    eng.datagram_received(datagram(b"hold:" + frames[1], sealer), ("127.0.0.1", 1))
    eng.datagram_received(datagram(b"forged" + frames[2], sealer), ("127.0.0.1", 1))
    assert eng.stats.received == 3 and eng.stats.undecryptable == 1
    assert eng.streams[9].jitter.stats().received == 1  # the held one waits for its key


@pytest.mark.parametrize("playing", [False, True])
def test_released_frames_fill_a_new_stream_only_up_to_its_prebuffer(playing: bool) -> None:
    eng = engine()
    frames = opus_frames(12)
    if playing:
        eng.push(9, frames[0])
    eng.push_released(9, frames[1:])
    depth = eng.streams[9].jitter.stats().received
    target = ClientSettings().jitter_target_frames
    assert depth == (12 if playing else target)


# --- two engines over an in-memory link: redundancy, reports, controls ---------------


class ListSink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass


class Link:
    """alice's engine sends to bob's through a lossy in-memory wire, 20 ms a tick."""

    def __init__(self, loss: float, seed: int = 1, **settings: object) -> None:
        config = ClientSettings(vad=False, **settings)  # type: ignore[arg-type]
        self.alice = MediaEngine(
            1, KEYS, open_source("tone:450"), open_sink("null"), config, FakeCrypto()
        )
        self.sink = ListSink()
        self.bob = MediaEngine(2, KEYS, open_source("silence"), self.sink, config, FakeCrypto())
        self.rng = np.random.default_rng(seed)
        self.loss = loss
        self.now = 0.0
        self.sent: list[VoiceFrame] = []
        self.alice._send = self._carry  # type: ignore[method-assign]
        self.alice.clock = self.bob.clock = lambda: self.now
        self.bob._send = lambda ptype, payload: None  # type: ignore[method-assign]

    def _carry(self, ptype: PacketType, payload: bytes) -> None:
        plaintext = payload[3:]  # FakeCrypto's b"ok:"
        self.sent.append(VoiceFrame.parse(plaintext))
        if self.rng.random() >= self.loss:
            self.bob.push(1, plaintext, self.now)

    def run(self, ticks: int, report: bool = True) -> None:
        for i in range(ticks):
            self.now += 0.02
            self.alice.tick()
            self.bob.tick()
            if report and i % 50 == 49:  # once a second, as the app does
                for sender, loss in self.bob.reception_reports():
                    self.alice.on_report(2, loss)
                    assert sender == 1


def test_clean_link_sends_no_copies_once_a_listener_reported() -> None:
    link = Link(loss=0.0)
    link.run(200)
    # The first second, before any report, is protected; the first report ends it.
    assert all(f.depth == 2 for f in link.sent[:50])
    assert all(not f.redundant and f.depth == 0 for f in link.sent[50:])
    assert [f.packet for f in link.sent] == list(range(200))
    assert link.alice.plan.depth == 0


def test_reported_loss_turns_on_copies_and_the_listener_recovers_nearly_all() -> None:
    link = Link(loss=0.15)
    link.run(100)  # two reports
    assert link.alice.plan.depth == 2
    lost_before = link.bob.streams[1].jitter.stats().lost
    link.run(1000)
    late = link.sent[200:]
    assert all(f.depth == 2 and len(f.redundant) == 2 for f in late)
    # The copies are the two frames sent just before.
    by_seq = {f.seq: f.opus for f in link.sent}
    assert all(f.redundant == (by_seq[f.seq - 2], by_seq[f.seq - 1]) for f in late)
    stats = link.bob.streams[1].jitter.stats()
    loss = link.bob.streams[1].meter.total().loss
    assert 0.12 < loss < 0.18
    assert stats.recovered > 0.1 * len(link.sent)
    assert stats.lost - lost_before < 0.01 * 1000  # ~0.15**3 left for concealment
    # And the listener waits for the copies: two frames more than the jitter needs.
    assert stats.target >= 3


def test_without_redundancy_the_same_loss_is_concealed() -> None:
    link = Link(loss=0.15, max_redundancy=0)
    link.run(1100)
    assert link.alice.plan.depth == 0 and link.alice.plan.expected_loss > 10  # FEC instead
    assert link.bob.streams[1].jitter.stats().lost > 0.08 * len(link.sent)


def test_a_clean_link_turns_copies_off_after_the_hold() -> None:
    link = Link(loss=0.15, loss_hold=3.0)
    link.run(100)
    assert link.alice.plan.depth == 2
    link.loss = 0.0
    link.run(250)
    assert link.alice.plan.depth == 0
    assert not link.sent[-1].redundant


def test_copies_are_left_out_rather_than_exceed_the_frame_limit() -> None:
    link = Link(loss=0.15, bitrate=510_000, max_redundancy=3)
    link.run(200)
    assert link.alice.plan.depth == 3
    assert all(len(f.serialize()) <= MAX_VOICE_FRAME for f in link.sent)
    assert any(len(f.redundant) < 3 for f in link.sent[150:])


def rms(frames: list[np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.concatenate(frames).astype(np.float64) ** 2)))


def test_mute_deafen_and_volume() -> None:
    link = Link(loss=0.0)
    link.run(50)
    full = rms(link.sink.frames[-20:])
    assert full > 5000
    link.bob.volumes[1] = 0.5
    link.run(20)
    assert rms(link.sink.frames[-10:]) == pytest.approx(full / 2, rel=0.05)
    link.bob.deafened = True
    link.run(20)
    assert rms(link.sink.frames[-20:]) == 0.0
    sent = len(link.sent)
    link.alice.muted = True
    link.run(20)
    assert len(link.sent) == sent  # muted: nothing goes out
    assert link.alice.stats.suppressed == 20


def test_push_to_talk_sends_only_while_talking() -> None:
    link = Link(loss=0.0, push_to_talk=True)
    link.run(20)
    assert not link.sent
    link.alice.talking = True
    link.run(20)
    assert len(link.sent) == 20
    link.alice.talking = False
    link.run(20)
    assert len(link.sent) == 20


class BrokenSink(ListSink):
    def write(self, frame: np.ndarray) -> None:
        raise AudioError("output device 'USB headset' failed: device unavailable")


def test_a_vanished_output_device_is_reported_once_and_the_call_goes_on() -> None:
    problems: list[str] = []
    eng = MediaEngine(
        7,
        KEYS,
        open_source("tone"),
        BrokenSink(),
        ClientSettings(),
        FakeCrypto(),
        on_problem=problems.append,
    )
    sent: list[bytes] = []
    eng._send = lambda ptype, payload: sent.append(payload)  # type: ignore[method-assign]
    for _ in range(10):
        eng.tick()
    assert len(problems) == 1 and "USB headset" in problems[0] and "goes on" in problems[0]
    assert len(sent) == 10  # still talking


def test_alone_in_the_room_the_startup_copies_stop() -> None:
    link = Link(loss=0.0, redundancy_startup=2.0)
    link.run(150, report=False)  # nobody reports
    assert link.sent[0].depth == 2 and link.sent[-1].depth == 0
