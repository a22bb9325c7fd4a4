"""The receive side per sender, fed by real Senders: frame durations, jitter, loss,
released frames, concealment; no sockets, no crypto, a hand-set clock."""

from __future__ import annotations

import numpy as np
import pytest

from bangor.audio.codec import OpusEncoder
from bangor.audio.mixer import Mixer
from bangor.io.devices import open_source
from bangor.media.sender import Sender
from bangor.media.streams import Streams
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE, ClientSettings
from bangor.wire.voice import VoiceFrame
from tests.audiocheck import align


def opus_frames(count: int) -> list[bytes]:
    encoder = OpusEncoder(bitrate=40_000)
    tone = (np.sin(np.arange(FRAME_SAMPLES) / 8) * 8000).astype(np.int16)
    return [VoiceFrame(i, encoder.encode(tone)).serialize() for i in range(count)]


@pytest.mark.parametrize("playing", [False, True])
def test_released_frames_fill_a_new_stream_only_up_to_its_prebuffer(playing: bool) -> None:
    streams = Streams(ClientSettings())
    frames = opus_frames(12)
    if playing:
        streams.push(9, frames[0], 0.0, 0.0)
    assert streams.push_released(9, [*frames[1:], b"junk"], 0.0) == 1
    depth = streams.streams[9].jitter.stats().received
    target = ClientSettings().jitter_target_ms // 20
    assert depth == (12 if playing else target - 1)  # the junk one was the newest


def test_malformed_frames_are_refused_and_a_new_stream_gets_nothing() -> None:
    streams = Streams(ClientSettings())
    assert not streams.push(9, b"\x00", 0.0, 0.0)
    assert streams.push_released(9, [], 0.0) == 0
    assert streams.streams == {} and not streams.speaking(9)
    assert streams.play() == []


def test_a_packet_that_is_not_opus_is_concealed_as_a_bad_frame() -> None:
    streams = Streams(ClientSettings(jitter_target_ms=20))
    assert streams.push(9, VoiceFrame(0, b"\xff\xff\xff").serialize(), 0.0, 0.0)
    [(sender, pcm)] = streams.play()
    assert sender == 9 and len(pcm) == FRAME_SAMPLES
    assert streams.streams[9].bad_frames == 1


class Room:
    """Speakers with their own frame durations and tones, one listener, in memory.

    Time goes in 10 ms steps; each one ticks when a whole frame of its own has passed,
    senders before the listener. ``jitter`` delays each packet by up to that many
    seconds (reordering some), to exercise the jitter buffers in their frames.
    """

    def __init__(
        self,
        speakers: dict[int, tuple[int, str]],
        listener_ms: int = 20,
        jitter: float = 0.0,
        loss: float = 0.0,
    ) -> None:
        self.now = 0.0
        self.steps = 0
        self.rng = np.random.default_rng(3)
        self.jitter, self.loss = jitter, loss
        self.in_flight: list[tuple[float, int, bytes]] = []
        config = ClientSettings(vad=False, frame_ms=listener_ms)
        self.listener = Streams(config)
        self.mixer = Mixer(config.frame_samples)
        self.heard_frames: list[np.ndarray] = []
        self.speakers: dict[int, tuple[Sender, object]] = {}
        for session, (ms, spec) in speakers.items():
            own = ClientSettings(vad=False, frame_ms=ms)
            self.speakers[session] = (Sender(own), open_source(spec, own.frame_samples))

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds * 100)):
            self.steps += 1
            self.now = self.steps / 100
            for session, (sender, source) in self.speakers.items():
                if self.steps % (sender.frame_ms // 10) == 0:
                    for frame in sender.frames(source.read(), True):  # type: ignore[attr-defined]
                        if self.rng.random() < self.loss:
                            continue
                        delay = self.rng.uniform(0, self.jitter)
                        self.in_flight.append((self.now + delay, session, frame))
            self.in_flight.sort()
            while self.in_flight and self.in_flight[0][0] <= self.now:
                when, session, plaintext = self.in_flight.pop(0)
                assert self.listener.push(session, plaintext, self.now, when)
            if self.steps % (self.listener.frame_ms // 10) == 0:
                played = self.listener.play()
                self.heard_frames.append(self.mixer.mix([(pcm, 1.0) for _, pcm in played]))

    def heard(self, since: float) -> np.ndarray:
        pcm = np.concatenate(self.heard_frames).astype(np.float64)
        return pcm[round(since * SAMPLE_RATE) :]


def band_energy(pcm: np.ndarray, hz: float, width: float = 25.0) -> float:
    """Fraction of the signal's energy within ``width`` Hz of ``hz``."""
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / SAMPLE_RATE)
    return float(spectrum[np.abs(freqs - hz) <= width].sum() / spectrum.sum())


def tone_gaps(pcm: np.ndarray, block: int = 240) -> int:
    """5 ms blocks far quieter than the rest: holes that a steady mix never has."""
    rms = np.sqrt(np.mean(pcm[: len(pcm) // block * block].reshape(-1, block) ** 2, axis=1))
    return int(np.sum(rms < 0.5 * np.median(rms)))


@pytest.mark.parametrize("listener_ms", [10, 20, 40])
def test_a_10ms_and_a_40ms_sender_mix_into_the_listeners_ticks(listener_ms: int) -> None:
    room = Room({1: (10, "tone:450"), 3: (40, "tone:1250")}, listener_ms=listener_ms)
    room.run(4.0)
    assert all(f.shape == (SAMPLE_RATE * listener_ms // 1000,) for f in room.heard_frames)
    assert len(room.heard_frames) * listener_ms == 4000  # one frame per tick, none missed
    streams = room.listener.streams
    assert (streams[1].frame_ms, streams[3].frame_ms) == (10, 40)  # read from the TOC
    for stream in streams.values():
        s = stream.jitter.stats()
        assert (s.lost, s.late, s.stretched, stream.bad_frames) == (0, 0, 0, 0)
        # ~30 kbit/s for these tones; counting 10 or 40 ms frames as 20 would halve or double it.
        assert 25 < stream.meter.kbps < 45
    heard = room.heard(since=1.0)
    # Both tones, equally loud, and nearly nothing else: no gaps, no clicks.
    low, high = band_energy(heard, 450), band_energy(heard, 1250)
    assert low + high > 0.97, (low, high)
    assert 0.7 < low / high < 1.4
    assert tone_gaps(heard) == 0
    assert 8000 < np.sqrt(np.mean(heard**2)) < 16000  # two tones at 0.3 full scale


@pytest.mark.parametrize("ms", [10, 40])
def test_one_sender_of_another_duration_is_heard_as_the_same_tone(ms: int) -> None:
    room = Room({1: (ms, "tone:700")})
    room.run(3.0)
    heard = room.heard(since=0.5)
    reference = np.concatenate([open_source("tone:700").read() for _ in range(150)])  # type: ignore[misc]
    # Lined up, the tone heard is the tone sent: only a constant delay between them.
    _, aligned = align(reference[: len(heard)] / 32768, heard / 32768)
    corr = np.corrcoef(aligned[FRAME_SAMPLES:], reference[: len(heard)][FRAME_SAMPLES:])[0, 1]
    assert corr > 0.95
    assert band_energy(heard, 700) > 0.98
    stream = room.listener.streams[1]
    # Starting at the 60 ms target and cutting it back, in ms whatever the frames.
    assert stream.jitter.stats().delay_ms <= ClientSettings().jitter_target_ms + ms
    assert room.listener.speaking(1)


@pytest.mark.parametrize("ms", [10, 40])
def test_jitter_and_loss_with_other_durations_keep_the_tone_going(ms: int) -> None:
    room = Room({1: (ms, "tone:450"), 3: (20, "tone:1250")}, jitter=0.03, loss=0.03)
    room.run(8.0)
    heard = room.heard(since=2.0)
    # Concealment and FEC fill the holes with something tone-like, for each frame size.
    assert band_energy(heard, 450) + band_energy(heard, 1250) > 0.9
    s = room.listener.streams[1].jitter.stats()
    assert s.played > 0.9 * 6000 / ms
    # The adaptive depth covers the 30 ms of jitter, in milliseconds.
    assert 30 <= s.target * ms <= 100
    assert s.delay_ms < 120


def test_a_sender_that_changes_its_frame_duration_is_reset_and_heard() -> None:
    room = Room({1: (20, "tone:450")})
    room.run(1.0)
    old, _ = room.speakers[1]
    # The same session starts over with 40 ms frames (e.g. it rejoined with --frame-ms 40).
    new = Sender(ClientSettings(vad=False, frame_ms=40))
    new.seq = old.seq  # a counter that goes on, so only the duration tells
    room.speakers[1] = (new, open_source("tone:450", 1920))
    room.run(2.0)
    stream = room.listener.streams[1]
    assert stream.frame_ms == 40 and stream.resets == 1
    assert stream.jitter.frame_ms == 40
    heard = room.heard(since=2.0)
    assert band_energy(heard, 450) > 0.98 and tone_gaps(heard) == 0


def test_cli_settings_refuse_other_frame_durations() -> None:
    with pytest.raises(ValueError, match="10, 20, 40"):
        ClientSettings(frame_ms=30)


@pytest.mark.parametrize("ms", [10, 40])
def test_a_lost_frame_is_concealed_for_its_own_duration(ms: int) -> None:
    samples = SAMPLE_RATE * ms // 1000
    encoder = OpusEncoder(frame_ms=ms, expected_loss=20)
    source = open_source("tone:600", samples)
    packets = [encoder.encode(source.read()) for _ in range(12)]  # type: ignore[arg-type]
    streams = Streams(ClientSettings())
    for seq, opus in enumerate(packets):
        if seq not in (5, 6):  # 5: concealed (6 is missing too); 6: FEC from 7
            streams.push(9, VoiceFrame(seq, opus, seq).serialize(), 0.0, None)
    stream = streams.streams[9]
    out = []
    for _ in range(12):
        pcm = streams.decode_next(stream)
        assert pcm is not None
        out.append(pcm)
    assert [len(pcm) for pcm in out] == [samples] * 12
    assert stream.jitter.stats().lost == 2
    # And the 20 ms ticks take them apart and together without losing a sample.
    streams = Streams(ClientSettings())
    for seq, opus in enumerate(packets):
        streams.push(9, VoiceFrame(seq, opus, seq).serialize(), 0.0, None)
    ticks = [streams.play_stream(streams.streams[9]) for _ in range(12 * ms // 20)]
    assert all(t is not None and len(t) == FRAME_SAMPLES for t in ticks)
    assert streams.streams[9].pcm_samples == 0
