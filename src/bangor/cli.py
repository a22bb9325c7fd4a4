"""The `bangor` command: argument parsing and exit codes only; the work is elsewhere.

Exit codes (the command-line contract of DESIGN.md): 0 ok, 1 other error, 2 usage,
3 authentication failed, 4 invite or room invalid, 5 server unreachable; each error
class carries its own (``BangorError.exit_code``, ``bangor.errors.ExitCode``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import importlib.util
import ipaddress
import json
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bangor import __version__
from bangor.address import format_address, parse_address, parse_listen
from bangor.errors import AuthError, BangorError, ExitCode, UsageError
from bangor.settings import (
    DEFAULT_PORT,
    FRAME_MS_CHOICES,
    MAX_BITRATE,
    MAX_NAME,
    MAX_ROOM_NAME,
    MIN_BITRATE,
    PASSWORD_PROMPT_TRIES,
    ClientSettings,
    ServerSettings,
)
from bangor.text import check_name, escape
from bangor.wire.voice import MAX_REDUNDANT

if TYPE_CHECKING:
    from bangor.client.app import Login
    from bangor.server.web import WebOptions

    # Not subscriptable at run time; annotations only.
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

T = TypeVar("T")


def _run(coro_fn: Callable[[], Coroutine[Any, Any, T]], *, stop_on_signal: bool = False) -> T:
    """Run on uvloop when present; SIGINT/SIGTERM cancel the main task cleanly."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_with_signals(coro_fn))


async def _with_signals(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    restore = _cancel_on_signals(loop, task)
    try:
        return await coro_fn()
    finally:
        restore()


def _cancel_on_signals(
    loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]
) -> Callable[[], None]:
    """SIGINT and SIGTERM cancel ``task``; returns what undoes that.

    Windows' event loops have no add_signal_handler: there a plain handler (which runs
    in this, the loop's, thread) hands the cancel to the loop, whose self-pipe wakes it;
    Ctrl-Break (SIGBREAK) counts too.
    """
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return lambda: None  # closing the loop removes them
    except NotImplementedError:
        pass

    def handler(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(task.cancel)

    signals = [signal.SIGINT, signal.SIGTERM]
    if (brk := getattr(signal, "SIGBREAK", None)) is not None:
        signals.append(brk)
    previous = {sig: signal.signal(sig, handler) for sig in signals}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def default_data_dir() -> Path:
    if env := os.environ.get("BANGOR_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bangor-server"


def _store_url(args: argparse.Namespace) -> str:
    from bangor.server.store import database_url

    return database_url(Path(args.data_dir) if args.data_dir else default_data_dir(), args.db)


def read_secret(
    prompt: str, *, env: str | None = None, confirm: bool = False, stdin_ok: bool = True
) -> str:
    """A password from ``env``, else one stdin line (not a terminal), else a prompt."""
    if env and (value := os.environ.get(env)) is not None:
        return value
    if not sys.stdin.isatty():
        if not stdin_ok:
            raise BangorError(f"no terminal to ask for the password: set {env}")
        line = sys.stdin.readline()
        if not line:
            raise BangorError("expected the password on standard input")
        return line.rstrip("\r\n")
    for _try in range(PASSWORD_PROMPT_TRIES if confirm else 1):
        first = getpass.getpass(prompt)
        if not confirm or getpass.getpass("again: ") == first:
            return first
        print("the two passwords differ; again", file=sys.stderr)
    raise UsageError(
        f"the two passwords differed {PASSWORD_PROMPT_TRIES} times; nothing was changed"
    )


# --- commands ------------------------------------------------------------------------


class _EscapingFormatter(logging.Formatter):
    """Log lines quote what clients sent (names, reasons): never let it drive the terminal."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        # One line a record. Bangor logs no traceback; a library might (asyncpg's pool
        # while PostgreSQL is down): its exception's first line tells the operator enough.
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            first = (str(exc).strip().splitlines() or [""])[0]
            line += " " + escape(f"({type(exc).__name__}: {first})")
        return line


def _log_to_stderr(level: int, *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:  # serve --log-format json: for log collectors
        from bangor.jsonlog import JsonFormatter

        handler.setFormatter(JsonFormatter())
        logging.captureWarnings(True)  # a library's warning is a JSON line too
    else:
        handler.setFormatter(_EscapingFormatter("%(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("quic").setLevel(logging.WARNING)  # aioquic: a line per connection event


def cmd_serve(args: argparse.Namespace) -> int:
    from bangor.server.app import serve
    from bangor.server.config import DEFAULT, Setting, render, resolve

    # --config FILE, BANGOR_* variables and defaults under the flags given (config.py).
    effective = resolve(args, os.environ)
    if effective.options["data_dir"].value is None:
        effective.options["data_dir"] = Setting(str(default_data_dir()), DEFAULT)
    for dest, setting in effective.options.items():
        setattr(args, dest, setting.value)
    web = _web_options(args)
    advertise = _advertise(args, args.db)
    settings = dataclasses.replace(
        effective.settings(),
        open=args.open,
        cluster_heartbeat=args.heartbeat or ServerSettings.cluster_heartbeat,
        cluster_stale_after=args.stale_after or ServerSettings.cluster_stale_after,
    )
    if settings.cluster_stale_after <= 2 * settings.cluster_heartbeat:
        raise UsageError("--stale-after must be more than twice --heartbeat")
    metrics = _metrics_address(args, web)
    if args.print_config:  # checked as for serving, then shown; nothing is created
        sys.stdout.write(render(effective))
        return ExitCode.OK
    _log_to_stderr(logging.INFO, json_lines=args.log_format == "json")
    log = logging.getLogger("bangor.server")
    data_dir = Path(args.data_dir)
    url = _store_url(args)
    _log_store(data_dir, args.db, url)
    if args.open:
        log.warning(
            "open mode: no accounts; anyone who reaches this port can create rooms, and an "
            "invite code is enough to join one"
        )
    try:
        with contextlib.suppress(asyncio.CancelledError):
            _run(
                lambda: serve(
                    args.host, args.port, data_dir, url, settings, web, advertise, metrics=metrics
                )
            )
    except BangorError as exc:
        if args.log_format != "json":
            raise
        log.error("%s", exc)  # a collector reads JSON to the last line
        return exc.exit_code
    log.warning("stopped")
    return ExitCode.OK


def _log_store(data_dir: Path, db: str | None, url: str) -> None:
    """Say where the server keeps its key and accounts: a server on another data
    directory than ``bangor user`` was given has other accounts, and nothing else
    would tell."""
    from bangor.server.database import redact_url

    log = logging.getLogger("bangor.server")
    where = data_dir.absolute()
    if db is None:
        log.warning("data directory %s (server key, accounts and rooms)", where)
    else:
        log.warning(
            "data directory %s (server key); accounts and rooms in %s", where, redact_url(url)
        )


def _advertise(args: argparse.Namespace, url: str | None) -> str | None:
    """--cluster --advertise HOST:PORT: the address other nodes send clients to."""
    if not args.cluster:
        if args.advertise is not None:
            raise UsageError("--advertise is for --cluster")
        return None
    if url is None or not url.startswith(("postgresql", "postgres")):
        raise UsageError("--cluster needs a shared PostgreSQL database: --db postgresql://...")
    if args.advertise is None:
        raise UsageError("--cluster needs --advertise HOST:PORT (where clients reach this node)")
    try:
        host, port = parse_address(args.advertise)
    except ValueError:
        raise UsageError(f"--advertise wants HOST:PORT, got {args.advertise!r}") from None
    return format_address(host, port)


_METRICS_HOST = re.compile(r"^[A-Za-z0-9.-]+$")


def _metrics_address(args: argparse.Namespace, web: WebOptions | None) -> tuple[str, int] | None:
    """--metrics [HOST:]PORT: where to serve Prometheus metrics; PORT alone is on
    127.0.0.1 (metrics are for the operator, not the world), 0 any free port."""
    if args.metrics is None:
        return None
    if importlib.util.find_spec("prometheus_client") is None:  # looked for, not imported
        raise BangorError(
            "--metrics needs prometheus_client: pip install 'bangor[metrics]' "
            "(or pip install prometheus-client)"
        )
    try:
        host, port = parse_listen(args.metrics, "127.0.0.1")
    except ValueError:
        raise UsageError(f"--metrics {args.metrics}: expected [HOST:]PORT") from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _METRICS_HOST.match(host):
            raise UsageError(f"--metrics {args.metrics}: bad host {host!r}") from None
    taken = {args.port} | ({web.port} if web is not None else set())
    if port != 0 and port in taken:
        raise UsageError(f"--metrics {args.metrics}: port {port} is the server's own")
    return host, port


def _web_options(args: argparse.Namespace) -> WebOptions | None:
    """--web [HOST:]PORT and --tls-cert/--tls-key, checked before anything starts."""
    tls_cert = Path(args.tls_cert) if args.tls_cert else None
    tls_key = Path(args.tls_key) if args.tls_key else None
    if args.web is None:
        if tls_cert or tls_key:
            raise UsageError("--tls-cert and --tls-key need --web")
        return None
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    from bangor.server.web import WebOptions  # aioquic only when asked for
    from bangor.server.webpage import check_web_host

    try:
        host, port = parse_listen(args.web, args.host)  # PORT alone: on --host
    except ValueError:
        raise UsageError(f"--web {args.web}: expected [HOST:]PORT") from None
    check_web_host(host, tls_cert is not None)
    if tls_cert is not None and tls_key is not None:
        from bangor.server.webcert import check_operator_files

        check_operator_files(tls_cert, tls_key)
    return WebOptions(host, port, tls_cert, tls_key)


def cmd_user(args: argparse.Namespace) -> int:
    from bangor.server.admin import run_user_command

    if args.action != "list" and not args.name:
        raise UsageError(f"bangor user {args.action} needs a user NAME")
    if args.action == "list" and args.name:
        raise UsageError(f"bangor user list takes no NAME (got {args.name!r})")
    if args.db is None:
        _say_if_new_store(Path(args.data_dir) if args.data_dir else default_data_dir())
    return run_user_command(
        args.action,
        args.name,
        _store_url(args),
        lambda prompt: read_secret(prompt, confirm=True),
        sys.stdout,
    )


def _say_if_new_store(data_dir: Path) -> None:
    """A mistyped --data-dir makes a store of its own, whose accounts no server has:
    say so (stderr), naming the directory, before it is made."""
    from bangor.server.store import DB_FILE_NAME

    if not (data_dir / DB_FILE_NAME).exists():
        print(
            f"bangor: no accounts in {escape(str(data_dir.absolute()))} yet: "
            "creating a new store there (only a server with this --data-dir sees it)",
            file=sys.stderr,
        )


def _login_user(args: argparse.Namespace) -> str:
    return args.user or os.environ.get("BANGOR_USER") or getpass.getuser()


def _explain_auth(args: argparse.Namespace, exc: AuthError) -> AuthError:
    """A failed login that used a user name nobody typed: name it, and say where it came
    from, so "wrong user name or password" is not a riddle."""
    if args.user:
        return exc
    if os.environ.get("BANGOR_USER"):
        source = "no --user given: BANGOR_USER was used"
    else:
        source = "no --user given: your login name was used"
    return AuthError(f"authentication failed for user {_login_user(args)!r} ({source}): {exc}")


def _check_names(args: argparse.Namespace) -> None:
    """Refuse (exit 2) a user name or nickname the others' screens could not show safely,
    before anything connects; the server refuses such a nickname too."""
    check_name(_login_user(args), "user name", MAX_NAME)
    check_name(getattr(args, "name", None) or "", "nickname", MAX_NAME)


def _login(args: argparse.Namespace, *, stdin_ok: bool) -> Login:
    """BANGOR_PASSWORD if set; otherwise asked for only if the server wants one."""
    from bangor.client.app import Login

    user = _login_user(args)
    # `room`'s NAME is the room's: only `join` and `host` have a nickname.
    nick = (args.name or "") if args.command in ("join", "host") else ""
    return Login(
        user,
        os.environ.get("BANGOR_PASSWORD"),
        nick,
        ask_password=lambda: read_secret(
            f"password for {user}: ", env="BANGOR_PASSWORD", stdin_ok=stdin_ok
        ),
    )


ROOM_ACTIONS = ("create", "list", "invite", "rotate", "delete", "kick", "bans", "unban")
_MEMBER_ACTIONS = ("kick", "unban")


def cmd_room(args: argparse.Namespace) -> int:
    from bangor.client import manage
    from bangor.client.app import create_room, parse_server

    action = args.action
    if action == "list" and (args.name or args.member):
        raise UsageError("bangor room list takes no room NAME")
    if action == "list" and args.server is None:
        if args.data_dir is None and args.db is None:
            raise UsageError(
                "bangor room list needs --server HOST:PORT (your rooms) or --data-dir/--db "
                "(every room on a server you run)"
            )
        from bangor.server.admin import run_room_list

        return run_room_list(_store_url(args), sys.stdout)
    if args.server is None:
        raise UsageError(f"bangor room {action} needs --server HOST:PORT")
    if action != "list" and not args.name:
        raise UsageError(f"bangor room {action} needs the room's NAME")
    if action == "kick" and not args.member:
        raise UsageError("bangor room kick needs the room's NAME and a MEMBER (nick or account)")
    if action == "unban" and not args.member:
        raise UsageError("bangor room unban needs the room's NAME and the banned ACCOUNT")
    if action not in _MEMBER_ACTIONS and args.member:
        raise UsageError(f"bangor room {action} takes one NAME, not {args.member!r} as well")
    if args.ban and action != "kick":
        raise UsageError("--ban goes with bangor room kick")
    if args.max_bitrate is not None and action != "create":
        raise UsageError("--max-bitrate goes with bangor room create")
    try:
        host, port = parse_server(args.server, DEFAULT_PORT)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if action == "invite":  # this device's copy: no server needed
        print(manage.saved_invite(args.name, host, port))
        return ExitCode.OK
    check_name(_login_user(args), "user name", MAX_NAME)  # args.name is the room's here
    if args.name:
        check_name(args.name, "room name", MAX_ROOM_NAME)
    login = _login(args, stdin_ok=True)

    def warn(text: str) -> None:
        print(f"bangor: {escape(text)}", file=sys.stderr)

    try:
        if action == "create":
            print(_run(lambda: create_room(host, port, login, args.name, warn, args.max_bitrate)))
        elif action == "list":
            for line in _run(lambda: manage.list_rooms(host, port, login, warn)):
                print(line)
        elif action == "rotate":
            print(_run(lambda: manage.rotate(host, port, login, args.name, warn)))
        elif action == "kick":
            print(
                _run(lambda: manage.kick(host, port, login, args.name, args.member, args.ban, warn))
            )
        elif action == "bans":
            for line in _run(lambda: manage.bans(host, port, login, args.name, warn)):
                print(line)
        elif action == "unban":
            warn(_run(lambda: manage.unban(host, port, login, args.name, args.member, warn)))
        else:
            _run(lambda: manage.delete(host, port, login, args.name, warn))
            warn(f"deleted room {args.name}")
    except AuthError as exc:
        raise _explain_auth(args, exc) from None
    return ExitCode.OK


def wants_tui(args: argparse.Namespace, terminal: bool) -> bool:
    """The terminal UI for a person at a terminal; the headless client for scripts.

    ``terminal``: standard output is a terminal, and so is standard input (the UI reads
    keys there; a script that pipes chat lines in keeps the headless client).
    """
    return terminal and not args.headless and not args.json


def _at_terminal() -> bool:
    return sys.stdout.isatty() and sys.stdin.isatty()


def run_tui(args: argparse.Namespace | None, profile: str) -> int:
    """The terminal UI; ``args``: those of `bangor join INVITE`, None for plain `bangor`.

    ``profile``: the saved profile (server, user, devices) to start from and update.
    """
    from bangor.tui import BangorApp, Launch

    launch = Launch(password=os.environ.get("BANGOR_PASSWORD"), profile=profile)
    if args is not None:
        launch = Launch(
            profile=profile,
            invite=args.invite,
            user=args.user or os.environ.get("BANGOR_USER"),
            nick=args.name,
            password=launch.password,
            source=args.input,
            sink=args.output,
            settings=_client_settings(args),
            record_path=Path(args.record) if args.record else None,
            duration=args.duration,
            auto_join=True,
        )
    app = BangorApp(launch)
    app.run()
    return app.return_code or ExitCode.OK


def _emitter(args: argparse.Namespace) -> Callable[[Any], None]:
    from bangor.client import events as ev

    def emit(event: ev.Event) -> None:
        if args.json:
            print(json.dumps(event.to_json()), flush=True)
        elif isinstance(event, ev.ErrorEvent | ev.WarningEvent | ev.MemberRejected | ev.KeyChanged):
            print(ev.describe(event), file=sys.stderr, flush=True)
        elif not isinstance(event, ev.Stats):
            print(ev.describe(event), flush=True)

    return emit


def _discard_output() -> None:
    """Python's recipe for a reader that went away (``| head``): point stdout and stderr
    at devnull, so nothing more (not even the last flush at exit) fails or prints."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


class _Output:
    """Events to ``emit``; when the reader of our output goes away, the call ends (as
    SIGPIPE would end a C program) with exit 1 and no traceback."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit
        self.gone = False
        self.on_gone: Callable[[], object] = lambda: None

    def __call__(self, event: Any) -> None:
        if self.gone:
            return
        try:
            self.emit(event)
        except BrokenPipeError:
            self.gone = True
            _discard_output()
            self.on_gone()


def _seconds(text: str) -> float:
    """A number of seconds, 0 or more (argparse shows the message as a usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError("must be 0..86400 seconds")
    return value


def _duration(text: str) -> float:
    """--duration: a positive, finite number of seconds (0 or less would leave at once)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text!r}")
    return value


RECORDING_SUFFIXES = (".opus", ".ogg")


def _recording(text: str) -> str:
    """--record FILE: what we write is Ogg Opus, so the name must say so (a .wav that
    holds Opus fools players and people alike)."""
    if Path(text).suffix.lower() not in RECORDING_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"records are Ogg Opus: give a file name ending in .opus or .ogg, not {text!r}"
        )
    return text


def _from_sound_card(source: str | None) -> bool:
    """Whether we capture from a sound card that is there (without one the call goes
    on silent on our side: nothing to clean up)."""
    from bangor.errors import DeviceError
    from bangor.io.devices import is_generated_or_file, list_devices, select_device

    spec = source or "default"
    if is_generated_or_file(spec):
        return False
    try:
        select_device(list_devices(), spec, "input")
    except DeviceError:
        return False
    return True


def _processing(args: argparse.Namespace) -> tuple[bool, bool, bool]:
    """--noise-suppression, --echo-cancellation, --agc: as given, else on for a sound
    card whose library is installed (the ``capture`` extra), off for the rest. Asked
    for without its library: AudioError naming the package, before we connect."""
    from bangor.audio import deepfilter, webrtc_apm
    from bangor.errors import AudioError

    card = _from_sound_card(args.input)
    chosen: list[bool] = []
    for name, available, missing in (
        ("noise_suppression", deepfilter.available, deepfilter.DEEPFILTER_MISSING),
        ("echo_cancellation", webrtc_apm.available, webrtc_apm.LIVEKIT_MISSING),
        ("agc", lambda: True, ""),  # our own (audio/gain.py)
    ):
        given = getattr(args, name, None)
        if given == "on" and not available():
            raise AudioError(missing)
        chosen.append(given == "on" if given is not None else card and available())
    return chosen[0], chosen[1], chosen[2]


def _client_settings(args: argparse.Namespace) -> ClientSettings:
    noise_suppression, echo_cancellation, agc = _processing(args)
    return ClientSettings(
        noise_suppression=noise_suppression,
        echo_cancellation=echo_cancellation,
        agc=agc,
        vad=args.vad == "on",
        bitrate=args.bitrate,
        complexity=args.complexity,
        fec=args.fec == "on",
        max_redundancy=args.redundancy,
        push_to_talk=args.ptt,
        relay_only=args.relay_only,
        reconnect_for=args.reconnect_for,
        frame_ms=args.frame_ms,
    )


def _run_call(
    args: argparse.Namespace,
    call: Callable[[Callable[[Any], None]], Coroutine[Any, Any, None]],
) -> int:
    """Run a call that prints its events with the emitter it gets; with --json a fatal
    error is also an ``error`` event (after ``left``). Without --json it is said once, as
    ``error: ...`` on stderr (main), not also as ``left: ...``."""
    from bangor.client import events as ev

    output = _Output(_emitter(args))
    held: list[ev.Event] = []  # the human `left` line, until we know how the call ended

    def emit(event: ev.Event) -> None:
        if isinstance(event, ev.Left) and not args.json:
            held.append(event)
        else:
            output(event)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        output.on_gone = task.cancel  # like Ctrl-C: leave the room cleanly
        try:
            await call(emit)
        except BangorError as exc:
            held.clear()
            if args.json:
                output(ev.ErrorEvent(int(exc.exit_code), str(exc)))
            raise
        finally:
            for event in held:
                output(event)

    # Ctrl-C / SIGTERM cancel the call; join_call has left the room cleanly by then.
    with contextlib.suppress(asyncio.CancelledError):
        _run(main)
    return ExitCode.ERROR if output.gone else ExitCode.OK


async def _join(args: argparse.Namespace, invite: Any, emit: Callable[[Any], None]) -> None:
    from bangor.client.app import join_call

    try:
        await join_call(
            invite,
            _login(args, stdin_ok=False),
            emit,
            source_spec=args.input or "default",
            sink_spec=args.output or "default",
            record_path=Path(args.record) if args.record else None,
            duration=args.duration,
            settings=_client_settings(args),
        )
    except AuthError as exc:
        raise _explain_auth(args, exc) from None


def cmd_join(args: argparse.Namespace) -> int:
    from bangor.wire.invite import Invite

    invite = Invite.parse(args.invite)
    _check_names(args)
    if wants_tui(args, _at_terminal()):
        return run_tui(args, args.profile or args.top_profile)
    return _run_call(args, lambda emit: _join(args, invite, emit))


def cmd_host(args: argparse.Namespace) -> int:
    from bangor.client.host import host_call

    _check_names(args)
    _log_to_stderr(logging.WARNING)
    return _run_call(
        args,
        lambda emit: host_call(
            port=args.port,
            address=args.address,
            room_name=args.room,
            owner=_login_user(args),
            emit=emit,
            join=lambda invite: _join(args, invite, emit),
        ),
    )


def cmd_identity(args: argparse.Namespace) -> int:
    from bangor.client.identity import identity_path, load_identity
    from bangor.wire.identity import identity_fingerprint
    from bangor.wire.noise import public_key

    path = identity_path()
    public = public_key(load_identity())
    fp = identity_fingerprint(public)
    if args.json:
        info = {"fingerprint": fp, "public_key": public.hex(), "path": str(path.absolute())}
        print(json.dumps(info))
    else:
        print(fp)
    return ExitCode.OK


def cmd_devices(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from bangor.io.devices import NO_DEVICES, list_devices

    devices = list_devices()
    if not devices:
        raise BangorError(NO_DEVICES)
    for d in devices:
        if args.json:
            print(json.dumps(asdict(d)))
            continue
        defaults = [
            kind
            for kind, on in (("input", d.is_default_input), ("output", d.is_default_output))
            if on
        ]
        mark = f"  [default {' and '.join(defaults)}]" if defaults else ""
        print(
            f"{d.index:>3}  in {d.max_input_channels:>3}  out {d.max_output_channels:>3}  "
            f"{d.name} ({d.hostapi}){mark}"
        )
    return ExitCode.OK


def _int_in(low: int, high: int, unit: str) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (a usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high} {unit}".rstrip())
        return value

    return parse


def _choice_of(choices: tuple[int, ...], unit: str) -> Callable[[str], int]:
    """An argparse type: one of a few integers (a usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value not in choices:
            listed = ", ".join(str(c) for c in choices)
            raise argparse.ArgumentTypeError(f"must be one of {listed} {unit}, not {text!r}")
        return value

    return parse


PROFILE_HELP = "terminal UI: the saved profile to use (default: default)"
DATA_DIR_HELP = (
    "server data directory: the server key, and the SQLite accounts and rooms unless --db "
    "is given (default: $BANGOR_DATA_DIR, else $XDG_DATA_HOME/bangor-server, else "
    "~/.local/share/bangor-server)"
)
DB_HELP = (
    "database URL for accounts and rooms instead of the data directory's SQLite file, "
    "e.g. postgresql://user@host/dbname (default: none)"
)
USER_HELP = "account to log in as (default: $BANGOR_USER, else your login name)"
SERVER_HELP = f"the server: HOST, HOST:PORT or [IPv6]:PORT (default port {DEFAULT_PORT})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bangor", description="Secure, low-latency voice and text chat."
    )
    parser.add_argument("--version", action="version", version=f"bangor {__version__}")
    parser.add_argument(
        "--profile", dest="top_profile", default="default", metavar="NAME", help=PROFILE_HELP
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The help lists the subcommands in this order.
    for add in (
        _add_serve,
        _add_user,
        _add_room,
        _add_join,
        _add_host,
        _add_identity,
        _add_devices,
    ):
        add(sub)
    return parser


# --- the shared option groups ----------------------------------------------------------


def _store_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        help=DATA_DIR_HELP,
    )
    group.add_argument("--db", metavar="URL", help=DB_HELP)


def _join_options(p: argparse.ArgumentParser) -> None:
    """Everything `join` and `host` share, in the order the help lists it."""
    _who_options(p)
    _device_options(p)
    _voice_options(p)
    _call_options(p)


def _who_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", metavar="NAME", help=USER_HELP)
    p.add_argument(
        "--name",
        metavar="NICK",
        help=f"name shown to the others, at most {MAX_NAME} characters (default: the user name)",
    )


def _device_options(p: argparse.ArgumentParser) -> None:
    # No argparse default: the terminal UI falls back on the saved profile's devices.
    p.add_argument(
        "--input",
        metavar="SRC",
        help="default | DEVICE | tone[:HZ] | silence | FILE.wav (default: default)",
    )
    p.add_argument(
        "--output", metavar="SINK", help="default | DEVICE | null | FILE.wav (default: default)"
    )
    p.add_argument(
        "--duration",
        type=_duration,
        metavar="SECONDS",
        help="leave after this long, more than 0 (default: stay until Ctrl-C)",
    )


def _voice_options(p: argparse.ArgumentParser) -> None:
    """What we send: when, at what bitrate and effort, with what protection."""
    for flag, what in (
        ("--noise-suppression", "noise suppression (fans, keys, hiss)"),
        ("--echo-cancellation", "echo cancellation (what we play, out of the microphone)"),
        ("--agc", "automatic gain (one level for quiet and loud voices)"),
    ):
        p.add_argument(
            flag,
            choices=["on", "off"],
            default=None,
            help=f"{what} (default: on for a sound card, off for files, tones, silence)",
        )
    p.add_argument(
        "--vad",
        choices=["on", "off"],
        default="on",
        help="voice activity detection: send voice only while speaking (default on)",
    )
    p.add_argument(
        "--bitrate",
        type=_int_in(MIN_BITRATE, MAX_BITRATE, "bit/s"),
        default=ClientSettings.bitrate,
        metavar="BPS",
        help=f"Opus bitrate in bit/s (default {ClientSettings.bitrate}; the room may cap it)",
    )
    p.add_argument(
        "--complexity",
        type=_int_in(0, 10, ""),
        default=ClientSettings.complexity,
        metavar="0-10",
        help="Opus encoder effort: lower saves CPU on small machines (default "
        f"{ClientSettings.complexity})",
    )
    p.add_argument(
        "--fec",
        choices=["on", "off"],
        default="on",
        help="Opus in-band FEC while redundancy is off (default on)",
    )
    p.add_argument(
        "--redundancy",
        type=_int_in(0, MAX_REDUNDANT, "frames"),
        default=ClientSettings.max_redundancy,
        metavar="N",
        help="repeat up to N earlier frames in each packet while listeners report loss "
        f"(0 turns it off; default {ClientSettings.max_redundancy})",
    )
    p.add_argument(
        "--frame-ms",
        type=_choice_of(FRAME_MS_CHOICES, "ms"),
        default=ClientSettings.frame_ms,
        metavar="MS",
        help="Opus frame duration we send: 10 (least delay), 20 or 40 (least CPU and "
        f"packets; default {ClientSettings.frame_ms}); others may choose differently",
    )


def _call_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--record",
        type=_recording,
        metavar="FILE.opus",
        help="record the call (what you hear and what you say) as an Ogg Opus file, named "
        "*.opus or *.ogg (default: no recording)",
    )
    p.add_argument(
        "--ptt",
        action="store_true",
        help="push-to-talk: send voice only after /talk on (a line on stdin) until /talk off "
        "(default off)",
    )
    p.add_argument(
        "--relay-only",
        action="store_true",
        help="never talk to members directly: they do not learn your addresses, and all "
        "voice goes through the server (default: direct where possible)",
    )
    p.add_argument(
        "--reconnect-for",
        type=_seconds,
        default=ClientSettings.reconnect_for,
        metavar="SECONDS",
        help="if the server or the connection goes away, keep the call and reconnect for "
        "up to this long (default %(default)g; 0: end the call at once, exit 5)",
    )
    p.add_argument(
        "--headless",
        action="store_true",
        help="no terminal UI (the default when stdout is not a terminal)",
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON event per line on stdout (default: text)"
    )


# --- one function per subcommand -------------------------------------------------------


def _add_serve(sub: Subcommands) -> None:
    from bangor.server.config import ServeParser

    serve = sub.add_parser(
        "serve",
        help="run a server",
        description="Run a server: TCP control and UDP voice on one port number. It logs "
        "its data directory, key fingerprint and 'listening on HOST:PORT' to stderr.",
    )
    # --config: flags given on the command line win over the file and BANGOR_* variables.
    serve.__class__ = ServeParser
    serve.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to listen on (default %(default)s: every IPv4 address; :: for every "
        "IPv6 one)",
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP and UDP port (default {DEFAULT_PORT})"
    )
    serve.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    serve.add_argument("--db", metavar="URL", help=DB_HELP)
    serve.add_argument(
        "--open",
        action="store_true",
        help="no accounts: an invite code is enough to join (default: accounts)",
    )
    serve.add_argument(
        "--web",
        metavar="[HOST:]PORT",
        help="serve the browser client: the page on TCP PORT, WebTransport on UDP PORT "
        "(HOST defaults to --host; plain HTTP only on loopback, else give --tls-cert/--tls-key; "
        "default: no browser client)",
    )
    serve.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="PEM certificate (chain) for --web (default: none; a self-made one for "
        "WebTransport only)",
    )
    serve.add_argument(
        "--tls-key", metavar="FILE", help="PEM private key for --tls-cert (default: none)"
    )
    serve.add_argument(
        "--cluster",
        action="store_true",
        help="one of several nodes sharing --db (PostgreSQL) and server.key; rooms are "
        "placed on nodes and clients sent to their room's node (default: a lone server)",
    )
    serve.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        help="--cluster: where clients reach this node ([IPv6]:PORT for IPv6; no default)",
    )
    serve.add_argument(
        "--heartbeat",
        type=_seconds,
        metavar="SECONDS",
        help="--cluster: seconds between heartbeats (default 1)",
    )
    serve.add_argument(
        "--stale-after",
        type=_seconds,
        metavar="SECONDS",
        help="--cluster: a node silent this long is dead and its rooms move (default 5)",
    )
    # Configuration (server/config.py) and logs for services.
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with any of these options (key: the option without --) and a "
        "[limits] table of server limits; flags, then BANGOR_* variables (BANGOR_PORT, "
        "BANGOR_DATA_DIR, ...), win over it (default: $BANGOR_CONFIG, else none)",
    )
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings as a TOML file --config takes (database "
        "password hidden), each with its source, and exit (default: serve)",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="stderr log lines: text, or one JSON object per line for log collectors "
        "(default %(default)s)",
    )
    # Metrics (issue 18): Prometheus text format; needs the `metrics` extra.
    serve.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (PORT alone: on "
        "127.0.0.1; needs prometheus_client, the 'metrics' extra; default: none)",
    )
    serve.set_defaults(func=cmd_serve)


USER_ACTIONS_HELP = """\
actions:
  add NAME     create an account; the password is one line of stdin when stdin is
               not a terminal, else asked for twice
  remove NAME  delete an account
  passwd NAME  set a new password (read as for add)
  list         print the account names, one a line

The accounts are the server's: give the same --data-dir (or --db) as `bangor serve`.
"""


def _add_user(sub: Subcommands) -> None:
    user = sub.add_parser(
        "user",
        help="manage accounts",
        description="Add, remove, list accounts and set passwords, in a server's store.",
        epilog=USER_ACTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    user.add_argument(
        "action", choices=["add", "remove", "passwd", "list"], help="what to do (below)"
    )
    user.add_argument("name", nargs="?", help="the account's user name (not for list)")
    _store_options(user)
    user.set_defaults(func=cmd_user)


def _add_room(sub: Subcommands) -> None:
    room = sub.add_parser(
        "room",
        help="create and manage rooms",
        description="create: a new room, its invite printed. list: your rooms on --server "
        "(or, with --data-dir/--db, every room of a server you run). invite: the invite "
        "this device keeps for a room it created or joined. rotate: a new invite (members "
        "in the call get it and stay; the old one stops working). delete: the room goes, "
        "members in the call are told. kick: remove MEMBER (a nickname or account) from the "
        "call and rotate the invite; --ban keeps the account out for good. bans: the "
        "accounts banned from the room. unban: let a banned account (MEMBER) join again. "
        "Owner only, except invite.",
    )
    room.add_argument("action", choices=ROOM_ACTIONS, help="what to do (see above)")
    room.add_argument(
        "name", nargs="?", help=f"the room's name (at most {MAX_ROOM_NAME} characters)"
    )
    room.add_argument(
        "member", nargs="?", help="kick: the member's nickname or account; unban: the account"
    )
    room.add_argument("--server", metavar="HOST:PORT", help=SERVER_HELP)
    room.add_argument("--user", metavar="NAME", help=USER_HELP)
    room.add_argument(
        "--ban",
        action="store_true",
        help="kick: the account may never rejoin (default: removed from the call only)",
    )
    room.add_argument(
        "--max-bitrate",
        type=_int_in(MIN_BITRATE, MAX_BITRATE, "bit/s"),
        metavar="BPS",
        help="create: cap every member's Opus bitrate in this room at BPS bit/s (default: no cap)",
    )
    _store_options(room)
    room.set_defaults(func=cmd_room)


def _add_join(sub: Subcommands) -> None:
    join = sub.add_parser("join", help="join a room by invite code")
    join.add_argument("invite", help="the invite code (bangor:...) from `room create` or `host`")
    _join_options(join)
    join.add_argument("--profile", metavar="NAME", help=PROFILE_HELP)
    join.set_defaults(func=cmd_join)


def _add_host(sub: Subcommands) -> None:
    host = sub.add_parser(
        "host",
        help="host a room on this machine (embedded open server) and join it",
        description="Run a server in open mode in this process, print the invite code "
        "(with this machine's address) and join the room. Friends join with the code.",
    )
    host.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP and UDP port (default {DEFAULT_PORT})"
    )
    host.add_argument(
        "--address",
        metavar="HOST",
        help="address friends reach this machine at, put in the invite (default: this "
        "machine's address on its default route; give your public address or name when "
        "you forward the port on your router)",
    )
    host.add_argument(
        "--room", default="bangor", metavar="NAME", help="room name (default %(default)s)"
    )
    _join_options(host)
    host.set_defaults(func=cmd_host)


def _add_identity(sub: Subcommands) -> None:
    identity = sub.add_parser("identity", help="show this device's identity fingerprint")
    identity.add_argument(
        "--json",
        action="store_true",
        help="fingerprint, public key and path as one JSON object (default: the fingerprint)",
    )
    identity.set_defaults(func=cmd_identity)


def _add_devices(sub: Subcommands) -> None:
    devices = sub.add_parser(
        "devices",
        help="list audio devices",
        description="List the sound devices PortAudio sees, for --input/--output by index "
        "or name. Exits 1 with a message on stderr when there are none.",
    )
    devices.add_argument(
        "--json", action="store_true", help="one JSON object per device (default: a table)"
    )
    devices.set_defaults(func=cmd_devices)


def _parser_of(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` came from: ``bangor join``'s for
    ``bangor join ...``, else ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return _parser_of(action.choices[name], args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse reports a subcommand's unknown options with the top-level usage; show
        # the usage of the command they were given to.
        _parser_of(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        if _at_terminal():
            args.func = lambda _args: run_tui(None, args.top_profile)
        else:
            parser.print_help()
            return ExitCode.USAGE
    try:
        code: int = args.func(args)
        return code
    except UsageError as exc:
        print(f"bangor: {escape(str(exc))}", file=sys.stderr)
        return ExitCode.USAGE
    except BangorError as exc:  # its message may quote the server or a member
        print(f"error: {escape(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, asyncio.CancelledError):
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # e.g. `bangor room create ... | true`
        _discard_output()
        return ExitCode.ERROR


if __name__ == "__main__":
    sys.exit(main())
