"""The lab's processes, known by PID: alive or not, their whole tree, a crash of a whole tree.

A process the lab started from this very process (the chaos suite and the drill run
`lab up` and `heal` in process) stays a zombie after it dies until this process
reaps it. A zombie still answers `kill(pid, 0)`, so every liveness check here reaps
our own dead children first and treats a zombie as dead: otherwise PostgreSQL would
refuse to start on a data directory whose lock file names the zombie's PID, and a
stop would wait out its whole timeout for a process that is already gone. The same
holds for zombies that are not ours (a killed postmaster's backends, before whoever
inherits them reaps them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

import psutil


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: its parent or init reaps it
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    _reap(pid)
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def tree(pid: int) -> list[int]:
    """A process and all its descendants (a postmaster, its backends and whatever they started);
    empty when there is no such process."""
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Until every one of `pids` has exited (zombies count as gone); False if one is still
    alive at the deadline."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
    return True


def kill_tree(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL a process and all its descendants at once, as a machine dying would.

    The parent is stopped first so that it cannot fork a child between the listing
    of its tree and its death (an orphaned PostgreSQL backend left attached to the
    shared memory would keep the server from starting again).
    """
    try:
        parent = psutil.Process(pid)
        parent.suspend()
        victims = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        _reap(pid)
        return
    for victim in victims:
        # psutil checks the process's start time first: a PID reused meanwhile is spared.
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    wait_gone([victim.pid for victim in victims], timeout)


def stop(pid: int | None, first: signal.Signals, timeout: float) -> None:
    """Ask a process to exit with `first`; kill its whole tree at the deadline.

    The whole tree gets SIGCONT first: a stopped process (a `hang` fault) cannot act
    on the request, nor can its stopped children act on what it forwards to them.
    """
    if not alive(pid):
        return
    assert pid is not None
    signal_all(tree(pid), signal.SIGCONT)
    signal_all([pid], first)
    if not wait_gone([pid], timeout):
        kill_tree(pid, timeout)
