"""Where the lab lives: a folder its servers' users can reach, or a clear refusal.

As root the lab's servers run as unprivileged users, who cannot pass through a private
folder (a checkout under /root, a `mktemp -d` directory). Without --dir the lab then
lives in /var/lib/failover-lab; an explicit --dir they cannot reach exits 2 naming --dir,
before anything is made or started.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.cli import main
from failover.errors import UserError
from failover.lab import build
from failover.lab import state as lab
from failover.lab.unprivileged import RunAs, folder_closed_to_others
from tests.support.skipping import skip_loudly


@pytest.fixture
def folders() -> Iterator[tuple[Path, Path]]:
    """(closed, open): a 0700 and a 0755 folder side by side, under /tmp (pytest's own
    temporary folders are closed to other users themselves)."""
    base = Path(tempfile.mkdtemp(prefix="failover-lab-dir-"))
    try:
        base.chmod(0o755)
        closed, opened = base / "closed", base / "open"
        closed.mkdir(mode=0o700)
        closed.chmod(0o700)  # whatever the umask
        opened.mkdir()
        opened.chmod(0o755)
        yield closed, opened
    finally:
        shutil.rmtree(base)


def test_the_first_closed_folder_on_the_way_is_named(folders: tuple[Path, Path]) -> None:
    closed, opened = folders
    assert folder_closed_to_others(closed / "checkout" / ".failover-lab") == closed
    assert folder_closed_to_others(closed) == closed
    # Folders not made yet do not count: `lab up` makes them.
    assert folder_closed_to_others(opened / "checkout" / ".failover-lab") is None
    assert folder_closed_to_others(Path("/var/lib")) is None


def test_an_unprivileged_user_is_stopped_exactly_where_the_check_says(
        folders: tuple[Path, Path]) -> None:
    if os.geteuid() != 0:
        skip_loudly("the unprivileged-user folder check", "switching to another user needs "
                    "root; run the tests as root (CI does)")
    nobody = pwd.getpwnam("nobody")
    as_nobody = RunAs(uid=nobody.pw_uid, gid=nobody.pw_gid, name="nobody")
    for parent in folders:
        (parent / "data").mkdir()
        (parent / "data").chmod(0o755)
        reached = subprocess.run(["test", "-d", str(parent / "data")], check=False,
                                 preexec_fn=as_nobody.preexec(), timeout=30)
        assert (reached.returncode == 0) == (folder_closed_to_others(parent / "data") is None)
    assert folder_closed_to_others(folders[0] / "data") is not None  # both cases were seen


def test_without_dir_the_lab_goes_where_its_servers_can_reach(
        folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    closed, opened = folders
    monkeypatch.chdir(opened)
    assert lab.default_dir() == lab.DEFAULT_DIR
    monkeypatch.chdir(closed)
    assert lab.default_dir() == lab.SHARED_DIR
    assert folder_closed_to_others(lab.SHARED_DIR) is None


def test_a_dir_out_of_reach_is_refused_with_what_to_do(folders: tuple[Path, Path]) -> None:
    closed, opened = folders
    build.check_reachable(opened / ".failover-lab")
    with pytest.raises(UserError) as refused:
        build.check_reachable(closed / ".failover-lab")
    message = str(refused.value)
    assert message.startswith("--dir: ")
    assert f"{closed} (mode 0700) lets no other user pass" in message
    assert str(lab.SHARED_DIR) in message and "leave --dir out" in message


def test_lab_up_with_such_a_dir_exits_2_before_starting_anything(
        folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        skip_loudly("lab up's --dir refusal", "lab up refuses to start without root first; "
                    "run the tests as root (CI does)")
    closed, _ = folders

    def started() -> Path:
        raise AssertionError("lab up went past the folder check: it would start servers")

    monkeypatch.setattr(build, "pg_bindir", started)  # the first step that starts anything
    monkeypatch.setattr(sys, "argv", ["failover", "lab", "up", "--dir", str(closed / "lab")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--dir: the lab's servers run as unprivileged users, who cannot reach {closed}/lab" \
        in err
    assert not (closed / "lab").exists()
