"""Skips that cannot go unnoticed: a warning in the summary besides pytest's skip line."""

from __future__ import annotations

import warnings
from typing import NoReturn

import pytest


def skip_loudly(what: str, reason: str) -> NoReturn:
    warnings.warn(f"{what} SKIPPED: {reason}", UserWarning, stacklevel=2)
    pytest.skip(reason)
