"""Connection admission under a handshake flood, through a real server process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bangor.client.control import ControlClient
from tests.integration.conftest import PASSWORD, LineReader, ServerProcess, client_env, run_bangor

pytestmark = pytest.mark.integration

FLOOD = str(Path(__file__).with_name("flood.py"))
LOGINS = 20
LOGIN_DEADLINE = 2.0  # seconds from TCP connect to welcome, per login


async def timed_logins(server: ServerProcess) -> list[float | str]:
    """``LOGINS`` real logins one after another: each one's seconds, or its error."""
    results: list[float | str] = []
    for _ in range(LOGINS):
        started = time.monotonic()
        try:
            client = await ControlClient.connect(server.host, server.port)
            client.start()
            await client.login("alice", PASSWORD, "alice")
        except Exception as exc:  # the result to report, not a test crash
            results.append(f"{type(exc).__name__}: {exc}")
        else:
            results.append(time.monotonic() - started)
            await client.leave()
        await asyncio.sleep(0.2)  # spread over the flood, as people arrive
    return results


def test_handshake_flood_from_the_same_address_locks_nobody_out(server: ServerProcess) -> None:
    server.add_user("alice")
    flood = subprocess.Popen(
        [sys.executable, FLOOD, server.host, str(server.port), "--rate", "50", "--seconds", "14"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        LineReader(flood.stdout).wait_for(lambda line: line == "flooding")
        time.sleep(2.0)  # long enough for the flood to fill the table on an unprotected server
        results = asyncio.run(timed_logins(server))
        # The command line too, from the same address, while the flood goes on.
        created = run_bangor(
            ["room", "create", "flooded", "--server", server.address, "--user", "alice"],
            env=client_env(server.home / "alice"),
            timeout=20,
        )
        failed = [r for r in results if isinstance(r, str)]
        slow = [r for r in results if isinstance(r, float) and r > LOGIN_DEADLINE]
        assert not failed and not slow, f"logins: {results}"
        assert created.returncode == 0, created.stderr
        assert created.stdout.count("\n") == 1
        # The operator hears of it at once, then once per admission_log_interval (10 s).
        summary = server.stderr.wait_for(lambda line: "in the last" in line, timeout=8)
        assert flood.poll() is None, "the flood ended before the test did"
    finally:
        flood.kill()
        flood.wait()
    logged = [line for line in server.stderr.seen if "admission:" in line]
    assert len(logged) == 2, logged
    assert "evicted, address full" in summary and "most from 127.0.0.1" in summary
