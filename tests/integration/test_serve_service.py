"""`bangor serve` as a systemd service runs it: a config file, JSON logs, READY=1 on
$NOTIFY_SOCKET, SIGUSR1, and no writable code (MemoryDenyWriteExecute=)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    BANGOR,
    client_env,
    free_port,
    run_bangor,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.integration

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
# Runs the command after it under PR_SET_MDWE (Linux 6.3+): what systemd's
# MemoryDenyWriteExecute= forbids (memory both writable and executable) fails here too.
NO_WX = (
    "import ctypes, os, sys\n"
    f"if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, "
    "0, 0, 0):\n"
    "    sys.exit(77)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(20)
    yield sock
    sock.close()


def test_ready_comes_after_listening_and_logs_are_json(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    port = free_port()
    conf = tmp_path / "bangor.toml"
    conf.write_text(
        f'host = "127.0.0.1"\nport = {port}\ndata-dir = "{tmp_path / "data"}"\n'
        'log-format = "json"\n[limits]\nmax_sessions = 9\n'
    )
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.getsockname()}
    env = {k: v for k, v in env.items() if not k.startswith("BANGOR_")}
    with (tmp_path / "stderr").open("w") as err:
        proc = subprocess.Popen(
            [BANGOR, "serve", "--config", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        ready = notify_socket.recv(4096).decode()
        # The line tools wait for was written before READY=1 was sent.
        logged = (tmp_path / "stderr").read_text()
        assert f"listening on 127.0.0.1:{port}" in logged
        assert ready == f"READY=1\nSTATUS=listening on 127.0.0.1:{port}"
        proc.send_signal(signal.SIGUSR1)  # a restart: exit 0 for systemd's Restart=
        assert notify_socket.recv(4096) == b"STOPPING=1\nSTATUS=restarting"
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in (tmp_path / "stderr").read_text().splitlines()]
    listening = next(line for line in lines if line["message"].startswith("listening on"))
    assert listening["address"] == f"127.0.0.1:{port}"
    assert listening["logger"] == "bangor.server" and listening["level"] == "WARNING"
    assert lines[-1]["message"] == "stopped"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


def test_json_logs_keep_a_startup_failure_json(tmp_path: Path) -> None:
    """A collector reads every line as JSON, the one that says why the server stopped too."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_bangor(
            [
                "serve",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--data-dir={tmp_path}",
                "--log-format=json",
            ]
        )
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[-1]["level"] == "ERROR"
    assert lines[-1]["message"].startswith(f"cannot listen on 127.0.0.1:{port}")


def _mdwe_works() -> bool:
    check = subprocess.run(
        [sys.executable, "-c", NO_WX, "/bin/true"], capture_output=True, timeout=30
    )
    return check.returncode == 0


def test_the_server_needs_no_writable_code(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes in contrib/bangor.service: logins (argon2-cffi), the
    server key and the web client's certificate (cryptography) and uvloop all work
    without memory that is both writable and executable."""
    if sys.platform != "linux" or not hasattr(ctypes, "CDLL") or not _mdwe_works():
        pytest.skip("PR_SET_MDWE needs Linux 6.3 or later")
    wrap = (sys.executable, "-c", NO_WX)
    srv = start_server(tmp_path, command=(*wrap, BANGOR), extra=["--web", "127.0.0.1:0"])
    try:
        run_bangor(
            ["user", "add", "alice", *srv.store_args()], stdin="pw\n", prefix=wrap, check=True
        )
        env = client_env(tmp_path / "alice", password="pw")
        created = run_bangor(
            ["room", "create", "r", "--server", srv.address, "--user", "alice"], env=env
        )
        assert created.returncode == 0, created.stderr
        assert created.stdout.startswith("bangor:")
    finally:
        stop_server(srv)
    assert srv.proc.returncode == 0
    assert not any("Traceback" in line for line in srv.stderr.rest(timeout=5))
