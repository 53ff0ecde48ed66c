"""The lab's packet filter: DROP rules in a chain of its own, each carrying its fault's tag.

Every loopback packet passes OUTPUT exactly once, sent by some process; the lab's
processes run in their region's group, so an `--gid-owner` match tells which region
sent a packet and a destination address which region it goes to. Rules drop, never
reject: a cut link hangs connections as a real network does, instead of failing fast.

A fault's rules are found again by their tag (an iptables comment), not rebuilt from
the lab's state: heal removes exactly what the fault added, even from another process
and after the state changed (a process restarted, an etcd member moved).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from failover.errors import FailoverError, UserError

CHAIN = "FAILOVER-LAB"
TAG_PREFIX = "failover-lab:"


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("iptables") or "/usr/sbin/iptables"
    result = subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True,
                            check=False, timeout=30)
    if check and result.returncode != 0:
        raise FailoverError(f"iptables {' '.join(args)}: {result.stderr.strip()}")
    return result


def tag(*parts: str) -> str:
    """The comment that names one fault's rules, e.g. failover-lab:isolate:us-east-1."""
    return TAG_PREFIX + ":".join(parts)


def drop(rule_tag: str, matches: Iterable[Sequence[str]], *, why: str) -> None:
    """Append one DROP rule per match (iptables match arguments) to the lab's chain."""
    if os.geteuid() != 0:
        raise UserError(f"{why} needs root: it drops packets with iptables rules "
                        "(run it with sudo)")
    if _iptables("-n", "-L", CHAIN, check=False).returncode != 0:
        _iptables("-N", CHAIN)
    if _iptables("-C", "OUTPUT", "-j", CHAIN, check=False).returncode != 0:
        _iptables("-I", "OUTPUT", "1", "-j", CHAIN)
    try:
        for match in matches:
            _iptables("-A", CHAIN, *match, "-m", "comment", "--comment", rule_tag, "-j", "DROP")
    except FailoverError:
        undrop(rule_tag)  # half a fault would be a different fault
        raise


def _tagged(wanted: str | None) -> list[list[str]]:
    """The lab chain's rules as `-A CHAIN ...` specs: those tagged `wanted`, or all the lab's."""
    listed = _iptables("-S", CHAIN, check=False)
    if listed.returncode != 0:  # no chain: nothing was ever dropped
        return []
    found = []
    for line in listed.stdout.splitlines():
        spec = shlex.split(line)
        if spec[:2] != ["-A", CHAIN] or "--comment" not in spec:
            continue
        comment = spec[spec.index("--comment") + 1]
        if comment == wanted or (wanted is None and comment.startswith(TAG_PREFIX)):
            found.append(spec)
    return found


def undrop(rule_tag: str | None) -> int:
    """Remove the rules tagged `rule_tag` (None: every rule of the lab); how many there were."""
    rules = _tagged(rule_tag)
    for spec in rules:
        _iptables("-D", *spec[1:], check=False)
    return len(rules)
