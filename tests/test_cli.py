"""The `bangor` command's own rules: usage errors, help, prompts, what it says on stderr
(issue 17's first-hour findings). Real processes where what matters is what a person
sees: a server's first lines, `python3 -m bangor`, a mistyped --data-dir."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bangor import cli
from bangor.cli import build_parser, main
from bangor.client.app import Login
from bangor.errors import AuthError, ExitCode
from bangor.server.store import DB_FILE_NAME
from bangor.settings import MAX_NAME, MAX_ROOM_NAME, PASSWORD_PROMPT_TRIES
from bangor.wire.invite import Invite
from tests.integration.conftest import (
    PASSWORD,
    ServerProcess,
    client_env,
    run_bangor,
    start_server,
    stop_server,
)

INVITE = Invite("127.0.0.1", 7600, bytes(8), bytes(16), bytes(16)).encode()


@pytest.fixture
def no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as connecting."""

    def connecting(*args: object, **kwargs: object) -> None:
        raise AssertionError("connected, but the command line should have been refused")

    monkeypatch.setattr("bangor.client.app.join_call", connecting)
    monkeypatch.setattr("bangor.client.app.create_room", connecting)
    monkeypatch.setattr("bangor.client.host.host_call", connecting)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv``, expect exit 2 from argparse, return stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# --- finding 11: durations, recordings, extra arguments ---------------------------------


@pytest.mark.parametrize("value", ["-5", "0", "-0", "nan", "inf", "-inf", "soon"])
@pytest.mark.parametrize("command", [["join", INVITE], ["host"]])
@pytest.mark.usefixtures("no_connection")
def test_a_duration_that_would_leave_at_once_is_a_usage_error(
    command: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error([*command, "--duration", value], capsys)
    assert f"usage: bangor {command[0]}" in err and "argument --duration" in err


def test_a_positive_duration_is_taken() -> None:
    assert build_parser().parse_args(["join", INVITE, "--duration", "0.5"]).duration == 0.5


@pytest.mark.parametrize("name", ["call.wav", "call", "call.opus.wav", "call.mp3"])
@pytest.mark.usefixtures("no_connection")
def test_a_recording_named_as_something_else_than_ogg_opus_is_refused(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(["join", INVITE, "--record", name], capsys)
    assert "usage: bangor join" in err and "ending in .opus or .ogg" in err


@pytest.mark.parametrize("name", ["call.opus", "CALL.OGG", "dir.x/call.ogg"])
def test_ogg_opus_names_are_taken(name: str) -> None:
    assert build_parser().parse_args(["join", INVITE, "--record", name]).record == name


def test_user_list_with_an_extra_argument_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["user", "list", "extra", "--data-dir", str(tmp_path / "d")]) == ExitCode.USAGE
    assert "user list takes no NAME (got 'extra')" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before anything was made


# --- finding 12: an unknown option shows the usage of the command it was given to ------


@pytest.mark.parametrize(
    "argv",
    [["join", INVITE, "--bogus"], ["serve", "--bogus", "1"], ["user", "list", "--bogus"]],
)
def test_an_unknown_option_shows_the_subcommands_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(argv, capsys)
    assert err.startswith(f"usage: bangor {argv[0]} ")
    assert f"bangor {argv[0]}: error: unrecognized arguments: --bogus" in err


def test_an_unknown_top_level_option_shows_the_top_level_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = usage_error(["--bogus"], capsys)
    assert err.startswith("usage: bangor [-h]")
    assert "bangor: error: unrecognized arguments: --bogus" in err


# --- finding 14: every option and subcommand has a help text with its default -----------


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"subcommand {name} has no help"
                yield name, sub
                yield from _subparsers(sub)


def test_every_option_says_what_it_does_and_its_default() -> None:
    missing = []
    for name, sub in _subparsers(build_parser()):
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            text = action.help or ""
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not text:
                missing.append(f"{what}: no help")
            elif action.option_strings and "default" not in text:
                missing.append(f"{what}: no default in {text!r}")
    assert missing == []


def test_serve_help_shows_the_defaults() -> None:
    """As a person sees it: the real command's help."""
    result = run_bangor(["serve", "--help"])
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines anywhere
    assert "(default 0.0.0.0: every IPv4 address" in text
    assert "~/.local/share/bangor-server" in text and "--db URL database URL" in text


def test_host_and_user_help_say_what_they_do() -> None:
    host = " ".join(run_bangor(["host", "--help"]).stdout.split())
    assert "room name (default bangor)" in host
    assert "(default: $BANGOR_USER, else your login name)" in host
    user = run_bangor(["user", "--help"]).stdout
    for action in ("add NAME", "remove NAME", "passwd NAME", "list "):
        assert f"\n  {action}" in user


# --- finding 15: the password prompt asks again on a mismatch ---------------------------


class _Terminal:
    def isatty(self) -> bool:
        return True


def _typed(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    """A person at a terminal typing ``answers`` at the prompts; returns the prompts."""
    prompts: list[str] = []

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", getpass)
    return prompts


def test_a_mismatched_password_is_asked_for_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = _typed(monkeypatch, ["one", "two", "three", "four", "s3cret", "s3cret"])
    assert cli.read_secret("Password for bob: ", confirm=True) == "s3cret"
    assert prompts == ["Password for bob: ", "again: "] * 3
    assert capsys.readouterr().err.count("the two passwords differ; again") == 2


def test_three_mismatches_end_with_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _typed(monkeypatch, ["a", "b"] * PASSWORD_PROMPT_TRIES)
    code = main(["user", "add", "bob", "--data-dir", str(tmp_path)])
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"the two passwords differed {PASSWORD_PROMPT_TRIES} times; nothing was changed" in err
    assert not (tmp_path / DB_FILE_NAME).exists()


# --- finding 3: a failed login names the user it tried ----------------------------------


@pytest.mark.parametrize(
    ("argv", "env_user", "says"),
    [
        ([], None, "authentication failed for user 'mylogin' (no --user given: your login "
         "name was used): wrong user name or password"),
        ([], "envuser", "authentication failed for user 'envuser' (no --user given: "
         "BANGOR_USER was used): wrong user name or password"),
        (["--user", "bob"], None, "error: wrong user name or password"),
    ],
)  # fmt: skip
def test_a_failed_login_says_which_user_name_was_tried(
    argv: list[str],
    env_user: str | None,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def refused(*args: object, **kwargs: object) -> None:
        raise AuthError("wrong user name or password")

    monkeypatch.setattr("bangor.client.app.create_room", refused)
    monkeypatch.setattr("bangor.client.app.join_call", refused)
    monkeypatch.setattr("getpass.getuser", lambda: "mylogin")
    monkeypatch.setenv("BANGOR_PASSWORD", "x")
    if env_user:
        monkeypatch.setenv("BANGOR_USER", env_user)
    else:
        monkeypatch.delenv("BANGOR_USER", raising=False)
    for command in (["room", "create", "r", "--server", "h:1"], ["join", INVITE, "--headless"]):
        assert main([*command, *argv]) == ExitCode.AUTH
        assert says in capsys.readouterr().err


# --- finding 4: over-long names are usage errors before connecting ----------------------


@pytest.mark.usefixtures("no_connection")
def test_an_over_long_room_name_is_a_usage_error_naming_the_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It used to reach the server as the nickname: "Expected `str` of length <= 64 - at
    `$.nick`", exit 1."""
    argv = ["room", "create", "r" * 500, "--server", "h:1", "--user", "alice"]
    assert main(argv) == ExitCode.USAGE
    assert (
        capsys.readouterr().err == f"error: room name must be at most {MAX_ROOM_NAME} characters\n"
    )


@pytest.mark.parametrize(("option", "what"), [("--name", "nickname"), ("--user", "user name")])
@pytest.mark.usefixtures("no_connection")
def test_an_over_long_nickname_or_user_is_a_usage_error_naming_the_limit(
    option: str, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["join", INVITE, "--headless"], ["host", "--headless"]):
        assert main([*command, option, "x" * 500]) == ExitCode.USAGE
        assert f"{what} must be at most {MAX_NAME} characters" in capsys.readouterr().err


def test_room_create_sends_no_nickname(monkeypatch: pytest.MonkeyPatch) -> None:
    """`room`'s NAME is the room's, not a nickname for the login."""
    logins: list[tuple[Login, str]] = []

    async def create_room(host: str, port: int, login: Login, name: str, *rest: object) -> str:
        logins.append((login, name))
        return "bangor:0"

    monkeypatch.setattr("bangor.client.app.create_room", create_room)
    assert main(["room", "create", "friends", "--server", "[::1]:7611", "--user", "a"]) == 0
    [(login, name)] = logins
    assert name == "friends" and login.nick == "" and login.user == "a"


# --- finding 17: [IPv6]:PORT ------------------------------------------------------------


@pytest.mark.usefixtures("no_connection")
def test_an_unbracketed_ipv6_server_is_a_usage_error_saying_how_to_write_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["room", "create", "r", "--server", "::1:7611", "--user", "a"]) == ExitCode.USAGE
    assert "put an IPv6 address in brackets, [ADDRESS]:PORT" in capsys.readouterr().err


# --- findings 18, 2 and 17 as a person meets them: real processes -----------------------


def test_python_dash_m_bangor_is_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bangor", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("bangor ")


def test_user_add_says_when_it_makes_a_new_store(tmp_path: Path) -> None:
    typo = tmp_path / "bangor-dta"
    first = run_bangor(["user", "add", "alice", "--data-dir", str(typo)], stdin="pw\n")
    assert first.returncode == 0, first.stderr
    assert f"no accounts in {typo} yet: creating a new store there" in first.stderr
    second = run_bangor(["user", "add", "bob", "--data-dir", str(typo)], stdin="pw\n")
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""  # the store is there now: nothing to say


def _ipv6_loopback_port() -> int:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as tcp:
            tcp.bind(("::1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
                udp.bind(("::1", port))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    return port


@pytest.fixture
def ipv6_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path, host="::1", port=_ipv6_loopback_port())
    yield srv
    stop_server(srv)


def test_a_server_on_ipv6_says_where_it_is_and_is_reached_in_brackets(
    ipv6_server: ServerProcess,
) -> None:
    srv = ipv6_server
    lines = srv.stderr.seen
    assert f"bangor.server: listening on [::1]:{srv.port}" in lines
    assert f"bangor.server: data directory {srv.data_dir} (server key, accounts and rooms)" in (
        lines
    )
    srv.add_user("alice")
    env = client_env(srv.home / "alice")
    created = run_bangor(
        ["room", "create", "r", "--server", f"[::1]:{srv.port}", "--user", "alice"], env=env
    )
    assert created.returncode == 0, created.stderr
    assert f"first connection to [::1]:{srv.port}" in created.stderr
    # Without --user: the login name was tried, and the message says so.
    env["BANGOR_USER"] = "nosuchuser"
    refused = run_bangor(["room", "create", "r2", "--server", f"[::1]:{srv.port}"], env=env)
    assert refused.returncode == ExitCode.AUTH
    assert "authentication failed for user 'nosuchuser' (no --user given" in refused.stderr
    assert PASSWORD not in refused.stderr
