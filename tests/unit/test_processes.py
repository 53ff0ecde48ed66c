"""The lab's process checks see through zombies of its own children."""

from __future__ import annotations

import signal
import subprocess
import sys

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


def test_the_tree_of_a_process_holds_its_children() -> None:
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time;"
                               "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
                               "print(c.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    assert processes.tree(parent.pid) == [parent.pid, grandchild]
    processes.kill_tree(parent.pid, timeout=5)
    assert not processes.alive(parent.pid) and not processes.alive(grandchild)
    parent.wait(timeout=5)


def test_nothing_is_alive_without_a_pid() -> None:
    assert not processes.alive(None)
