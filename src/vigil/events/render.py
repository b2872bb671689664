"""Short text forms of event values, shared by the kinds' trace renderings
(vigil.events.kinds) and the trace views (vigil.cli.trace_views)."""
from __future__ import annotations

import errno as _errno


def errno_name(ret: int) -> str:
    """'ENOENT' for -2; '' for a success."""
    return _errno.errorcode.get(-ret, str(-ret)) if ret < 0 else ""


def ret_text(ret) -> str:
    """A syscall result: the number on success, the errno name on failure."""
    return str(ret) if ret is None or ret >= 0 else errno_name(ret)


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
