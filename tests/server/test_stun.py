"""The server's STUN responder on its media port, asked by aioice's ICE agent (not our code)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aioice import Connection

from bangor.server.app import open_server
from bangor.server.store import database_url


async def test_aioice_gathers_a_server_reflexive_candidate_from_our_server(
    tmp_path: Path,
) -> None:
    server = await open_server(tmp_path, database_url(tmp_path, None))
    await server.start("0.0.0.0", 0)
    agent = Connection(ice_controlling=True, stun_server=("127.0.0.1", server.address[1]))
    try:
        # aioice sends a bare 20-byte request; the 32-byte answer comes to its retransmission.
        await asyncio.wait_for(agent.gather_candidates(), 10)
        srflx = [c for c in agent.local_candidates if c.type == "srflx"]
        host = {(c.host, c.port) for c in agent.local_candidates if c.type == "host"}
        assert srflx, agent.local_candidates
        # Over loopback no NAT sits between: the mapped address is the socket's own.
        assert {(c.host, c.port) for c in srflx} <= host
        assert server.stun.stats.answered >= 1
        assert server.stun.stats.no_credit >= 1
    finally:
        await agent.close()
        await server.close()
