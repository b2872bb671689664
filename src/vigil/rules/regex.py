"""The rules' `regex` operator: RE2, as Falco has it.

RE2 matches in time linear in the text (no backtracking: a pattern with
nested quantifiers cannot stall the pipeline) and has no backreferences or
lookaround; a pattern RE2 refuses is a rules error.  Like Falco, the whole
value must match; `.` also matches a newline.
"""
from __future__ import annotations

from typing import Callable

import re2

_OPTIONS = re2.Options()
_OPTIONS.dot_nl = True
_OPTIONS.log_errors = False         # the error is the rules error, not a line on stderr


def compile_regex(pattern: str) -> Callable:
    """``fullmatch(text)`` for ``pattern``; ValueError saying why RE2 refuses it."""
    try:
        return re2.compile(pattern, _OPTIONS).fullmatch
    except re2.error as e:
        why = e.args[0] if e.args else e
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        raise ValueError(f"invalid regular expression '{pattern}' (RE2 syntax): {why}") from None
    except (TypeError, UnicodeError) as e:
        raise ValueError(f"invalid regular expression '{pattern}': {e}") from None


__all__ = ["compile_regex"]
