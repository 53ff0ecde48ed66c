"""Run server processes as an unprivileged user when we are root.

PostgreSQL refuses to start as root, so when this process is root the servers
run as the system user `failover-lab` (created on first use), and every
directory they write is handed to that user. They must also be able to pass
through every folder above their files: `folder_closed_to_others` finds the one
that stops them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from failover.errors import FailoverError

LAB_USER = "failover-lab"


@dataclass(frozen=True)
class RunAs:
    """The user a server runs as; `None` fields mean 'as ourselves'."""

    uid: int | None
    gid: int | None
    name: str

    def chown(self, path: Path) -> None:
        """Give `path` (a file or a whole tree) to the server user."""
        if self.uid is None or self.gid is None:
            return
        os.chown(path, self.uid, self.gid)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                for entry in (*dirs, *files):
                    os.chown(os.path.join(root, entry), self.uid, self.gid, follow_symlinks=False)

    def preexec(self) -> Callable[[], None] | None:
        """A `preexec_fn` for subprocess that drops to this user, or None."""
        if self.uid is None or self.gid is None:
            return None
        uid, gid = self.uid, self.gid

        def drop() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        return drop

    def env(self) -> dict[str, str]:
        """An environment for the child whose HOME and USER fit the user it runs as."""
        env = dict(os.environ)
        if self.uid is not None:
            entry = pwd.getpwuid(self.uid)
            env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
        return env


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True, check=False, timeout=30,
    )
    if result.returncode not in (0, 9):  # 9: created meanwhile by someone else
        raise FailoverError(f"cannot create the unprivileged user {name!r}: {result.stderr.strip()}")
    return pwd.getpwnam(name)


def server_user(name: str = LAB_USER) -> RunAs:
    """Who servers run as: ourselves, or the user `name` (created on first use) when we are root."""
    if os.geteuid() != 0:
        return RunAs(uid=None, gid=None, name=pwd.getpwuid(os.geteuid()).pw_name)
    entry = _ensure_user(name)
    return RunAs(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name)


def region_user(region: str) -> RunAs:
    """The user a lab region's processes run as: one per region, so that packet filters
    can tell the regions' traffic apart by owner (see `failover lab fault --kind isolate`)."""
    return server_user(f"fo-{region}"[:32])


def folder_closed_to_others(path: Path) -> Path | None:
    """The first folder on the way from / to `path` that other users cannot pass through,
    or None when they can reach `path` (folders not made yet do not count: whoever makes
    them chooses their mode).

    Only the bits for others are read: the servers' users are system users made for them,
    which own none of these folders and share no group with their owners (ACLs are not
    consulted).
    """
    for folder in reversed((path, *path.parents)):
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            return None
        if not mode & stat.S_IXOTH:
            return folder
    return None
