"""The in-process server the WebTransport tests share (test_web*.py, test_webpage.py).

Modules with a server of their own (test_app.py, test_hostile_messages.py) define a
``server`` fixture that overrides this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bangor.server.app import Server
from bangor.server.web import WebOptions, WebService, start_web
from tests.server.test_app import make_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await make_server(tmp_path)
    yield srv
    await srv.close()


@pytest.fixture
async def web(server: Server) -> WebService:
    return await start_web(server, WebOptions("127.0.0.1", 0))
