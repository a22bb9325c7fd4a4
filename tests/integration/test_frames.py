"""Speakers choose their Opus frame duration (--frame-ms); listeners hear any of them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.audiocheck import make_speech_wav, read_wav_48k
from tests.integration.conftest import ServerProcess
from tests.integration.test_call import assert_same_speech

pytestmark = pytest.mark.integration

SPEECH = "Ten or forty milliseconds a frame, the words arrive the same."


@pytest.mark.parametrize(
    ("speaker_ms", "listener_ms", "record"),
    [("40", None, "bob.wav"), ("10", None, "bob.wav"), ("40", "10", "bob.opus")],
)
def test_speech_of_any_frame_duration_is_heard(
    server: ServerProcess,
    tmp_path: Path,
    speaker_ms: str,
    listener_ms: str | None,
    record: str,
) -> None:
    speech = tmp_path / "speech.wav"
    make_speech_wav(speech, SPEECH)
    reference = read_wav_48k(speech)
    server.add_user("alice")
    server.add_user("bob")
    invite = server.create_room("alice")
    recording = tmp_path / record
    listener = ["--input", "silence"]
    if listener_ms is not None:
        listener += ["--frame-ms", listener_ms]
    if record.endswith(".opus"):
        listener += ["--output", "null", "--record", str(recording)]
    else:
        listener += ["--output", str(recording)]
    _, bob = server.speak_to(
        invite,
        speech,
        len(reference) / 48000,
        *listener,
        speaker_args=("--frame-ms", speaker_ms),
    )
    heard = recording
    if record.endswith(".opus"):
        heard = tmp_path / "decoded.wav"
        subprocess.run(
            ["opusdec", "--quiet", "--rate", "48000", str(recording), str(heard)], check=True
        )
    corr, score = assert_same_speech(reference, read_wav_48k(heard))
    print(f"{speaker_ms} ms to {listener_ms or 20} ms: envelope {corr:.3f}, PESQ-WB {score:.2f}")
    senders = [
        sender
        for event in bob.events()
        if event["event"] == "stats"
        for sender in event["senders"].values()  # type: ignore[attr-defined]
    ]
    assert senders and all(s["frame_ms"] == int(speaker_ms) for s in senders)
