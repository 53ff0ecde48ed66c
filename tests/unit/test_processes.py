"""The lab's process checks see through zombies, and a tree is every descendant."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from failover.lab import processes


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_killed_child_is_dead_before_anyone_waits_for_it() -> None:
    child = _sleeper()
    assert processes.alive(child.pid)
    processes.kill_tree(child.pid, timeout=5)
    # kill_tree reaped the zombie itself: nothing is left to wait for.
    assert not processes.alive(child.pid)


def test_stop_escalates_to_sigkill_when_the_process_ignores_the_request() -> None:
    stubborn = subprocess.Popen([sys.executable, "-c",
                                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                                 "print('ready', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    processes.stop(stubborn.pid, signal.SIGTERM, timeout=0.5)
    assert not processes.alive(stubborn.pid)


def test_stop_wakes_a_stopped_process_to_hear_the_request() -> None:
    sleeper = _sleeper()
    os.kill(sleeper.pid, signal.SIGSTOP)
    started = time.monotonic()
    processes.stop(sleeper.pid, signal.SIGTERM, timeout=5)
    assert time.monotonic() - started < 4, "SIGTERM waited for the deadline's SIGKILL"
    assert not processes.alive(sleeper.pid)


# A parent whose child starts a grandchild; both print their child's PID.
_THREE_GENERATIONS = """
import subprocess, sys, time
script = "import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(g.pid, flush=True); time.sleep(60)"
c = subprocess.Popen([sys.executable, '-c', script])
print(c.pid, flush=True)
time.sleep(60)
"""


def test_kill_tree_kills_grandchildren_too() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _THREE_GENERATIONS], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    grandchild = int(parent.stdout.readline())
    assert processes.tree(parent.pid) == [parent.pid, child, grandchild]
    processes.kill_tree(parent.pid, timeout=5)
    assert not any(processes.alive(pid) for pid in (parent.pid, child, grandchild))
    parent.wait(timeout=5)


def test_a_zombie_that_is_not_ours_is_dead() -> None:
    # The child never waits for the grandchild it started, which exits at once.
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time;"
                               "g = subprocess.Popen([sys.executable, '-c', 'pass']);"
                               "print(g.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    zombie = int(parent.stdout.readline())
    assert processes.wait_gone([zombie], timeout=10)
    assert processes.tree(parent.pid) == [parent.pid, zombie]  # still there, as a zombie
    processes.kill_tree(parent.pid, timeout=5)
    parent.wait(timeout=5)


def test_nothing_is_alive_without_a_pid() -> None:
    assert not processes.alive(None)
