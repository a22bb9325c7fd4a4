"""Mouth-to-ear software latency on loopback: an impulse in, the time until it comes out.

Starts a real ``bangor serve`` on 127.0.0.1 and two client processes that run the real
client (``bangor.client.app.join_call``: capture tick, Opus, E2EE seal, hop seal, UDP,
the server's relay, hop open, E2EE open, jitter buffer, decode, mixer) with two
instrumented audio ends in place of sound cards:

- the speaker's source hands over a 2 ms click at the start of every 25th frame (every
  0.5 s; silence otherwise) and notes ``time.monotonic()`` as it does;
- the listener's sink notes the time each frame arrives and where in it the click is.

Latency = (sink time + click offset in that frame) - (source time). CLOCK_MONOTONIC is
shared by all processes of the machine, so the two clocks agree. What it leaves out is
what sound cards add (their period and buffer, typically 5-20 ms each way). Voice
activity detection is off (a click is not speech); everything else is as the client
ships it, on a clean network (no redundancy, so the jitter buffer is at its lowest).

Clicks count from two seconds after the listener verified the speaker (until then a
jitter buffer runs on its start-up guess, ``jitter_target_ms``, and settles); ``-v``
prints every click's latency and when it was sent, and the end shows the listener's
buffer counters (lost, late and dropped frames stay near zero on loopback).

With ``--frame-ms`` both clients send and tick in frames of that duration. The
source hands over a whole frame at once, so the capture side's framing (a sound card's
frame is complete only ``frame_ms`` after its first sample) is not in the figure: add
one frame duration for that.

Run::

    .venv/bin/python bench/latency.py [--seconds 30] [--frame-ms 10|20|40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from procfs import HOST, free_port

CLICK_EVERY_MS = 500  # one click per 0.5 s
CLICK_SAMPLES = 96  # 2 ms
THRESHOLD = 3000  # int16 level that counts as the click coming out
PASSWORD = "latency bench password"
BANGOR = str(Path(sys.executable).parent / "bangor")


# --- in the client processes -------------------------------------------------------


def child(role: str, invite_text: str, user: str, frame_ms: int) -> None:
    from bangor.client import app
    from bangor.io.devices import NullSink, SilenceSource
    from bangor.settings import ClientSettings
    from bangor.wire.invite import Invite

    settings = ClientSettings(vad=False, frame_ms=frame_ms)
    samples = settings.frame_samples
    click_every = CLICK_EVERY_MS // frame_ms

    def note(**fields: float) -> None:
        print(json.dumps(fields), flush=True)

    class ClickSource:
        def __init__(self) -> None:
            self.frames = 0
            t = np.arange(CLICK_SAMPLES) / 48000
            self.click = np.zeros(samples, np.int16)
            self.click[:CLICK_SAMPLES] = (20000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)

        def read(self) -> np.ndarray:
            self.frames += 1
            if self.frames % click_every == 0:
                note(sent=time.monotonic())
                return self.click.copy()
            return np.zeros(samples, np.int16)

        def close(self) -> None:
            pass

    class DetectSink(NullSink):
        def __init__(self) -> None:
            self.quiet = True

        def write(self, frame: np.ndarray) -> None:
            now = time.monotonic()
            loud = np.flatnonzero(np.abs(frame.astype(np.int32)) > THRESHOLD)
            if len(loud) and self.quiet:
                note(heard=now + loud[0] / 48000)
            self.quiet = not len(loud)

    if role == "speaker":
        app.open_source = lambda spec, samples: ClickSource()  # type: ignore[assignment]
        app.open_sink = lambda spec, samples: NullSink(samples)  # type: ignore[assignment]
    else:
        app.open_source = lambda spec, samples: SilenceSource(samples)  # type: ignore[assignment]
        app.open_sink = lambda spec, samples: DetectSink()  # type: ignore[assignment]

    def emit(event: object) -> None:
        kind = getattr(event, "kind", "")
        if kind in ("joined", "member_verified", "left", "error"):
            note(**{kind: time.monotonic()})
        elif kind == "stats" and role == "listener":
            for counts in getattr(event, "senders", {}).values():
                note(stats=time.monotonic(), **{k: float(v) for k, v in counts.items()})

    asyncio.run(
        app.join_call(
            Invite.parse(invite_text),
            app.Login(user, PASSWORD),
            emit,
            read_stdin=False,
            settings=replace(settings, stats_interval=1.0),
            duration=None,
        )
    )


# --- the orchestra ------------------------------------------------------------------


def run(args: list[str], env: dict[str, str] | None = None, stdin: str = "") -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, timeout=60)
    if done.returncode:
        raise SystemExit(f"{args[:3]} failed: {done.stderr}")
    return done.stdout


def lines_of(proc: subprocess.Popen[str], into: list[dict[str, float]]) -> threading.Thread:
    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                into.append(json.loads(line))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def wait_for(events: list[dict[str, float]], key: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not any(key in e for e in events):
        if time.monotonic() > deadline:
            raise SystemExit(f"no {key!r} event: {events}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--child", choices=["speaker", "listener"])
    parser.add_argument("--invite")
    parser.add_argument("--user")
    parser.add_argument("--frame-ms", type=int, choices=[10, 20, 40], default=20)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every click")
    opts = parser.parse_args()
    if opts.child:
        child(opts.child, opts.invite, opts.user, opts.frame_ms)
        return
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        port = free_port()
        server = subprocess.Popen(
            [BANGOR, "serve", "--host", HOST, "--port", str(port), "--data-dir", str(tmp / "srv")],
            stderr=subprocess.PIPE,
            text=True,
        )
        procs: list[subprocess.Popen[str]] = [server]
        try:
            assert server.stderr is not None
            for line in server.stderr:
                if "listening on" in line:
                    break
            for user in ("speaker", "listener"):
                run([BANGOR, "user", "add", user, "--data-dir", str(tmp / "srv")], stdin=PASSWORD)
            env = dict(os.environ, BANGOR_HOME=str(tmp / "speaker"), BANGOR_PASSWORD=PASSWORD)
            invite = run(
                [
                    BANGOR,
                    "room",
                    "create",
                    "bench",
                    "--server",
                    f"{HOST}:{port}",
                    "--user",
                    "speaker",
                ],
                env=env,
            ).strip()
            events: dict[str, list[dict[str, float]]] = {"speaker": [], "listener": []}
            for role in ("listener", "speaker"):
                child_env = dict(env, BANGOR_HOME=str(tmp / role))
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        role,
                        "--invite",
                        invite,
                        "--user",
                        role,
                        "--frame-ms",
                        str(opts.frame_ms),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=child_env,
                )
                procs.append(proc)
                lines_of(proc, events[role])
                wait_for(events[role], "joined")
            wait_for(events["listener"], "member_verified")
            time.sleep(2.0 + opts.seconds)  # settle, then measure: a fixed span, not a sync
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    sent = [e["sent"] for e in events["speaker"] if "sent" in e]
    heard = [e["heard"] for e in events["listener"] if "heard" in e]
    # Two seconds after the listener verified the speaker (the speaker's voice flows from
    # about then; the listener joined earlier): the buffer's start-up is not measured.
    verified = [e["member_verified"] for e in events["listener"] if "member_verified" in e]
    start = verified[0] + 2.0
    latencies = []
    timeline = []  # (seconds since the start of the measurement, latency ms)
    for h in heard:
        before = [s for s in sent if s <= h]
        if before and before[-1] >= start:
            latencies.append((h - before[-1]) * 1000)
            timeline.append((before[-1] - start, latencies[-1]))
    if len(latencies) < 10:
        raise SystemExit(f"too few clicks came through: {len(latencies)} of {len(sent)}")
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * len(latencies)))]
    print(
        f"mouth-to-ear software latency on loopback, {opts.frame_ms} ms frames, "
        f"{len(latencies)} clicks ({len(sent)} sent)"
    )
    print(
        f"p50 {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms, "
        f"min {latencies[0]:.1f} ms, max {latencies[-1]:.1f} ms"
    )
    if opts.verbose:
        print("clicks (s into the measurement: ms):")
        print("  " + ", ".join(f"{t:.1f}: {ms:.1f}" for t, ms in timeline))
        print("listener's buffer (s into the measurement: received, dropped, delay ms):")
        print(
            "  "
            + ", ".join(
                f"{e['stats'] - start:.1f}: {e['received']:g}, {e['dropped']:g}, {e['delay_ms']:g}"
                for e in events["listener"]
                if "stats" in e and e["stats"] < start + 5
            )
        )
    # The listener's jitter buffer at the end: loss or concealment would show here.
    stats = [e for e in events["listener"] if "stats" in e]
    if stats:
        last = stats[-1]
        keys = ("received", "played", "lost", "late", "dropped", "target_frames", "delay_ms")
        print("listener's buffer at the end: " + ", ".join(f"{k} {last[k]:g}" for k in keys))


if __name__ == "__main__":
    main()
