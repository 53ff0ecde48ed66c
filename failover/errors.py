"""Error types that decide the exit code: a user can fix a UserError (exit 2)."""

from __future__ import annotations


class FailoverError(Exception):
    """Base of every error this package raises on purpose."""


class UserError(FailoverError):
    """Bad input a user can fix: a file, a field, a flag. The CLI exits 2.

    `problems` holds one line per problem so that a validator can report all
    of them at once instead of stopping at the first.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class ConflictError(FailoverError):
    """The world is not in the state a compare-and-set expected."""


class SafetyRefusal(FailoverError):
    """An action was refused because doing it could lose data or split the brain."""
