"""What one controller tells its peers reaches them whole: the peer exchange's payload."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from failover.coordination.peers import PeerCoordinator
from failover.engine import Health, Observation

# Nothing listens on the discard port here: a's push to b fails at once, and b takes
# a's payload the way its API handler does.
PEERS = {"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:9"}


def coordinator(me: str, state_dir: Path) -> PeerCoordinator:
    state_dir.mkdir()
    return PeerCoordinator(me, PEERS, b"k" * 32, state_dir, quorum=2, observation_max_age=10.0,
                           timeout=0.5, on_exchange_error=lambda peer, error: None)


def test_an_observation_reaches_a_peer_with_the_observers_topology(tmp_path: Path) -> None:
    a, b = coordinator("a", tmp_path / "a"), coordinator("b", tmp_path / "b")
    sent = Observation("a", "b", Health.HEALTHY, 3, time.time(), last_ok_at=time.time(),
                       topology="0123456789abcdef")

    async def push() -> None:
        await a.start()
        try:
            await a.exchange([sent])
        finally:
            await a.close()

    asyncio.run(push())
    b.ingest(json.loads(json.dumps(a.payload())))  # as it travels: JSON
    [received] = [o for o in b.observations() if o.observer == "a"]
    assert received == sent
    assert received.topology == "0123456789abcdef"
