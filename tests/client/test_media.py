"""MediaEngine pieces that need no sockets: end-to-end opening and released frames."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bangor.audio.codec import OpusEncoder
from bangor.client.media import MediaEngine
from bangor.errors import AudioError, PacketError
from bangor.io.devices import open_sink, open_source
from bangor.settings import FRAME_SAMPLES, MAX_VOICE_FRAME, SAMPLE_RATE, ClientSettings
from bangor.wire.media import HopSealer, PacketType, derive_media_keys
from bangor.wire.voice import VoiceFrame, pack_relayed
from tests.audiocheck import align

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
    target = ClientSettings().jitter_target_ms // 20
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


# --- senders of different frame durations, mixed into one listener's ticks -----------


class Room:
    """Speakers with their own frame durations and tones, one listener, in memory.

    Time goes in 10 ms steps; each engine ticks when a whole frame of its own has
    passed, senders before the listener. ``jitter`` delays each packet by up to that
    many seconds (reordering some), to exercise the jitter buffers in their frames.
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
        self.sink = ListSink()
        self.listener = MediaEngine(
            2, KEYS, open_source("silence", config.frame_samples), self.sink, config, FakeCrypto()
        )
        self.listener._send = lambda ptype, payload: None  # type: ignore[method-assign]
        self.listener.clock = lambda: self.now
        self.speakers: dict[int, MediaEngine] = {}
        for session, (ms, spec) in speakers.items():
            own = ClientSettings(vad=False, frame_ms=ms)
            eng = MediaEngine(
                session,
                KEYS,
                open_source(spec, own.frame_samples),
                open_sink("null", own.frame_samples),
                own,
                FakeCrypto(),
            )
            eng._send = self._carry(session)  # type: ignore[method-assign]
            eng.clock = lambda: self.now
            self.speakers[session] = eng

    def _carry(self, session: int) -> Callable[[PacketType, bytes], None]:
        def send(ptype: PacketType, payload: bytes) -> None:
            if self.rng.random() < self.loss:
                return
            delay = self.rng.uniform(0, self.jitter)
            self.in_flight.append((self.now + delay, session, payload[3:]))

        return send

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds * 100)):
            self.steps += 1
            self.now = self.steps / 100
            for eng in self.speakers.values():
                if self.steps % (eng.frame_ms // 10) == 0:
                    eng.tick()
            self.in_flight.sort()
            while self.in_flight and self.in_flight[0][0] <= self.now:
                when, session, plaintext = self.in_flight.pop(0)
                self.listener.push(session, plaintext, when)
            if self.steps % (self.listener.frame_ms // 10) == 0:
                self.listener.tick()

    def heard(self, since: float) -> np.ndarray:
        pcm = np.concatenate(self.sink.frames).astype(np.float64)
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
    assert all(f.shape == (SAMPLE_RATE * listener_ms // 1000,) for f in room.sink.frames)
    assert len(room.sink.frames) * listener_ms == 4000  # one frame per tick, none missed
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
    old = room.speakers[1]
    # The same session starts over with 40 ms frames (e.g. it rejoined with --frame-ms 40).
    config = ClientSettings(vad=False, frame_ms=40)
    new = MediaEngine(
        1, KEYS, open_source("tone:450", 1920), open_sink("null", 1920), config, FakeCrypto()
    )
    new._send = old._send  # type: ignore[method-assign]
    new.clock = old.clock
    new._seq = old._seq  # a counter that goes on, so only the duration tells
    room.speakers[1] = new
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
    eng = engine()
    for seq, opus in enumerate(packets):
        if seq not in (5, 6):  # 5: concealed (6 is missing too); 6: FEC from 7
            eng.push(9, VoiceFrame(seq, opus, seq).serialize())
    stream = eng.streams[9]
    out = []
    for _ in range(12):
        pcm = eng._decode_next(stream)
        assert pcm is not None
        out.append(pcm)
    assert [len(pcm) for pcm in out] == [samples] * 12
    assert stream.jitter.stats().lost == 2
    # And the 20 ms ticks take them apart and together without losing a sample.
    eng = engine()
    for seq, opus in enumerate(packets):
        eng.push(9, VoiceFrame(seq, opus, seq).serialize())
    ticks = [eng._play(eng.streams[9]) for _ in range(12 * ms // 20)]
    assert all(t is not None and len(t) == FRAME_SAMPLES for t in ticks)
    assert eng.streams[9].pcm_samples == 0


# --- where voice goes: direct to some members, the relay for the rest ------------------


class Capture:
    """A datagram transport that keeps what is sent, and where."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


SERVER = ("192.0.2.10", 7600)
PEER_ADDRS = {21: ("198.51.100.21", 4021), 22: ("198.51.100.22", 4022)}


def routed_engine(direct: list[int]) -> tuple[MediaEngine, Capture]:
    """Our engine in a room with members 21 and 22; ``direct`` already have a path."""
    from bangor.wire.direct import Candidate, DirectPaths

    eng = MediaEngine(
        7,
        KEYS,
        open_source("tone"),
        open_sink("null"),
        ClientSettings(vad=False),
        FakeCrypto(),
    )
    eng.server_addr = SERVER
    eng.clock = lambda: 0.02  # the paths below were checked a moment ago on this clock
    eng.members.update(PEER_ADDRS)
    for member in direct:
        peer = DirectPaths(member)
        eng.direct.set_remote(
            member, peer.local_key(7), [Candidate("srflx", *PEER_ADDRS[member])], 0
        )
        peer.set_remote(7, eng.direct.local_key(member), [], 0)
        # The member answers one of our probes: the path is up.
        eng.direct.handle_timer(0.0)
        for probe, addr in eng.direct.datagrams_to_send():
            peer.datagram_received(probe, ("203.0.113.7", 7000), 0.0)
            for answer, _ in peer.datagrams_to_send():
                eng.direct.datagram_received(answer, addr, 0.01)
    assert set(eng.direct.direct()) == set(direct)
    capture = Capture()
    eng.transport = capture  # type: ignore[assignment]
    return eng, capture


def server_packets(eng: MediaEngine, capture: Capture) -> list[tuple[PacketType, bytes]]:
    from bangor.wire import stun
    from bangor.wire.media import HopOpener

    opener = HopOpener(KEYS.client_to_server, 7)
    found = []
    for data, addr in capture.sent:
        if addr == SERVER and not stun.is_stun(data):  # our address is asked for too
            header, payload = opener.open(data)
            found.append((header.type, payload))
    return found


@pytest.mark.parametrize(
    ("direct", "to_server"),
    [([], PacketType.VOICE), ([21], PacketType.VOICE_EXCEPT), ([21, 22], None)],
)
def test_each_frame_goes_direct_where_it_can_and_the_relay_skips_those(
    direct: list[int], to_server: PacketType | None
) -> None:
    from bangor.wire.voice import unpack_except

    eng, capture = routed_engine(direct)
    eng.tick()
    relayed = server_packets(eng, capture)
    if to_server is None:
        assert relayed == []  # everyone is reached directly: the relay carries nothing
    else:
        [(ptype, payload)] = relayed
        assert ptype is to_server
        if ptype is PacketType.VOICE_EXCEPT:
            skip, voice = unpack_except(payload)
            assert skip == frozenset(direct)
            assert voice.startswith(b"ok:")
    direct_voice = [
        addr
        for data, addr in capture.sent
        if addr in PEER_ADDRS.values() and data[1] == PacketType.VOICE  # not the probes
    ]
    assert sorted(direct_voice) == sorted(PEER_ADDRS[m] for m in direct)
    assert eng.stats.direct_sent == len(direct)


def test_forged_probe_answers_never_send_our_voice_to_an_unprobed_address() -> None:
    """Issue 12, finding 4, through the engine: every datagram it sends is collected."""
    from bangor.wire.direct import Candidate
    from bangor.wire.media import HopOpener
    from tests.wire.test_direct import VICTIM, forged_answers

    eng = MediaEngine(
        7, KEYS, open_source("tone"), open_sink("null"), ClientSettings(vad=False), FakeCrypto()
    )
    now = 0.0
    eng.server_addr = SERVER
    eng.clock = lambda: now
    eng.members.add(21)
    capture = Capture()
    eng.transport = capture  # type: ignore[assignment]
    mallory_key, mallory_addr = bytes(range(32)), PEER_ADDRS[21]
    eng.direct.set_remote(21, mallory_key, [Candidate("srflx", *mallory_addr)], now)
    opener = HopOpener(eng.direct.local_key(21), 7)
    sealer = HopSealer(mallory_key, 21)
    answered = 0
    for _ in range(150):  # 3 s of 20 ms ticks
        now += 0.02
        eng.tick()
        probes = [
            (data, addr) for data, addr in capture.sent[answered:] if data[1] == PacketType.PROBE
        ]
        answered = len(capture.sent)
        for probe, addr in probes:
            for answer, src in forged_answers(probe, opener, sealer, addr, own=False):
                eng.datagram_received(answer, src)
    assert [addr for _, addr in capture.sent if addr == VICTIM] == []
    assert eng.direct.direct() == {} and eng.stats.direct_sent == 0
    assert eng.stats.sent > 100 and eng.stats.dropped >= 100  # voice went by the relay
