"""Short text forms of event values, shared by the kinds' trace renderings
(vigil.events.kinds) and the trace views (vigil.cli.trace_views)."""
from __future__ import annotations

import errno as _errno
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def errno_name(ret: int) -> str:
    """'ENOENT' for -2; '' for a success."""
    return _errno.errorcode.get(-ret, str(-ret)) if ret < 0 else ""


def ret_text(ret) -> str:
    """A syscall result: the number on success, the errno name on failure."""
    return str(ret) if ret is None or ret >= 0 else errno_name(ret)


def one_line(s: str) -> str:
    """``s`` with its control characters escaped (\\n, \\t, \\r, \\xNN), so
    that an argv or a path holding a newline stays on its row."""
    if not _CONTROL.search(s):
        return s
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), s)


def open_flags(flags) -> str:
    """Open flags by name (O_RDONLY|O_CLOEXEC), as Falco's evt.arg.flags spells them."""
    if flags is None:
        return "-"
    from vigil.rules.fields.flags import render_open_flags   # the one table of the bits
    return render_open_flags(flags)


def hostport(addr, port) -> str:
    if addr is None:
        return "-"
    if ":" in addr:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def args_text(ev) -> str:
    """The command line of an event's process, ' ...' when it was cut."""
    a = ev.args if ev.args is not None else (ev.proc.args if ev.proc else [])
    s = " ".join(a)
    return s + (" ..." if ev.args_truncated else "")
