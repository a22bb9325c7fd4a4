"""Hostile control messages against a running in-process server: protocol errors, never internal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bangor.client.control import ControlClient
from bangor.errors import CloseCode, RefusedError
from bangor.server.app import Server
from tests.server.test_app import login, make_server, next_message


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await make_server(tmp_path)
    yield srv
    await srv.close()


def _nested_ping(depth: int) -> bytes:
    # {"t": "ping", "nonce": 1, "x": [[[...]]]}, inside one Noise frame (65535 bytes at most).
    return b"\x83\xa1t\xa4ping\xa5nonce\x01\xa1x" + b"\x91" * depth + b"\xc0"


async def _send_raw(client: ControlClient, payload: bytes) -> None:
    client.noise.send(payload)
    client.writer.write(client.noise.data_to_send())
    await client.writer.drain()


async def test_deeply_nested_message_is_a_protocol_error_not_an_internal_one(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await login(server, "alice")
    await _send_raw(alice, _nested_ping(60_000))
    closed = await next_message(alice)
    assert isinstance(closed, RefusedError)
    assert closed.code == CloseCode.PROTOCOL, closed
    assert "nested too deeply" in str(closed)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await alice.close()
    bob = await login(server, "bob")  # the server goes on serving everyone else
    await asyncio.wait_for(bob.create_room("still-here"), 5)
    await bob.leave()
