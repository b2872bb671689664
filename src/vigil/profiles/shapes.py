"""How observed values are folded so that profiles stay small and lookups flat.

* **Paths**: a component that looks generated (four digits or more, or a long
  hex run: pids, timestamps, uuids, Kubernetes' ``..2024_01_01_...`` secret
  dirs) becomes ``*``; the folded path is a plain string, so checking it is one
  set lookup plus one per parent directory (:func:`covered`), whatever the
  profile's size.  A directory with more than ``fold_after`` distinct entries
  learned becomes a prefix (``/usr/lib/python3/``: anything below it), except
  the profiling prefixes themselves (``/etc`` stays file by file).
* **Arguments**: an exec's argv after argv[0] as a shape: options kept (up to
  ``=``), numbers ``<n>``, paths ``<path>``, other words ``<s>``; at most
  ``ARGS_SHAPE_MAX`` tokens.
"""
from __future__ import annotations

import re

ARGS_SHAPE_MAX = 8
_VOLATILE = re.compile(r"(?<=/)(?:[^/]*\d{4,}[^/]*|[^/]*[0-9a-f]{12,}[^/]*)(?=/|$)")
_NUM = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


def fold_path(path: str) -> str:
    """The profile form of an absolute path (volatile components -> ``*``)."""
    return _VOLATILE.sub("*", path) if path else path


def covered(folded: str, exact, prefixes) -> bool:
    """Is a folded path learned: itself, or below a learned prefix (``dir/``)?
    One lookup per path component."""
    if folded in exact:
        return True
    if not prefixes:
        return False
    i = folded.rfind("/")
    while i > 0:
        if folded[:i + 1] in prefixes:
            return True
        i = folded.rfind("/", 0, i)
    return False


def under_prefixes(path: str, prefixes: tuple) -> bool:
    """Is path below one of the profiling prefixes (``/etc`` covers ``/etc/x``)?"""
    for p in prefixes:
        if path.startswith(p) and (len(path) == len(p) or path[len(p)] == "/"
                                   or p.endswith("/")):
            return True
    return False


def arg_shape(args) -> str:
    """The shape of argv[1:] (see the module doc), as one string."""
    out = []
    for a in list(args or ())[1:ARGS_SHAPE_MAX + 1]:
        a = str(a)
        if a.startswith("-") and len(a) > 1 and not _NUM.match(a):
            name, eq, _ = a.partition("=")
            out.append(name + ("=*" if eq else ""))
        elif _NUM.match(a):
            out.append("<n>")
        elif "/" in a:
            out.append("<path>")
        else:
            out.append("<s>")
    if len(args or ()) > ARGS_SHAPE_MAX + 1:
        out.append("...")
    return " ".join(out)


def parent_dir(folded: str) -> str:
    """``/a/b/c`` -> ``/a/b/`` (the prefix form of its directory)."""
    return folded[:folded.rfind("/") + 1] or "/"


__all__ = ["fold_path", "covered", "under_prefixes", "arg_shape", "parent_dir", "ARGS_SHAPE_MAX"]
