"""The one error every configuration mistake raises."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad key or value: ``file:line: key.path: what is wrong``.

    ``key`` is the key path the message names; ``at`` the key path whose line
    is reported (an unknown key is named by its section but found at its own
    line).  ``file`` and ``line`` are filled in by :meth:`located` once the
    error reaches the code that knows where the configuration came from.
    """

    def __init__(self, msg: str, file: str = "", line: int = 0, key: tuple = (),
                 at: tuple = ()):
        self.msg = msg
        self.file = file
        self.line = line
        self.key = tuple(key)
        self.at = tuple(at) or self.key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else "")
        key = f"{'.'.join(map(str, self.key))}: " if self.key else ""
        return where + key + self.msg

    def located(self, file: str, line: int) -> "ConfigError":
        return ConfigError(self.msg, file, line, self.key, self.at)


__all__ = ["ConfigError"]
