"""A real Chromium joins from the page (served by ``bangor serve --web``) and talks,
listens, verifies and chats with CLI members, end to end encrypted.

Playwright drives Debian's /usr/bin/chromium (full Chromium in new headless mode: the
headless shell refuses getUserMedia); it never downloads a browser. The fake microphone
plays a WAV file, so what the CLI records can be compared with what the browser "said".
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cryptography.x509
import numpy as np
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.audiocheck import (
    align,
    envelope_correlation,
    make_speech_wav,
    pesq_wb,
    read_wav_48k,
)
from tests.integration.conftest import (
    PASSWORD,
    START_TIMEOUT,
    Client,
    LineReader,
    ServerProcess,
    free_port,
    stop_server,
)
from tests.integration.test_e2ee import TAP_SERVER, read_tap
from tests.integration.test_rooms import room
from tests.server.test_webcert import write_pem

pytestmark = [pytest.mark.integration, pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
SR = 48_000
SPEECH = (
    "The quick brown fox jumps over the lazy dog. A friend joins from the browser, "
    "and the server never hears a word."
)
# Silence before the speech: the browser joins and exchanges keys with bob meanwhile
# (frames sealed before bob has the key are held, then released in a burst: not speech
# a listener hears as spoken).
LEAD_S = 4.0
TONE_HZ = 440
HANGOVER_FRAMES = 15  # the page's voice gate: 300 ms (web/src/media/gate.ts)
TONE_FRAMES = 100  # of the CLI member's 20 ms frames the browser must receive
POLL_MS = 50
AUTOPLAY = "--autoplay-policy=no-user-gesture-required"
EVIL_CHAT = "<img src=x onerror=\"document.title='owned'\"> & <b>bold</b>"
# A right-to-left override would draw the rest of the line backwards ("alice: ...").
BIDI_CHAT = "pay \u202eeve\u202c now"


def chromium_args(capture: Path, *more: str) -> list[str]:
    return [
        *more,
        "--headless=new",
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        # %noloop: the file plays once, then the fake microphone is silent.
        f"--use-file-for-fake-audio-capture={capture}%noloop",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]


def start_web_server(tmp_path: Path, *args: str) -> tuple[ServerProcess, int, Path]:
    """``bangor serve --web`` with every byte it handles recorded (tests/integration/
    tap_server.py): (the server, the page's port, the tap file). ``args``: more options."""
    port = free_port()
    web = free_port()
    while web == port:
        web = free_port()
    data_dir = tmp_path / "server"
    tap = tmp_path / "server.tap"
    proc = subprocess.Popen(
        [
            *(sys.executable, TAP_SERVER, str(tap), "serve", "--host", "127.0.0.1"),
            *("--port", str(port), "--data-dir", str(data_dir), "--web", f"127.0.0.1:{web}"),
            *args,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = ServerProcess(
        "127.0.0.1", port, data_dir, proc, LineReader(proc.stderr), tmp_path / "homes"
    )
    try:
        server.stderr.wait_for(lambda line: "web client at" in line)
    except BaseException:
        stop_server(server)
        raise
    return server, web, tap


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, int, Path]]:
    server, web, tap = start_web_server(tmp_path)
    yield server, web, tap
    stop_server(server)
    assert not any("Traceback" in line for line in server.stderr.rest(timeout=5))


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    """launch(capture_wav, *more_flags, autoplay=True) -> a fresh browser context (new
    profile each time); autoplay False: sound may start only as for a user."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    contexts: list[Any] = []
    with sync_api.sync_playwright() as playwright:

        def start(capture: Path, *args: str, autoplay: bool = True) -> Any:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / f"profile{len(contexts)}"),
                executable_path=str(CHROMIUM),
                headless=False,  # --headless=new below: full Chromium, not the shell
                args=[*chromium_args(capture, *args), *([AUTOPLAY] if autoplay else [])],
                # Playwright lets sound start without a gesture by default.
                ignore_default_args=[] if autoplay else [AUTOPLAY],
            )
            contexts.append(context)
            return context

        yield start
        for context in contexts:
            context.close()


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


def event_where(client: Client, kind: str, **fields: str) -> dict[str, Any]:
    """The first ``kind`` event whose fields (or its member's) have these values."""

    def matches(line: str) -> bool:
        if not line.startswith("{"):
            return False
        event = json.loads(line)
        where = {**event, **(event.get("member") or {})}
        return bool(event["event"] == kind and all(where.get(k) == v for k, v in fields.items()))

    result: dict[str, Any] = json.loads(client.stdout.wait_for(matches))
    return result


def state(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.bangor.state()")
    return result


def wait_state(
    page: Any, condition: Callable[[dict[str, Any]], bool], timeout: float = START_TIMEOUT
) -> dict[str, Any]:
    """Poll the page's state until ``condition`` holds; then the state. (Playwright's
    wait_for_function evaluates strings, which the page's CSP rightly forbids.)"""
    deadline = time.monotonic() + timeout
    while True:
        current = state(page)
        if condition(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; state: {current}")
        page.wait_for_timeout(POLL_MS)


def test_page_loads_and_the_form_is_keyboard_usable(
    web_server: tuple[ServerProcess, int, Path], launch: Any, tmp_path: Path
) -> None:
    _, web, _ = web_server
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(SR))
    page = launch(silence).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    config = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{web}/config.json").read())
    assert config["accounts"] is True and config["webtransport"]["port"] == web

    page.goto(f"http://127.0.0.1:{web}/?name=Caf%C3%A9%20Ana&user=ana#bangor:abc")
    page.wait_for_selector("#join:not([hidden])")
    assert page.input_value("#name") == "Café Ana"
    assert page.input_value("#user") == "ana"
    assert page.input_value("#invite") == "bangor:abc"
    assert page.is_visible("#password")  # the server has accounts
    # Focus starts on the first empty field; Tab goes on to the button; Enter submits.
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "join-button"
    page.keyboard.press("Shift+Tab")
    page.keyboard.type("pw")
    page.keyboard.press("Enter")
    page.wait_for_selector("#join-error:not([hidden])")
    assert "invite" in (page.text_content("#join-error") or "").lower()
    assert page.get_attribute("#join-error", "role") == "alert"
    assert page.get_attribute("#state", "aria-live") == "polite"
    # Every input has a label a screen reader reads.
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input')]"
        ".filter(i => !i.labels || !i.labels.length).map(i => i.id)"
    )
    assert unlabelled == []
    # Phone width: nothing wider than the screen.
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360

    # The audio path alone: capture worklet -> Opus -> decode (and conceal) -> playback.
    page.goto(f"http://127.0.0.1:{web}/?selftest=audio")
    result = page.evaluate("window.bangor.selftest(50, false)")
    assert result["captured"] >= 50 and result["encoded"] >= 50
    assert result["decoded"] == 50 and result["concealed"] >= 4
    assert errors == []


def speech_file(path: Path) -> tuple[np.ndarray, Path]:
    """The browser's microphone: LEAD_S of silence, then espeak speech; (speech, file)."""
    raw = path.with_name("espeak.wav")
    make_speech_wav(raw, SPEECH)
    speech = read_wav_48k(raw)
    write_wav(path, np.concatenate([np.zeros(int(LEAD_S * SR)), speech, np.zeros(SR // 2)]))
    return read_wav_48k(path)[int(LEAD_S * SR) : int(LEAD_S * SR) + len(speech)], path


def test_browser_talks_listens_verifies_and_chats(
    web_server: tuple[ServerProcess, int, Path], launch: Any, tmp_path: Path
) -> None:
    server, web, tap = web_server
    for user in ("alice", "bob", "web"):
        server.add_user(user)
    invite = server.create_room("alice")
    reference, capture = speech_file(tmp_path / "mic.wav")
    recording = tmp_path / "bob.wav"

    bob = server.join(invite, "bob", "--input", "silence", "--output", str(recording), stdin="")
    bob.event("joined")

    page = launch(capture).new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{web}/?name=Webby&user=web&processing=off#{invite}")
    page.wait_for_selector("#join:not([hidden])")
    page.focus("#password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    s = wait_state(page, lambda s: s["joined"] and s["verified"].get("bob") is True)
    assert s["members"] == ["bob"] and s["you"]["user"] == "web"
    assert s["captured_frames"] < (LEAD_S - 0.5) / 0.02, "joined too slowly for the speech"

    # Verified both ways, with the same safety number on both screens.
    seen = event_where(bob, "member_verified", nick="Webby")
    assert seen["safety_number"] == s["safety_numbers"]["bob"]

    # The speech goes out while the browser's fake microphone plays it.
    speech_frames = int((LEAD_S + len(reference) / SR) / 0.02) + 25
    s = wait_state(page, lambda s: s["captured_frames"] >= speech_frames, timeout=30)
    # The page's voice gate sent the speech whole (every frame within 40 dB of the
    # loudest, and its hang-over), and nothing of the silence before and after it.
    size = SR // 50
    levels = [
        float(np.sqrt(np.mean(np.square(reference[i : i + size])))) + 1e-9
        for i in range(0, len(reference) - size + 1, size)
    ]
    audible = sum(20 * np.log10(x / max(levels)) > -40 for x in levels)
    print(
        f"voice gate: sent {s['sent_frames']} of {s['captured_frames']} captured frames "
        f"({s['suppressed_frames']} ticks held back); the speech is {len(levels)} frames, "
        f"{audible} of them audible"
    )
    assert s["vad"] is True
    assert s["sent_frames"] >= audible
    assert s["sent_frames"] <= len(levels) + HANGOVER_FRAMES + 5
    assert s["sent_frames"] < s["captured_frames"] - (LEAD_S - 1) / 0.02

    # alice joins with a tone and a chat line with markup in it.
    alice = server.join(
        invite,
        "alice",
        *("--input", f"tone:{TONE_HZ}", "--output", "null", "--duration", "4"),
        stdin=f"hello from alice\n{EVIL_CHAT}\n{BIDI_CHAT}\n",
    )
    s = wait_state(
        page,
        lambda s: (
            s["verified"].get("alice") is True
            and s["received_frames"] >= TONE_FRAMES
            and len([c for c in s["chat"] if c["from"] == "alice"]) >= 3
        ),
        timeout=15,
    )
    # Every packet fitted a WebTransport datagram, and every one that came opened.
    assert s["oversize"] == 0 and s["dropped"] == 0 and s["max_datagram_size"] >= 1200
    alice_verified = event_where(alice, "member_verified", nick="Webby")
    assert alice_verified["safety_number"] == s["safety_numbers"]["alice"]
    assert [c["text"] for c in s["chat"] if c["from"] == "alice"] == [
        "hello from alice",
        EVIL_CHAT,
        BIDI_CHAT,
    ]
    # Remote text is text: the markup shows as typed and nothing ran; a bidi control
    # shows as an escape (as on a terminal), not as a reordering.
    shown = page.text_content("#chat-log") or ""
    assert EVIL_CHAT in shown
    assert "pay \\u202eeve\\u202c now" in shown and "\u202e" not in shown
    assert page.locator("#chat-log img, #chat-log b").count() == 0
    assert page.title() == "Bangor"
    # The call fits a phone: members, safety numbers, sliders and chat, no sideways scroll.
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.locator("#members .speaking").count() == 1  # alice's tone; bob is silent

    # The browser's chat line, typed in the page, reaches both CLI members.
    page.focus("#chat-input")
    page.keyboard.type("hello from the browser")
    page.keyboard.press("Enter")
    for member in (bob, alice):
        chat = event_where(member, "chat", text="hello from the browser")
        assert (chat["nick"], chat["user"]) == ("Webby", "web")
    assert alice.wait() == 0

    sent_opus = [bytes.fromhex(h) for h in page.evaluate("window.bangor.sentOpus()")]
    identity = bytes.fromhex(s["identity"])

    # The browser leaves; bob sees it go, then hangs up and keeps his recording.
    page.click("#leave")
    event_where(bob, "member_left", user="web")
    bob.proc.send_signal(signal.SIGINT)
    assert bob.wait() == 0
    recorded = read_wav_48k(recording)

    _, aligned = align(reference, recorded)
    corr = envelope_correlation(reference, aligned, max_shift_ms=40)
    score = pesq_wb(reference, aligned)
    web_id = str(int(s["you"]["id"], 16))  # the page shows it in hex
    heard = [e["senders"][web_id] for e in bob.events() if web_id in e.get("senders", {})]
    print(
        f"browser -> CLI: PESQ-WB {score:.2f}, envelope correlation {corr:.3f}, "
        f"as bob heard it {heard[-1] if heard else None}; "
        f"CLI -> browser: {s['received_frames']} frames"
    )
    assert corr > 0.9, f"envelope correlation {corr:.3f}"
    assert score >= 3.0, f"PESQ-WB {score:.2f}"
    assert page_errors == []

    # The server saw none of it: no chat text, no Opus the browser made, not even its
    # identity key, in anything it handled (control messages after Noise, media after
    # the hop layer, in both directions).
    stop_server(server)
    records = read_tap(tap)
    everything = b"".join(b"".join(r) for r in records.values())
    assert any(b"web" in m for m in records[b"C"])  # the tap saw the browser's login
    assert len(records[b"U"]) > s["sent_frames"]  # and its voice, among the others'
    for text in ("hello from the browser", "hello from alice", "onerror"):
        assert text.encode() not in everything
    # 12-byte pieces of each packet (not its padding: a run of zeros is found anywhere).
    pieces = [x for p in sent_opus for x in (p[4:16], p[-12:]) if len(set(x)) >= 6]
    assert len(pieces) > 200
    assert not [x for x in pieces if x in everything]
    assert identity not in everything
    final = state(page)
    assert final["joined"] is False and final["errors"] == [], final["errors"]


def test_browser_in_a_room_its_owner_rotates_then_kicks(
    web_server: tuple[ServerProcess, int, Path], launch: Any, tmp_path: Path
) -> None:
    """The browser joins a room the CLI made (it shows the join token), keeps its place
    and takes the new invite when the owner rotates the room, then leaves when kicked."""
    server, web, _ = web_server
    for user in ("alice", "bob", "dave", "web"):
        server.add_user(user)
    invite = server.create_room("alice")
    bob = server.join(invite, "bob", "--input", "silence", "--output", "null", stdin="")
    bob.event("joined")
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(SR))
    page = launch(silence).new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{web}/?name=Webby&user=web#{invite}")
    page.wait_for_selector("#join:not([hidden])")
    page.focus("#password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    s = wait_state(page, lambda s: s["joined"] and s["verified"].get("bob") is True)
    assert s["invite"] == invite

    # The owner rotates while the browser and bob are in the call: both stay, both
    # take the new invite; the page's link now carries it (a reload rejoins).
    code, rotated, err = room(server, "alice", "rotate", "friends")
    assert code == 0, err
    assert rotated != invite
    s = wait_state(page, lambda s: s["invite"] == rotated and s["members"] == ["bob"], timeout=15)
    assert bob.event("invite_changed")["invite"] == rotated
    assert s["joined"] and s["members"] == ["bob"] and s["errors"] == [], s["errors"]
    assert page.url.endswith("#" + rotated)
    # The browser's pair handshakes use the new secret: a newcomer with it verifies.
    dave = server.join(rotated, "dave", "--input", "silence", "--output", "null", stdin="")
    wait_state(page, lambda s: s["verified"].get("dave") is True, timeout=15)
    event_where(dave, "member_verified", nick="Webby")

    # Kicked: the page shows the server's reason and does not come back.
    code, _, err = room(server, "alice", "kick", "friends", "web")
    assert code == 0, err
    s = wait_state(page, lambda s: s["state"] == "left", timeout=15)
    page.wait_for_selector("#join:not([hidden])")
    assert "removed from the room by its owner" in page.inner_text("#state")
    assert page.get_attribute("#state", "data-kind") == "error"
    event_where(bob, "member_left", user="web")
    assert page_errors == []
    for member in (bob, dave):
        member.proc.send_signal(signal.SIGINT)
        assert member.wait() == 0


def test_https_page_with_an_operator_certificate_and_autojoin(launch: Any, tmp_path: Path) -> None:
    """The page over HTTPS with the operator's certificate (no certificate hashes: the
    browser checks it the normal way), on an open server, joining from the link alone."""
    cert_file, key_file = write_pem(tmp_path)
    spki = cryptography.x509.load_pem_x509_certificate(cert_file.read_bytes()).public_key()
    der = spki.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    # The test certificate is trusted by its key's hash, for this browser only; QUIC in
    # Chromium also wants a publicly trusted root, which developer mode lets go.
    trust = "--ignore-certificate-errors-spki-list=" + base64.b64encode(
        hashlib.sha256(der).digest()
    ).decode("ascii")
    server, web, _ = start_web_server(
        tmp_path, "--open", "--tls-cert", str(cert_file), "--tls-key", str(key_file)
    )
    try:
        invite = server.create_room("carol")
        carol = server.join(invite, "carol", "--input", "silence", "--output", "null", stdin="")
        carol.event("joined")
        silence = tmp_path / "silence.wav"
        write_wav(silence, np.zeros(SR))
        context = launch(silence, trust, "--webtransport-developer-mode", autoplay=False)
        page = context.new_page()
        page.goto(f"https://127.0.0.1:{web}/?name=Ana%20Web&autojoin=1#{invite}")
        s = wait_state(page, lambda s: s["joined"] and s["verified"].get("carol") is True)
        # No click, and yet sound runs: Chromium lets a page that captures the microphone
        # start audio (the page would otherwise ask for a click and wait for it).
        s = wait_state(page, lambda s: s["captured_frames"] > 10)
        assert s["you"]["nick"] == "Ana Web" and s["you"]["user"] == "Ana_Web"
        assert page.is_hidden("#account")  # no accounts: no user or password fields
        seen = event_where(carol, "member_verified", nick="Ana Web")
        assert seen["safety_number"] == s["safety_numbers"]["carol"]
        page_errors: list[str] = []
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        # Leave, then join again from the same page: a new session, verified afresh.
        page.click("#leave")
        event_where(carol, "member_left", nick="Ana Web")
        page.wait_for_selector("#join:not([hidden])")
        page.click("#join-button")
        again = wait_state(page, lambda s: s["joined"] and s["verified"].get("carol") is True)
        assert again["you"]["id"] != s["you"]["id"]
        assert again["identity"] == s["identity"]  # the device's key, from localStorage
        # A click after the call is over resumes nothing of the old one.
        page.click("body")
        page.close()  # closing the tab leaves the room
        event_where(carol, "member_left", nick="Ana Web")
        carol.proc.send_signal(signal.SIGINT)
        assert carol.wait() == 0
        # The server going away mid-call: the page says so and gives the form back.
        page = context.new_page()
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        page.goto(f"https://127.0.0.1:{web}/?name=Ana%20Web&autojoin=1#{invite}")
        wait_state(page, lambda s: s["joined"])
        stop_server(server)
        wait_state(page, lambda s: s["state"] == "left")
        page.wait_for_selector("#join:not([hidden])")
        assert page.get_attribute("#state", "data-kind") == "error"
        # The server's reason: its close waits for the page to read it (a QUIC close
        # straight after it overtook it, and the page said "Connection lost").
        shown = page.inner_text("#state")
        assert "shutting down" in shown, shown
        assert page.inner_text("#join-button") == "Join"
        assert page_errors == []
    finally:
        stop_server(server)
    assert not any("Traceback" in line for line in server.stderr.rest(timeout=5))
