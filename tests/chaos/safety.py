"""What every chaos scenario asserts about safety, as the checker judged it from outside
(`failover.lab.checker`: clients pinned to every region, then every database read)."""

from __future__ import annotations

from typing import Any

from failover.lab.checker import CheckReport

# After a fault that moved nothing, the fleet has nothing to settle: a short wait only
# lets a resumed server answer again.
QUIET_SETTLE = 2.0
# After a failover's heal, half the drill's 20 s before every region is asked whether it
# takes a write: a stricter bar than the drill's, and minutes off the suite.
SETTLE = 10.0


def _seen(report: CheckReport | dict[str, Any] | None) -> dict[str, Any]:
    assert report is not None, "the round has no checker report"
    return report.to_dict() if isinstance(report, CheckReport) else report


def assert_safe(*reports: CheckReport | dict[str, Any] | None) -> None:
    """No split-brain write, no acknowledged write lost (set aside by a rejoin is not
    lost), nothing set aside that the writer has, no write stored twice, exactly one
    region taking writes at the end."""
    for report in reports:
        seen = _seen(report)
        examples = seen["examples"]
        assert seen["split_brain_writes"] == 0, (
            f"{seen['split_brain_writes']} split-brain writes, e.g. {examples['split_brain']}")
        assert seen["lost_acknowledged"] == 0, (
            f"acknowledged writes lost: {seen['lost_acknowledged']} (writer {seen['writer']}, "
            f"unreadable {seen['unreadable']}), e.g. {examples['lost']}")
        assert seen["reconciled_on_writer"] == 0, (
            f"{seen['reconciled_on_writer']} writes set aside by a rejoin are on the writer "
            f"too, e.g. {examples['reconciled_on_writer']}")
        assert seen["duplicates"] == 0 and seen["repeated_rows"] == 0, (
            f"{seen['duplicates']} ids stored with two contents, {seen['repeated_rows']} "
            f"stored twice, e.g. {examples['duplicates']}")
        assert len(seen["writable_regions"]) == 1, (
            f"regions taking writes at the end: {seen['writable_regions'] or 'none'}; "
            f"the others: {seen['not_writable']}")
