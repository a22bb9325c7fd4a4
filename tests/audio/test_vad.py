"""Voice gate: espeak-ng speech passes, silence and low noise do not, words stay whole."""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangor.audio.vad import VoiceGate
from bangor.errors import AudioError
from bangor.io.devices import read_wav
from bangor.media.sender import Sender
from bangor.settings import FRAME_SAMPLES, SAMPLE_RATE, ClientSettings
from bangor.wire.media import PacketType
from bangor.wire.voice import VoiceFrame
from tests.audiocheck import make_speech_wav
from tests.media.net import lone_session, open_header

SPEECH = "Please call Stella. Ask her to bring these things with her from the store."
HANGOVER = 15
PREROLL = 2


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path = tmp_path_factory.mktemp("vad") / "speech.wav"
    make_speech_wav(path, SPEECH)
    return read_wav(path)


def frames_of(pcm: np.ndarray) -> list[np.ndarray]:
    pcm = np.pad(pcm, (0, -len(pcm) % FRAME_SAMPLES))
    return [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm), FRAME_SAMPLES)]


def noise(frames: int, rms: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(0, rms, frames * FRAME_SAMPLES)).astype(np.int16)


def rms_db(frame: np.ndarray) -> float:
    rms = np.sqrt(np.mean(frame.astype(np.float64) ** 2))
    return float(20 * np.log10(max(rms, 1e-3) / 32768))


def run(gate: VoiceGate, frames: list[np.ndarray]) -> list[list[np.ndarray]]:
    return [gate.process(f) for f in frames]


class ScriptedVad:
    """Stands in for webrtcvad.Vad: says "speech" exactly where the script says so."""

    def __init__(self, script: list[bool]) -> None:
        self._verdicts: Iterator[bool] = iter(script)

    def is_speech(self, data: bytes, rate: int) -> bool:
        assert len(data) == 2 * FRAME_SAMPLES and rate == SAMPLE_RATE
        return next(self._verdicts)


def scripted(script: list[bool], hangover: int = HANGOVER, preroll: int = PREROLL) -> VoiceGate:
    gate = VoiceGate(hangover_frames=hangover, preroll_frames=preroll)
    gate._vad = ScriptedVad(script)
    return gate


def numbered(count: int) -> list[np.ndarray]:
    """Frames that carry their own index in the first sample."""
    frames = [np.zeros(FRAME_SAMPLES, dtype=np.int16) for _ in range(count)]
    for i, frame in enumerate(frames):
        frame[0] = i
    return frames


# --- real audio through webrtcvad ------------------------------------------------------


def test_speech_passes(speech: np.ndarray) -> None:
    frames = frames_of(speech)
    sent = {f.tobytes() for batch in run(VoiceGate(), frames) for f in batch}
    loudest = max(rms_db(f) for f in frames)
    spoken = [i for i, f in enumerate(frames) if rms_db(f) > loudest - 30]
    assert len(spoken) > 100
    missing = [i for i in spoken if frames[i].tobytes() not in sent]
    assert not missing, f"speech frames held back: {missing}"


def test_digital_silence_is_never_sent() -> None:
    gate = VoiceGate()
    assert not any(run(gate, frames_of(np.zeros(5 * SAMPLE_RATE, dtype=np.int16))))
    assert not gate.open


@pytest.mark.parametrize("level_db", [-70, -60, -45])
def test_steady_low_noise_is_gated(level_db: float) -> None:
    """The VAD learns the noise floor within a few frames, then sends nothing more."""
    frames = frames_of(noise(250, 32768 * 10 ** (level_db / 20)))
    batches = run(VoiceGate(), frames)
    settled = batches[HANGOVER + 10 :]
    assert not any(settled), f"{sum(map(len, settled))} noise frames sent after settling"


def test_speech_after_silence_is_heard_then_the_gate_closes(speech: np.ndarray) -> None:
    pause = np.zeros(2 * SAMPLE_RATE, dtype=np.int16)
    frames = frames_of(np.concatenate([pause, speech, pause, speech, pause]))
    batches = run(VoiceGate(), frames)
    sent = sum(map(len, batches))
    per_speech = len(frames_of(speech))
    # Both utterances go out (with their hang-over); the three pauses do not.
    assert 1.6 * per_speech < sent < 2 * (per_speech + HANGOVER + PREROLL)
    assert not any(batches[-50:]), "still sending in the final pause"


def test_a_steady_tone_counts_as_voice() -> None:
    """The tone:HZ sources the integration tests speak with are sent with VAD on."""
    t = np.arange(100 * FRAME_SAMPLES) / SAMPLE_RATE
    for hz in (440, 1250):
        tone = np.round(0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
        assert sum(map(len, run(VoiceGate(), frames_of(tone)))) == 100


def test_vad_costs_little_cpu(speech: np.ndarray) -> None:
    import timeit

    gate = VoiceGate()
    frames = frames_of(speech)
    seconds = timeit.timeit(lambda: run(gate, frames), number=3) / (3 * len(frames))
    assert seconds < 500e-6, f"{seconds * 1e6:.0f} us per 20 ms frame"


# --- the gate's logic, with scripted verdicts --------------------------------------------


def test_hangover_keeps_sending_300_ms_after_the_last_voiced_frame() -> None:
    script = [True] * 5 + [False] * 40
    batches = run(scripted(script), numbered(len(script)))
    assert [len(b) for b in batches] == [1] * (5 + HANGOVER) + [0] * (40 - HANGOVER)
    assert HANGOVER * 20 == 300


def test_a_short_pause_inside_the_hangover_keeps_the_gate_open() -> None:
    script = [True] * 3 + [False] * HANGOVER + [True] + [False] * (HANGOVER + 5)
    batches = run(scripted(script), numbered(len(script)))
    assert all(len(b) == 1 for b in batches[: 3 + HANGOVER + 1 + HANGOVER])
    assert not any(batches[3 + HANGOVER + 1 + HANGOVER :])


def test_preroll_is_sent_at_onset_oldest_first() -> None:
    script = [False] * 10 + [True] + [False] * 3
    frames = numbered(len(script))
    batches = run(scripted(script), frames)
    assert not any(batches[:10])
    assert [int(f[0]) for f in batches[10]] == [8, 9, 10]
    assert [int(b[0][0]) for b in batches[11:]] == [11, 12, 13]


def test_preroll_after_a_gap_shorter_than_it_holds_only_unsent_frames() -> None:
    # Speech, hang-over, one silent frame, speech: only that one frame is pre-roll.
    script = [True] + [False] * (HANGOVER + 1) + [True]
    batches = run(scripted(script), numbered(len(script)))
    assert [int(f[0]) for f in batches[-1]] == [HANGOVER + 1, HANGOVER + 2]


def test_reset_closes_the_gate_and_forgets_the_preroll() -> None:
    """The microphone went off: its hang-over and held frames are not sent later."""
    script = [True, False, False, False, True]
    gate = scripted(script)
    frames = numbered(len(script))
    assert [len(gate.process(f)) for f in frames[:3]] == [1, 1, 1]
    assert gate.open
    gate.reset()
    assert not gate.open
    assert gate.process(frames[3]) == []  # silent, and no hang-over left
    gate.reset()
    assert [int(f[0]) for f in gate.process(frames[4])] == [4]  # frame 3 was forgotten


def test_no_hangover_and_no_preroll_sends_exactly_the_voiced_frames() -> None:
    script = [False, True, False, True, True, False]
    batches = run(scripted(script, hangover=0, preroll=0), numbered(len(script)))
    assert [len(b) for b in batches] == [int(v) for v in script]


@settings(max_examples=200, deadline=None)
@given(
    script=st.lists(st.booleans(), max_size=200),
    hangover=st.integers(0, 20),
    preroll=st.integers(0, 5),
)
def test_frames_are_never_reordered_duplicated_or_from_the_future(
    script: list[bool], hangover: int, preroll: int
) -> None:
    frames = numbered(len(script))
    gate = scripted(script, hangover, preroll)
    sent: list[int] = []
    for tick, frame in enumerate(frames):
        batch = [int(f[0]) for f in gate.process(frame)]
        # Consecutive and ending with this tick's frame, so seq = tick - offset works.
        assert batch == list(range(tick - len(batch) + 1, tick + 1))
        assert len(batch) <= 1 + preroll
        sent += batch
    assert sent == sorted(set(sent))
    # Every voiced frame is sent, and so is every frame within the hang-over after one.
    voiced = [i for i, v in enumerate(script) if v]
    for i in voiced:
        assert set(range(max(i - preroll, 0), min(i + hangover + 1, len(script)))) <= set(sent)


# --- errors ---------------------------------------------------------------------------


def test_missing_webrtcvad_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "webrtcvad", None)  # import raises ImportError
    with pytest.raises(AudioError, match="webrtcvad-wheels"):
        VoiceGate()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"aggressiveness": 4},
        {"aggressiveness": -1},
        {"hangover_frames": -1},
        {"preroll_frames": -1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(AudioError):
        VoiceGate(**kwargs)


def test_a_wrong_frame_is_refused() -> None:
    with pytest.raises(AudioError):
        VoiceGate().process(np.zeros(480, dtype=np.int16))
    with pytest.raises(AudioError):
        VoiceGate().process(np.zeros(FRAME_SAMPLES, dtype=np.float32))


# --- the client's send path ------------------------------------------------------------


class IndexEncoder:
    """Encodes a frame as its position in the source, to check the sequence numbers."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self._index = {f.tobytes(): i for i, f in enumerate(frames)}

    def encode(self, pcm: np.ndarray) -> bytes:
        return struct.pack("!I", self._index[pcm.tobytes()])


@pytest.mark.parametrize("vad", [True, False])
def test_the_sender_numbers_every_tick_and_sends_only_what_the_gate_passes(
    speech: np.ndarray, vad: bool
) -> None:
    quiet = noise(100, 3.0, seed=1)  # distinct frames, far below any VAD threshold
    pcm = np.concatenate([quiet, speech, quiet, speech, quiet])
    frames = frames_of(pcm)
    sender = Sender(ClientSettings(vad=vad))
    sender.encoder = IndexEncoder(frames)  # type: ignore[assignment]
    packets = [VoiceFrame.parse(p) for frame in frames for p in sender.frames(frame, True)]
    seqs = [p.seq for p in packets]
    assert seqs == sorted(set(seqs))
    assert all(struct.unpack("!I", p.opus)[0] == p.seq for p in packets)
    assert sender.sent == len(packets) and sender.sent + sender.suppressed == len(frames)
    if vad:
        assert sender.suppressed > 250  # most of the three 2 s pauses
        assert not [s for s in seqs if s < 90 or len(frames) - 90 <= s]
    else:
        assert seqs == list(range(len(frames))) and sender.suppressed == 0


def test_the_session_sends_keepalives_but_no_voice_while_silent() -> None:
    session = lone_session(ClientSettings(relay_only=True))
    session.start([], 0.0)
    sent = [open_header(data) for data, _ in session.datagrams_to_send()]
    for i in range(50):
        session.tick(np.zeros(FRAME_SAMPLES, dtype=np.int16), 0.02 * (i + 1))
    sent += [open_header(data) for data, _ in session.datagrams_to_send()]
    assert sent == [PacketType.KEEPALIVE]
    stats = session.stats(1.0)
    assert stats.sent == 0 and stats.suppressed == 50


@pytest.mark.parametrize("ms", [10, 40])
def test_speech_passes_and_silence_is_gated_with_other_frame_durations(
    speech: np.ndarray, ms: int
) -> None:
    samples = SAMPLE_RATE * ms // 1000
    pause = np.zeros(2 * SAMPLE_RATE, dtype=np.int16)
    pcm = np.concatenate([pause, speech, pause])
    pcm = np.pad(pcm, (0, -len(pcm) % samples))
    frames = [pcm[i : i + samples] for i in range(0, len(pcm), samples)]
    # Hang-over and pre-roll in time as for 20 ms frames: 300 and 40 ms.
    gate = VoiceGate(
        hangover_frames=300 // ms, preroll_frames=max(40 // ms, 1), frame_samples=samples
    )
    batches = run(gate, frames)
    sent = {f.tobytes() for batch in batches for f in batch}
    loudest = max(rms_db(f) for f in frames)
    spoken = [i for i, f in enumerate(frames) if rms_db(f) > loudest - 30]
    assert len(spoken) * ms > 1500  # seconds of speech, judged in frames of this size
    assert all(frames[i].tobytes() in sent for i in spoken)
    assert not any(batches[: 2000 // ms])  # the leading pause
    assert not any(batches[-1500 // ms :])  # the trailing pause, after the hang-over
    assert len(sent) * ms < (len(speech) / SAMPLE_RATE + 0.5) * 1000


def test_a_40ms_frame_is_judged_as_two_20ms_pieces() -> None:
    gate = VoiceGate(frame_samples=2 * FRAME_SAMPLES)
    gate._vad = ScriptedVad([False, True, False, False])
    assert len(gate.process(np.zeros(2 * FRAME_SAMPLES, np.int16))) == 1  # the second half
    assert gate.open


def test_gate_refuses_frames_webrtc_cannot_judge() -> None:
    with pytest.raises(AudioError, match="whole 10 ms"):
        VoiceGate(frame_samples=240)
