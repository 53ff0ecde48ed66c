"""The promise rule behind "an epoch is claimed once": pure, shared by every backend.

An acceptor promises an epoch above any it promised before, to one claimant, and
the same epoch again only to the same claimant (a plan resumed after a crash). Two
claimants can then never both gather a majority for one epoch: any two majorities
share an acceptor, and it promised that epoch to one of them only.
"""

from __future__ import annotations

Promise = tuple[int, str]  # (epoch, claimant)


def may_promise(held: Promise | None, epoch: int, claimant: str) -> bool:
    if held is None:
        return True
    return epoch > held[0] or (epoch == held[0] and claimant == held[1])
