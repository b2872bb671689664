"""Which loaded rules run, chosen on the command line as Falco's ``-T``,
``-t`` and ``-D`` choose them:

* ``-T TAG``: rules with this tag are turned off;
* ``-t TAG``: only rules with this tag run (every other rule is turned off;
  a rule the files disable stays off);
* ``-D PATTERN``: rules whose name contains PATTERN are turned off; a pattern
  with ``*``, ``?`` or ``[`` is a shell-style wildcard over the whole name.

Each is repeatable; ``-t`` cannot be mixed with ``-T`` or ``-D`` (as in
Falco).  Tags compare exactly; names as written.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class RuleSelection:
    disable_tags: tuple = ()
    only_tags: tuple = ()
    disable_names: tuple = ()

    def __post_init__(self):
        if self.only_tags and (self.disable_tags or self.disable_names):
            raise ValueError("-t cannot be mixed with -T or -D")

    def __bool__(self) -> bool:
        return bool(self.disable_tags or self.only_tags or self.disable_names)

    def keeps(self, name: str, tags) -> bool:
        """Whether a rule with this name and these tags may run."""
        tags = set(tags or ())
        if self.only_tags:
            return bool(tags & set(self.only_tags))
        if tags & set(self.disable_tags):
            return False
        return not any(_name_matches(p, name) for p in self.disable_names)


def _name_matches(pattern: str, name: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


__all__ = ["RuleSelection"]
