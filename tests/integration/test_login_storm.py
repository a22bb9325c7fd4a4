"""A real `bangor serve` under a storm of wrong logins: its memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path

import pytest

from bangor.client.app import Login, connect_and_login
from bangor.client.control import ControlClient
from bangor.errors import BangorError
from tests.integration.conftest import PASSWORD, ServerProcess

pytestmark = pytest.mark.integration

STORM = 200
MAX_GROWTH_KB = 80 * 1024  # the target: peak RSS at most idle + 80 MiB


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


async def wrong_login(port: int, index: int) -> None:
    user = "victim" if index % 2 else f"x{secrets.token_hex(6)}"
    client: ControlClient | None = None
    with contextlib.suppress(BangorError, TimeoutError):
        async with asyncio.timeout(30):
            client = await ControlClient.connect("127.0.0.1", port)
            client.start()
            await client.login(user, "wrong " + secrets.token_hex(4), "")
    if client is not None:
        await client.close()


async def storm_then_login(port: int) -> str:
    await asyncio.gather(*(wrong_login(port, i) for i in range(STORM)))
    client, welcome = await connect_and_login("127.0.0.1", port, Login("alice", PASSWORD))
    await client.leave()
    return welcome.user


def test_login_storm_keeps_server_memory_bounded(server: ServerProcess) -> None:
    for name in ("alice", "victim"):
        server.add_user(name)
    idle = memory_kb(server.proc.pid)["VmRSS"]
    assert asyncio.run(storm_then_login(server.port)) == "alice"  # still serving, not locked
    memory = memory_kb(server.proc.pid)
    assert memory["VmHWM"] - idle <= MAX_GROWTH_KB, (idle, memory)
