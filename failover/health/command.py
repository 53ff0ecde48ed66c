"""`command` checks: a program that exits 0 means healthy.

The program runs in its own process group so that a timeout kills it and
everything it started (a shell script's children included), not only the
direct child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from failover.health.probe import BoundedProbe, Outcome
from failover.topology import CommandCheck

# Enough of stderr to say why a check failed, not enough to flood a table.
REASON_OUTPUT_CHARS = 200


class CommandProbe(BoundedProbe):
    def __init__(self, check: CommandCheck) -> None:
        super().__init__(check.timeout)
        self.check = check

    async def attempt(self) -> Outcome:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.check.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return Outcome(False, f"cannot run {self.check.argv[0]}: {exc.strerror or exc}")
        try:
            _, stderr = await process.communicate()
        except asyncio.CancelledError:
            _kill_group(process.pid)
            # Reap it so that no zombie outlives the probe; SIGKILL makes this quick.
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(process.wait())
            raise
        code = process.returncode
        if code == 0:
            return Outcome(True, "exit 0", {"exit_code": 0})
        said = stderr.decode(errors="replace").strip()
        tail = said[-REASON_OUTPUT_CHARS:].splitlines()[-1] if said else ""
        status = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        return Outcome(False, f"{status}: {tail}" if tail else status, {"exit_code": code})


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
