"""What the lab's own daemons (BIND9's named, the etcd members) have in common.

Each is a Debian package installed on demand, runs in the foreground in a
session of its own (so that it outlives `failover lab up` and its terminal) as
the user the lab gives it, writes its output to one log file, and is stopped
by SIGTERM with SIGKILL as the fallback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from failover.errors import UserError
from failover.lab.unprivileged import RunAs


def installed_binary(name: str, usual_path: str, packages: Sequence[str], *, what: str) -> Path:
    """Where program `name` is; a UserError says which packages to install when it is missing."""
    # sbin is not on every PATH (a user's shell, cron): look where the package puts it too.
    found = shutil.which(name) or (usual_path if Path(usual_path).exists() else None)
    if found is None:
        raise UserError(f"{what} is not installed: apt-get install -y {' '.join(packages)}")
    return Path(found)


def ensure_installed(find: Callable[[], Path], packages: Sequence[str]) -> Path:
    """`find()`, after installing `packages` with apt when it raises a UserError."""
    try:
        return find()
    except UserError:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                       check=True, env=env, timeout=600)
        return find()


def spawn(argv: Sequence[str], *, cwd: Path, log_file: Path, run_as: RunAs,
          env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a daemon detached from us, as `run_as`, stdout and stderr appended to `log_file`."""
    with log_file.open("ab") as log:
        return subprocess.Popen(
            argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=run_as.preexec(), env=env,  # noqa: PLW1509 - drops privileges only
            start_new_session=True,  # outlives `failover lab up` and its terminal
        )


def stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; nothing if it has exited."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGCONT)  # a paused daemon cannot act on SIGTERM
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
