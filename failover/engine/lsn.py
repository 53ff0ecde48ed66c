"""WAL positions as integers: pg_lsn text '16/B374D848' <-> bytes from 0/0.

Pure, so that the engine (which ranks candidates by position) and the
PostgreSQL adapters (which read and write positions) share one notation.
"""

from __future__ import annotations

from typing import overload


@overload
def parse_lsn(text: str) -> int: ...
@overload
def parse_lsn(text: None) -> None: ...
def parse_lsn(text: str | None) -> int | None:
    if text is None:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@overload
def format_lsn(value: int) -> str: ...
@overload
def format_lsn(value: None) -> None: ...
def format_lsn(value: int | None) -> str | None:
    """PostgreSQL's text form of an LSN: high/low 32 bits in hex."""
    if value is None:
        return None
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
