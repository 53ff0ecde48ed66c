"""A claim in peers mode: a quorum of promises is enough, and a peer that is cut off does not
hold the promotion up for the whole request timeout."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from pathlib import Path

from aiohttp import web

from failover.coordination.peers import CLAIM_PATH, PeerCoordinator

KEY = b"k" * 32
TIMEOUT = 30.0  # the request timeout: far longer than the test may take


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _serve_promises(peer: PeerCoordinator, port: int) -> web.AppRunner:
    """`peer`'s own answer to a claim, over HTTP as its controller's API gives it."""
    async def claim(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        return web.json_response(peer.promise(body["service"], body["epoch"], body["claimant"],
                                              body["target"]))

    app = web.Application()
    app.router.add_post(CLAIM_PATH, claim)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def test_a_quorum_of_promises_grants_the_claim_without_waiting_for_a_silent_peer(
        tmp_path: Path) -> None:
    live_port, silent_port = _free_port(), _free_port()
    urls = {"a": "http://127.0.0.1:1", "b": f"http://127.0.0.1:{live_port}",
            "c": f"http://127.0.0.1:{silent_port}"}

    def coordinator(me: str) -> PeerCoordinator:
        return PeerCoordinator(me, {n: u for n, u in urls.items() if n != me}, KEY,
                               tmp_path / me, quorum=2, observation_max_age=10.0,
                               timeout=TIMEOUT, on_exchange_error=lambda peer, error: None)

    async def scenario() -> None:
        a, b = coordinator("a"), coordinator("b")
        served = await _serve_promises(b, live_port)
        # c is cut off: its port takes the connection and never answers.
        silent = socket.create_server(("127.0.0.1", silent_port))
        await a.start()
        try:
            claim = await asyncio.wait_for(a.claim("app", 7, "b", "c", lease_ttl=2.0),
                                           TIMEOUT / 3)
        finally:
            await a.close()
            await served.cleanup()
            silent.close()
        assert claim.granted, claim.reason
        assert "promised by a, b" in claim.reason
        # c may have vouched for the old writer c for ever: the bound is the quorum's.
        assert math.isfinite(claim.old_lease_ends_by)
        assert b.highest_claimed("app") == 7

    asyncio.run(scenario())
