"""What a user controls in a real call: recording, mute, volume, push-to-talk commands."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import filtfilt, iirnotch

from tests.audiocheck import align, envelope_correlation, make_speech_wav, read_wav_48k
from tests.integration.conftest import ServerProcess

pytestmark = pytest.mark.integration

SPEECH = "Recording this call, so that we can listen to it again later."


def test_record_writes_the_call_as_ogg_opus(server: ServerProcess, tmp_path: Path) -> None:
    speech = tmp_path / "speech.wav"
    make_speech_wav(speech, SPEECH)
    reference = read_wav_48k(speech)
    seconds = len(reference) / 48000
    for user in ("alice", "bob"):
        server.add_user(user)
    invite = server.create_room("alice")
    record = tmp_path / "call.opus"
    server.speak_to(
        invite,
        speech,
        seconds,
        *("--input", "tone:300", "--output", "null", "--vad", "off", "--record", str(record)),
    )

    info = subprocess.run(["opusinfo", str(record)], capture_output=True, text=True)
    assert info.returncode == 0 and "WARNING" not in info.stdout + info.stderr, info.stdout
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,sample_rate,channels",
            "-of",
            "csv=p=0",
            str(record),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "opus,48000,1"
    decoded = tmp_path / "call.wav"
    subprocess.run(["opusdec", "--quiet", "--rate", "48000", str(record), str(decoded)], check=True)
    audio = read_wav_48k(decoded)
    # The recording holds alice's speech as bob heard it (bob's tone notched out)...
    b, a = iirnotch(300, 10, 48000)
    _, aligned = align(reference, filtfilt(b, a, audio))
    assert envelope_correlation(reference, aligned, max_shift_ms=40) > 0.85
    # ... and bob's own voice (his 300 Hz tone), which the speakers never play: alone
    # in the last second, after alice left.
    tail = audio[-60000:-4800]
    spectrum = np.abs(np.fft.rfft(tail))
    freqs = np.fft.rfftfreq(len(tail), 1 / 48000)
    assert abs(freqs[np.argmax(spectrum)] - 300) < 2
    assert np.sqrt(np.mean(tail**2)) > 0.1


def test_commands_on_stdin_change_the_audio_controls(server: ServerProcess, tmp_path: Path) -> None:
    for user in ("alice", "bob"):
        server.add_user(user)
    invite = server.create_room("alice")
    alice = server.join(
        invite,
        "alice",
        "--input",
        "silence",
        "--output",
        "null",
        "--duration",
        "30",
        "--name",
        "Alice",
    )
    alice.event("joined")
    commands = [
        "/volume alice 50",
        "/volume nobody 50",
        "/volume Alice 900",
        "/mute",
        "/deafen",
        "/talk",
        "/ns on",
        "/agc",
        "/aec off",
        "/ns maybe",
        "/frobnicate",
        "/mute now",
        "/help",
        "//not a command",
    ]
    bob = server.join(
        invite,
        "bob",
        "--input",
        "tone",
        "--output",
        "null",
        "--duration",
        "30",
        "--ptt",
        stdin="\n".join(commands) + "\n",
    )
    bob.event("joined")
    states = bob.events_of("audio", 7)
    assert states[0]["volumes"] == {"Alice": 50}
    assert states[1]["muted"] is True and states[1]["deafened"] is False
    assert states[2]["deafened"] is True
    assert states[3]["talking"] is True and states[3]["push_to_talk"] is True
    # A tone as input: the capture chain starts off, and each stage switches alone.
    assert not states[3]["noise_suppression"] and not states[3]["agc"]
    assert states[4]["noise_suppression"] is True and states[4]["agc"] is False
    assert states[5]["agc"] is True  # no word: the other way round
    assert states[6]["echo_cancellation"] is False
    assert states[6]["noise_suppression"] is True and states[6]["agc"] is True
    (notice,) = [e["message"] for e in bob.events_of("notice", 1)]  # /help alone
    assert "/ns [on|off] (noise suppression)" in str(notice)
    warnings = [e["message"] for e in bob.events() if e["event"] == "warning"]
    assert any("no member called 'nobody'" in str(m) for m in warnings)
    assert any("0..400" in str(m) for m in warnings)
    assert "usage: /ns [on|off]" in warnings
    assert "unknown command /frobnicate (type /help)" in warnings
    assert "/mute takes no argument" in warnings
    assert not [e for e in bob.events() if e["event"] == "error"]
    chat = alice.event("chat")
    assert chat["text"] == "/not a command"
    bob.proc.terminate()
    alice.proc.terminate()
    bob.wait()
    alice.wait()


def test_without_sound_cards_the_call_goes_on_in_silence(
    server: ServerProcess, tmp_path: Path
) -> None:
    """This machine (and CI) has PortAudio but no sound card: default devices fail."""
    for user in ("alice", "bob"):
        server.add_user(user)
    invite = server.create_room("alice")
    bob = server.join(invite, "bob", "--input", "silence", "--output", "null", "--duration", "8")
    bob.event("joined")
    alice = server.join(
        invite,
        "alice",
        "--input",
        "default",
        "--output",
        "default",
        "--duration",
        "2",
        stdin="still here\n",
    )
    (warning,) = [str(e["message"]) for e in alice.events_of("warning", 1)]
    # One cause (no sound card), one warning: the call goes on, so not an `error`.
    assert warning.endswith("; joining without a microphone or sound output")
    assert "bangor devices" in warning or "audio devices" in warning or "PortAudio" in warning
    alice.event("joined")
    assert bob.event("chat")["text"] == "still here"
    assert alice.wait() == 0
    assert [e["event"] for e in alice.events()].count("warning") == 1
    assert "error" not in [e["event"] for e in alice.events()]
    assert "Traceback" not in "\n".join(alice.stderr.seen)
    bob.wait()
