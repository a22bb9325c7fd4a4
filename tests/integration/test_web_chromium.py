"""The WebTransport endpoint against a real browser (Debian's Chromium via Playwright):
the page's CSP lets it connect, the session gets ready with the self-made certificate's
hash, the control stream reaches the Noise responder, datagrams fit Chromium's limit, and
a second stream or a wrong path fail as PROTOCOL.md section 11 says. The whole client
(login, call, E2EE) is the app's test (test_web.py)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import BANGOR, LineReader, free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser]
CHROMIUM = "/usr/bin/chromium"

SESSION = """async (cfg) => {
  const out = {};
  const hashes = cfg.certificate_hashes.map(h => ({algorithm: "sha-256",
    value: new Uint8Array(h.match(/../g).map(x => parseInt(x, 16)))}));
  const url = (path) => `https://${location.hostname}:${cfg.webtransport.port}${path}`;
  const wt = new WebTransport(url(cfg.webtransport.path), {serverCertificateHashes: hashes});
  await wt.ready;
  out.maxDatagramSize = wt.datagrams.maxDatagramSize;
  const stream = await wt.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  const first = new Uint8Array(34);  // Noise XX message 1: length 32, then e
  first[1] = 32;
  crypto.getRandomValues(first.subarray(2));
  await writer.write(first);
  const {value} = await stream.readable.getReader().read();
  out.reply = Array.from(value.subarray(0, 2));
  out.replyLength = value.length;
  await wt.datagrams.writable.getWriter().write(new Uint8Array(40));  // garbage: dropped
  const second = await wt.createBidirectionalStream();
  await second.writable.getWriter().write(new Uint8Array([1, 2, 3]));
  out.closed = await wt.closed.then(() => "closed", (e) => String(e));
  const wrong = new WebTransport(url("/nope"), {serverCertificateHashes: hashes});
  out.wrongPath = await wrong.ready.then(() => "ready", (e) => String(e));
  return out;
}"""


def test_chromium_opens_a_session_and_the_control_stream(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no {CHROMIUM} (apt install chromium)")
    web = free_port()
    proc = subprocess.Popen(
        [BANGOR, "serve", "--host", "127.0.0.1", "--port", str(free_port()),
         "--data-dir", str(tmp_path / "data"), "--web", f"127.0.0.1:{web}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stderr = LineReader(proc.stderr)
    try:
        stderr.wait_for(lambda line: "web client at" in line)
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/config.json", timeout=5) as answer:
            config = json.load(answer)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page()
                assert page.goto(f"http://127.0.0.1:{web}/").status == 200
                out = page.evaluate(SESSION, config)
                isolated = page.evaluate("crossOriginIsolated")
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert out["maxDatagramSize"] >= 1200
    assert out["reply"] == [0, out["replyLength"] - 2]  # Noise message 2, length-framed
    assert out["replyLength"] > 64
    assert out["closed"] == "closed"  # the second stream ended the session cleanly
    assert "WebTransportError" in out["wrongPath"]
    assert isolated is True  # COOP + COEP: SharedArrayBuffer is there for the app
    lines = stderr.seen + stderr.rest(timeout=5)
    assert not any("Traceback" in line for line in lines)
