"""Speech through real processes in network namespaces, over a lossy, jittery link.

Topology (one for the module; each case changes only the impairment)::

    alice ns --[netem both ways]-- router ns -- server ns (bangor serve)
    bob ns   ----------------------/

alice speaks, bob records, PESQ-WB judges what bob heard. The impairment sits on both
ends of alice's link: what alice sends (her voice, on its way up to the server) and
what she receives (the loss reports of her listeners, control traffic) each get
``LOSS`` % random loss and 40 +- 30 ms of delay (netem's jitter, which reorders).
bob's link is clean, so the loss bob sees in alice's stream is what netem applies.

Scoring starts after a lead-in sentence (``LEAD_IN``, about 3 s, cut at the known
sample where the scored speech begins): the sender adapts its redundancy to the loss
its listeners report, and a report needs about a second of voice to say anything.
"""

from __future__ import annotations

import json
import signal
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from tests.audiocheck import SR, align, envelope_correlation, make_speech_wav, pesq_wb, read_wav_48k
from tests.integration.conftest import BANGOR, Client, ServerProcess, start_server, stop_server
from tests.netns import Namespace, Network, netns_available

pytestmark = pytest.mark.integration

LEAD_IN = "Hello Bob, this is Alice. Can you hear me?"
SCORED = (
    "The quick brown fox jumps over the lazy dog. Bangor carries voices between friends, "
    "and the server never hears a word. When packets go missing on a busy network, the "
    "listener should still understand every sentence we say."
)
GAP_S = 0.3  # between the lead-in and the scored speech
SETTLE_S = 2.0  # silence before the lead-in
DELAY_MS = 40
JITTER_MS = 30
PORT = 7600
TAIL_S = 2.0  # alice stays this long after her speech, so its end is played out at bob


@dataclass
class Lab:
    net: Network
    router: Namespace
    alice: Namespace
    bob: Namespace
    server: ServerProcess


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    with Network() as net:
        router = net.router("net")
        server_ns, alice, bob = (net.namespace(n) for n in ("server", "alice", "bob"))
        server_ip = net.attach(server_ns, router, "10.99.0.0/24")
        net.attach(alice, router, "10.99.1.0/24")
        net.attach(bob, router, "10.99.2.0/24")
        command = tuple(server_ns.cmd(BANGOR))
        tmp = tmp_path_factory.mktemp("loss")
        server = start_server(tmp, command=command, host=server_ip, port=PORT)
        try:
            server.add_user("alice")
            server.add_user("bob")
            yield Lab(net, router, alice, bob, server)
        finally:
            stop_server(server)
        assert not any("Traceback" in line for line in server.stderr.rest(timeout=5))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, int]:
    """The WAV alice speaks, its samples, and the sample where scoring starts."""
    tmp = tmp_path_factory.mktemp("speech")
    parts = []
    for i, text in enumerate((LEAD_IN, SCORED)):
        make_speech_wav(tmp / f"part{i}.wav", text)
        parts.append(read_wav_48k(tmp / f"part{i}.wav"))
    # Silence first (voice activity detection sends none of it): over a lossy link the
    # members' key exchange can take seconds, and frames wait at most 1 s for a key.
    lead = np.concatenate([np.zeros(int(SETTLE_S * SR)), parts[0]])
    start = len(lead) + int(GAP_S * SR)
    samples = np.concatenate([lead, np.zeros(start - len(lead)), parts[1]])
    path = tmp / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(np.round(samples * 32767).astype("<i2").tobytes())
    return path, read_wav_48k(path), start


def impair(lab: Lab, loss_pct: float) -> None:
    """Both directions of alice's link: alice -> server (her voice) and server -> alice."""
    for ns, dev in ((lab.alice, "net"), (lab.router, "alice")):
        lab.net.netem(ns, dev, loss_pct=loss_pct, delay_ms=DELAY_MS, jitter_ms=JITTER_MS)


def call(lab: Lab, room: str, speech: Path, seconds: float, out: Path) -> tuple[Client, int]:
    """alice speaks ``speech`` to bob, who records it to ``out``; returns bob and alice's id."""
    server = lab.server
    invite = server.create_room("bob", room, prefix=lab.bob.cmd())
    bob = server.join(
        invite,
        "bob",
        *("--input", "silence", "--output", str(out), "--duration", "120"),
        prefix=lab.bob.cmd(),
    )
    bob.event("joined")
    alice = server.join(
        invite,
        "alice",
        *("--input", str(speech), "--output", "null", "--duration", str(seconds + TAIL_S)),
        prefix=lab.alice.cmd(),
    )
    joined = bob.event("member_joined")
    alice_id: int = joined["member"]["session_id"]  # type: ignore[index]
    assert alice.wait(timeout=seconds + 60) == 0, alice.stderr.seen
    bob.event("member_left", timeout=30)
    bob.proc.send_signal(signal.SIGTERM)  # alice is gone and everything she said played
    assert bob.wait() == 0, bob.stderr.seen
    return bob, alice_id


def last_stats_for(bob: Client, sender: int) -> dict[str, float]:
    """bob's view of one sender, from his last `stats` event that still had it."""
    key = f"{sender:08x}"
    stats = [
        cast(dict[str, dict[str, float]], e["senders"])
        for e in bob.events()
        if e["event"] == "stats"
    ]
    seen = [senders[key] for senders in stats if key in senders]
    assert seen, f"no stats for {key} in {stats}"
    return seen[-1]


@pytest.mark.parametrize(("loss_pct", "target"), [(0, 3.8), (5, 3.5), (15, 3.0)])
def test_speech_quality_under_loss_and_jitter(
    lab: Lab,
    speech: tuple[Path, np.ndarray, int],
    tmp_path: Path,
    loss_pct: float,
    target: float,
) -> None:
    path, reference, start = speech
    impair(lab, loss_pct)
    recording = tmp_path / "bob.wav"
    bob, alice_id = call(lab, f"loss{loss_pct}", path, len(reference) / SR, recording)

    # Lined up on its own: the play-out delay may have grown during the lead-in. Where it
    # lies in bob's recording says little about latency: it includes alice's joining,
    # which takes seconds when her handshake packets are lost.
    scored = reference[start:]
    offset, aligned = align(scored, read_wav_48k(recording))
    score = pesq_wb(scored, aligned)
    corr = envelope_correlation(scored, aligned, max_shift_ms=60)
    stats = last_stats_for(bob, alice_id)
    report = (
        f"{loss_pct}% loss, {DELAY_MS}+-{JITTER_MS} ms: PESQ-WB {score:.2f} (target {target}), "
        f"envelope correlation {corr:.3f}, scored speech at {offset / SR:.2f} s in bob's "
        f"recording; bob's stats for alice: {json.dumps(stats)}"
    )
    print(report)
    assert score >= target, report
    # The loss bob reports for alice's stream is the loss netem applies on her uplink.
    # Over the ~650 packets of a call that is +- 0.9 points at 5 %, +- 1.4 at 15 % (one
    # standard deviation); the margin below is about four of them.
    assert "loss" in stats, f"no per-sender `loss` (fraction 0..1) in stats: {report}"
    assert abs(stats["loss"] - loss_pct / 100) <= 0.02 + 0.25 * loss_pct / 100, report
