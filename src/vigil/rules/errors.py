"""Errors and warnings about rules, each with the file and line it is about."""
from __future__ import annotations

from typing import Optional


def _place(file, line) -> str:
    """file:line, or the file alone, or "" when the place is not known."""
    if file is None:
        return ""
    return f"{file}:{line}" if line else str(file)


class RulesError(Exception):
    """A rules file that cannot be loaded, with where and why."""

    def __init__(self, message: str, file: Optional[str] = None, line: Optional[int] = None,
                 errors: Optional[list] = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.errors = errors if errors is not None else [self]

    @classmethod
    def first_of(cls, errors) -> "RulesError":
        """One error standing for several: the first one's message and place, all in .errors."""
        first = errors[0]
        return cls(first.message, first.file, first.line, list(errors))

    def location(self) -> str:
        return _place(self.file, self.line)

    def __str__(self) -> str:
        loc = self.location()
        return f"{loc}: {self.message}" if loc else self.message

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "message": self.message}


class RulesWarning:
    __slots__ = ("message", "file", "line")

    def __init__(self, message: str, file: Optional[str] = None, line: Optional[int] = None):
        self.message, self.file, self.line = message, file, line

    def __str__(self) -> str:
        loc = _place(self.file, self.line)
        return f"{loc}: {self.message}" if loc else self.message

    def __repr__(self) -> str:
        return f"RulesWarning({str(self)!r})"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "message": self.message}
