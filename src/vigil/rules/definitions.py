"""What a rules file defines, as loaded: lists, macros, rules and their
exceptions, and the pieces (chunks) of appended conditions."""
from __future__ import annotations

from typing import List


class ListDef:
    __slots__ = ("name", "items", "file", "line", "used")

    def __init__(self, name, items, file, line):
        self.name, self.items, self.file, self.line = name, list(items), file, line
        self.used = False


class Chunk:
    """A piece of a (possibly appended) condition and where it came from."""
    __slots__ = ("offset", "file", "line")

    def __init__(self, offset, file, line):
        self.offset, self.file, self.line = offset, file, line


class MacroDef:
    __slots__ = ("name", "condition", "chunks", "file", "line", "used")

    def __init__(self, name, condition, file, line, cond_line):
        self.name, self.condition, self.file, self.line = name, condition, file, line
        self.chunks = [Chunk(0, file, cond_line)]
        self.used = False


class ExceptionDef:
    __slots__ = ("name", "fields", "comps", "values", "file", "line")

    def __init__(self, name, fields, comps, values, file, line):
        self.name, self.fields, self.comps, self.values = name, fields, comps, values
        self.file, self.line = file, line

    @property
    def single(self) -> bool:
        return isinstance(self.fields, str)


class RuleDef:
    __slots__ = ("name", "condition", "chunks", "output", "desc", "priority", "enabled", "tags",
                 "exceptions", "source", "skip_if_unknown_filter", "warn_evttypes", "file",
                 "line", "output_line", "order", "enforce", "enforce_line")

    def __init__(self, name, file, line):
        self.name, self.file, self.line = name, file, line
        self.condition = ""
        self.chunks: List[Chunk] = []
        self.output = ""
        self.desc = ""
        self.priority = "debug"
        self.enabled = True
        self.tags: list = []
        self.exceptions: List[ExceptionDef] = []
        self.source = "syscall"
        self.skip_if_unknown_filter = False
        self.warn_evttypes = True
        self.output_line = line
        self.order = 0
        self.enforce = ""          # "kill": the matched process is killed (rules/enforce_hint.py)
        self.enforce_line = line
