"""Mouth-to-ear software latency on loopback from a browser to a CLI listener.

Like ``bench/latency.py``, with a real Chromium as the speaker: ``bangor serve --web``
on 127.0.0.1, Debian's Chromium (Playwright, new headless) on the page with a fake
microphone that plays a 2 ms click every 0.5 s, and ``bench/latency.py``'s instrumented
listener (the real client with a sink that notes when each click comes out).

The browser side is timed from outside the page: a script Playwright adds before the
page loads wraps the capture AudioWorklet's messages and notes, for each frame with a
click, when the click's first sample was captured (the frame's arrival on the main
thread, less the samples after the click). That covers the page's whole path: capture
worklet -> WebCodecs Opus -> SFrame (WebCrypto) -> hop seal -> WebTransport datagram ->
the server's relay -> UDP -> the listener (hop open, E2EE open, jitter buffer, decode,
mix). Browser times are wall-clock (performance.timeOrigin + now); the listener's are
CLOCK_MONOTONIC, converted with this process's offset between the two. What sound cards
add (their periods and buffers) is not in the figure, as in latency.py; the fake device
delivers the file in real time.

Run::

    .venv/bin/python bench/web_latency.py [--seconds 20] [-v]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from latency import BANGOR, CLICK_EVERY_MS, CLICK_SAMPLES, PASSWORD, lines_of, run, wait_for
from procfs import HOST, free_port

CHROMIUM = "/usr/bin/chromium"
LEAD_S = 3.0  # silence before the first click: the page joins meanwhile
CLICK_LEVEL = 3000 / 32768  # what counts as the click in the browser (as THRESHOLD)

# Runs in the page before its own scripts: notes when each click was captured.
WATCH_CAPTURE = f"""
(() => {{
  const Original = window.AudioWorkletNode;
  window.__clicks = [];
  window.AudioWorkletNode = class extends Original {{
    constructor(context, name, options) {{
      super(context, name, options);
      if (name !== "bangor-capture") return;
      let loud = false;
      this.port.addEventListener("message", (e) => {{
        const now = performance.timeOrigin + performance.now();
        const pcm = e.data;
        const at = pcm.findIndex((v) => Math.abs(v) > {CLICK_LEVEL});
        if (at >= 0 && !loud) window.__clicks.push(now - ((pcm.length - at) * 1000) / 48000);
        loud = at >= 0;
      }});
    }}
  }};
}})();
"""


def click_file(path: Path, seconds: float) -> None:
    """LEAD_S of silence, then a 2 ms 1 kHz click every CLICK_EVERY_MS."""
    total = int((LEAD_S + seconds) * 48000)
    pcm = np.zeros(total, np.int16)
    t = np.arange(CLICK_SAMPLES) / 48000
    click = (20000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    every = 48000 * CLICK_EVERY_MS // 1000
    for start in range(int(LEAD_S * 48000), total - CLICK_SAMPLES, every):
        pcm[start : start + CLICK_SAMPLES] = click
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(pcm.tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every click")
    opts = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        port, web = free_port(), free_port()
        server = subprocess.Popen(
            [
                *(BANGOR, "serve", "--host", HOST, "--port", str(port)),
                *("--data-dir", str(tmp / "srv"), "--web", f"{HOST}:{web}"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        procs: list[subprocess.Popen[str]] = [server]
        try:
            assert server.stderr is not None
            for line in server.stderr:
                if "web client at" in line:
                    break
            for user in ("speaker", "listener"):
                run([BANGOR, "user", "add", user, "--data-dir", str(tmp / "srv")], stdin=PASSWORD)
            env = dict(os.environ, BANGOR_HOME=str(tmp / "listener"), BANGOR_PASSWORD=PASSWORD)
            create = ["room", "create", "bench", "--server", f"{HOST}:{port}", "--user", "listener"]
            invite = run([BANGOR, *create], env=env).strip()
            listener_events: list[dict[str, float]] = []
            listener = subprocess.Popen(
                [
                    *(sys.executable, str(Path(__file__).with_name("latency.py")), "--child"),
                    *("listener", "--invite", invite, "--user", "listener"),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            procs.append(listener)
            lines_of(listener, listener_events)
            wait_for(listener_events, "joined")
            clicks = tmp / "clicks.wav"
            click_file(clicks, opts.seconds + 4)
            with sync_playwright() as playwright:
                context = playwright.chromium.launch_persistent_context(
                    str(tmp / "profile"),
                    executable_path=CHROMIUM,
                    headless=False,
                    args=[
                        "--headless=new",
                        "--no-sandbox",
                        "--use-fake-ui-for-media-stream",
                        "--use-fake-device-for-media-stream",
                        f"--use-file-for-fake-audio-capture={clicks}%noloop",
                        "--no-first-run",
                    ],
                )
                page = context.new_page()
                page.add_init_script(WATCH_CAPTURE)
                # No voice gate, as latency.py's speaker: every click spurt would stand
                # alone, and the gaps between them are a listener effect (bench/README.md).
                page.goto(
                    f"http://{HOST}:{web}/?name=speaker&user=speaker&processing=off&vad=off#{invite}"
                )
                page.fill("#password", PASSWORD)
                page.press("#password", "Enter")
                wait_for(listener_events, "member_verified")
                time.sleep(LEAD_S + 2.0 + opts.seconds)  # a fixed span, not a sync
                browser_clicks = page.evaluate("window.__clicks")
                state = page.evaluate("window.bangor.state()")
                context.close()
            offset = time.time() - time.monotonic()  # wall clock minus monotonic, now
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    sent = [ms / 1000 - offset for ms in browser_clicks]
    heard = [e["heard"] for e in listener_events if "heard" in e]
    verified = [e["member_verified"] for e in listener_events if "member_verified" in e]
    start = verified[0] + 2.0
    latencies = []
    for h in heard:
        before = [s for s in sent if s <= h]
        if before and before[-1] >= start and h - before[-1] < CLICK_EVERY_MS / 1000:
            latencies.append((h - before[-1]) * 1000)
    if len(latencies) < 10:
        raise SystemExit(f"too few clicks came through: {len(latencies)} of {len(sent)}")
    if opts.verbose:
        print("clicks (ms): " + ", ".join(f"{ms:.1f}" for ms in latencies))
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * len(latencies)))]
    print(
        f"browser -> CLI mouth-to-ear software latency on loopback, 20 ms frames, "
        f"{len(latencies)} clicks ({len(sent)} captured in the browser)"
    )
    print(
        f"p50 {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms, "
        f"min {latencies[0]:.1f} ms, max {latencies[-1]:.1f} ms"
    )
    stats = [e for e in listener_events if "stats" in e]
    if stats:
        last = stats[-1]
        keys = ("received", "played", "lost", "late", "dropped", "target_frames", "delay_ms")
        print("listener's buffer at the end: " + ", ".join(f"{k} {last[k]:g}" for k in keys))
    print(f"browser: sent {state['sent_frames']} frames, oversize {state['oversize']}")


if __name__ == "__main__":
    main()
