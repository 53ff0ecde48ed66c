"""WAL positions as integers: pg_lsn text '16/B374D848' <-> bytes from 0/0."""

from __future__ import annotations


def parse_lsn(text: str | None) -> int | None:
    if text is None:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int | None) -> str | None:
    if value is None:
        return None
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
