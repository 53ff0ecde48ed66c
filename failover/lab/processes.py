"""The lab's processes, known by PID: alive or not, their children, a crash of a whole tree.

A process the lab started from this very process (the chaos suite and the drill run
`lab up` and `heal` in process) stays a zombie after it dies until this process
reaps it. A zombie still answers `kill(pid, 0)`, so every liveness check here reaps
our own dead children first and treats a zombie as dead: otherwise PostgreSQL would
refuse to start on a data directory whose lock file names the zombie's PID, and a
stop would wait out its whole timeout for a process that is already gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: init reaps it
        os.waitpid(pid, os.WNOHANG)


def _state(pid: int) -> str | None:
    """The kernel's one-letter state of `pid` (R, S, T, Z...), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: read after it.
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    _reap(pid)
    return _state(pid) not in (None, "Z", "X")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def tree(pid: int) -> list[int]:
    """A process and its children (a postmaster and its backends)."""
    return [pid, *children(pid)]


def signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Until every one of `pids` has exited; False if one is still alive at the deadline."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
    return True


def kill_tree(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL a process and every child at once, as a machine dying would.

    The parent is stopped first so that it cannot fork a child between the listing
    of its children and its death (an orphaned PostgreSQL backend left attached to
    the shared memory would keep the server from starting again).
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    victims = tree(pid)
    signal_all(victims, signal.SIGKILL)
    wait_gone(victims, timeout)


def stop(pid: int | None, first: signal.Signals, timeout: float) -> None:
    """Ask a process to exit with `first` (after SIGCONT, in case it is stopped); SIGKILL at the deadline."""
    if not alive(pid):
        return
    assert pid is not None
    signal_all([pid], signal.SIGCONT)
    signal_all([pid], first)
    if not wait_gone([pid], timeout):
        signal_all([pid], signal.SIGKILL)
        wait_gone([pid], timeout)
