"""evt.* fields: the event itself (type, time, result, syscall arguments), and dns.*."""
from __future__ import annotations

import datetime as _dt
import errno as _errno
import time as _time

from vigil.alerts.alert import HOSTNAME
from vigil.events import Kind
from vigil.rules.fields.base import FAMILIES, Extractor, define, safe
from vigil.rules.fields.fd import fd_class, sock_name
from vigil.rules.fields.flags import (BPF_COMMANDS, CHMOD_MODES, CLONE_FLAGS, O_ACCMODE, O_CREAT,
                                      O_CREATES, O_RDWR, O_TRUNC, O_WRONLY, PTRACE_REQUESTS,
                                      UFFD_FLAGS, render_bits, render_open_flags)
from vigil.rules.fields.user import user_name
from vigil.rules.fields.kinds import CATEGORY, KIND_TYPES


def evt_type(ev) -> str:
    names = KIND_TYPES.get(ev.kind, ())
    sc = ev.syscall
    if sc is not None and sc in names:
        return sc
    return names[0] if names else ev.type


def _local_time(ns, with_date=False, nanos=True):
    secs, frac = divmod(int(ns), 1_000_000_000)
    t = _time.localtime(secs)
    base = _time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", t)
    return f"{base}.{frac:09d}" if nanos else base


def _iso(ns):
    secs, frac = divmod(int(ns), 1_000_000_000)
    base = _dt.datetime.fromtimestamp(secs, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def render_time(v):
    return _local_time(v)


def _rawres(ev):
    if ev.ret is not None:
        return ev.ret
    k = ev.kind
    if k is Kind.DUP and ev.newfd is not None:
        return ev.newfd
    if k is Kind.FORK and ev.child_pid is not None:
        return ev.child_pid
    if k is Kind.EXIT:
        return None
    return 0


def _res(ev):
    r = _rawres(ev)
    if r is None:
        return None
    if r >= 0:
        return "SUCCESS"
    return _errno.errorcode.get(-r, str(r))


def _failed(ev):
    r = _rawres(ev)
    return None if r is None else r < 0


def _open_flags(ev):
    if ev.kind is not Kind.OPEN:
        return None
    f = ev.flags
    if f is None:
        f = 0
    if ev.syscall == "creat":
        f |= O_CREAT | O_WRONLY | O_TRUNC
    return f


def _is_open_read(ev, cx):
    f = _open_flags(ev)
    if f is None:
        return False
    return (f & O_ACCMODE) in (0, O_RDWR)


def _is_open_write(ev, cx):
    f = _open_flags(ev)
    if f is None:
        return False
    return (f & O_ACCMODE) in (O_WRONLY, O_RDWR)


def _is_open_create(ev, cx):
    f = _open_flags(ev)
    if f is None:
        return False
    return bool(f & O_CREATES) and (ev.ret is None or ev.ret >= 0)


def _is_open_exec(ev, cx):
    f = _open_flags(ev)
    if f is None or not (f & O_CREATES):
        return False
    return bool((ev.mode or 0) & 0o111)


_ARG_PATH_NAMES = {
    "name": (Kind.OPEN, Kind.MEMFD, Kind.UNLINK, Kind.MODULE),
    "path": (Kind.UNLINK, Kind.MKDIR, Kind.CHMOD, Kind.OPEN),
    "pathname": (Kind.OPEN, Kind.UNLINK, Kind.MKDIR),
    "filename": (Kind.CHMOD, Kind.OPEN, Kind.EXEC),
    "oldpath": (Kind.RENAME, Kind.LINK),
    "newpath": (Kind.RENAME, Kind.LINK),
    "target": (Kind.SYMLINK,),
    "linkpath": (Kind.SYMLINK,),
}


# evt.arg.<name> / evt.rawarg.<name>: which argument a name stands for is decided
# once, when the field is resolved, not on every event.
_ARG_TEXT = {  # the same for evt.arg and evt.rawarg
    "tuple": lambda ev, cx: sock_name(ev, fd_class(ev)),
    "addr": lambda ev, cx: sock_name(ev, fd_class(ev)),
    "cwd": lambda ev, cx: ev.cwd,
    "exe": lambda ev, cx: ev.exe,
    "args": lambda ev, cx: (None if ev.args is None else " ".join(ev.args[1:])) if ev.kind is Kind.EXEC
    else None,
    # prctl (a rename): Falco's option and arg2_str, and vigil's old/new names
    "option": lambda ev, cx: "PR_SET_NAME" if ev.kind is Kind.PRCTL else None,
    "arg2_str": lambda ev, cx: ev.new_name if ev.kind is Kind.PRCTL else None,
    "new_name": lambda ev, cx: ev.new_name if ev.kind is Kind.PRCTL else None,
    "old_name": lambda ev, cx: ev.old_name if ev.kind is Kind.PRCTL else None,
}


def _arg_fd(ev, cx):
    if ev.fd is not None:
        return ev.fd
    return ev.ret if ev.kind in (Kind.OPEN, Kind.ACCEPT) else None


_ARG_NUM = {  # evt.rawarg gives the number; evt.arg renders it (_ARG_SHOWN, else str)
    "flags": lambda ev, cx: _open_flags(ev) if ev.kind is Kind.OPEN else ev.flags,
    "res": lambda ev, cx: _rawres(ev),
    "fd": _arg_fd,
    "oldfd": _arg_fd,
    "newfd": lambda ev, cx: ev.newfd,
    "mode": lambda ev, cx: ev.mode,
    "request": lambda ev, cx: ev.request,
    "pid": lambda ev, cx: ev.target_pid if ev.kind is Kind.PTRACE else ev.child_pid if ev.kind is Kind.FORK
    else None,
    "uid": lambda ev, cx: ev.new_uid,
    "status": lambda ev, cx: ev.exit_code,
    "domain": lambda ev, cx: ev.family if ev.kind is Kind.SOCKET else None,
    "type": lambda ev, cx: ev.sock_type,
    "cmd": lambda ev, cx: ev.cmd,
    "nstype": lambda ev, cx: ev.nstype,
}

# kinds whose mode argument is a chmod mode (Falco renders its bits by name)
_CHMOD_KINDS = (Kind.CHMOD, Kind.FCHMOD)


def _arg_flags_text(ev, cx):
    k = ev.kind
    if k is Kind.OPEN:
        return render_open_flags(_open_flags(ev))
    f = ev.flags
    if f is None:
        return None
    if k is Kind.UNSHARE:
        return render_bits(f, CLONE_FLAGS)
    if k is Kind.USERFAULTFD:
        return render_bits(f, UFFD_FLAGS)
    return str(f)


def _arg_mode_text(ev, cx):
    m = ev.mode
    if m is None:
        return None
    if ev.kind in _CHMOD_KINDS:
        return render_bits(m, CHMOD_MODES)
    return "0%o" % m


def _arg_cmd_text(ev, cx):
    c = ev.cmd
    return None if c is None else BPF_COMMANDS.get(c, str(c))


def _arg_nstype_text(ev, cx):
    n = ev.nstype
    if n is None:
        return None
    return render_bits(n, CLONE_FLAGS) if n else "0"


def _arg_uid(ev, cx):
    """setuid's uid as Falco shows it, the user's name; its number matches too
    (vigil's own rules compare it with numbers)."""
    u = ev.new_uid
    if u is None:
        return None
    name = user_name(ev, u)
    return [name, str(u)] if name else [str(u)]


def _arg_request_text(ev, cx):
    r = ev.request
    return None if r is None else PTRACE_REQUESTS.get(r, str(r))


_ARG_SHOWN = {"flags": _arg_flags_text, "mode": _arg_mode_text, "request": _arg_request_text,
              "cmd": _arg_cmd_text, "nstype": _arg_nstype_text}


def _make_evt_arg(sub, raw):
    if sub in _ARG_PATH_NAMES:
        kinds = _ARG_PATH_NAMES[sub]
        second = sub in ("newpath", "linkpath")

        def path(ev, cx):
            k = ev.kind
            if k not in kinds:
                return None
            if k is Kind.EXEC:
                return ev.exe
            return ev.path2 if second else ev.path
        return safe(path)
    get = _ARG_TEXT.get(sub) or (_ARG_NUM.get(sub) if raw else _ARG_SHOWN.get(sub))
    if get is not None:
        return safe(get)
    num = _ARG_NUM.get(sub)
    if num is None:
        return lambda ev, cx: None

    def text(ev, cx):
        v = num(ev, cx)
        return None if v is None else str(v)
    return safe(text)


def _evt_args(ev, cx):
    parts = []
    r = _rawres(ev)
    if r is not None:
        parts.append(f"res={r}")
    for name, val in (("fd", ev.fd), ("name", ev.path), ("path2", ev.path2),
                      ("flags", _arg_flags_text(ev, cx)), ("mode", _arg_mode_text(ev, cx)),
                      ("tuple", sock_name(ev, fd_class(ev)) if ev.family else None),
                      ("query", ev.query), ("request", _arg_request_text(ev, cx)),
                      ("pid", ev.target_pid), ("uid", ev.new_uid), ("exe", ev.exe),
                      ("status", ev.exit_code),
                      ("domain", ev.family if ev.kind is Kind.SOCKET else None),
                      ("type", ev.sock_type), ("cmd", _arg_cmd_text(ev, cx)),
                      ("nstype", _arg_nstype_text(ev, cx))):
        if val is not None:
            parts.append(f"{name}={val}")
    return " ".join(parts)


def _abspath(ev, cx):
    return ev.path


def _open_type(ev, cx):
    sc = ev.syscall
    return sc if sc in _OPEN_NAMES else "openat"


_OPEN_NAMES = frozenset(KIND_TYPES[Kind.OPEN])


def _open_is_read(ev, cx):
    f = ev.flags
    if ev.syscall == "creat":
        return False
    return f is None or (f & O_ACCMODE) in (0, O_RDWR)


def _open_is_write(ev, cx):
    f = ev.flags
    if ev.syscall == "creat":
        return True
    return f is not None and (f & O_ACCMODE) in (O_WRONLY, O_RDWR)


define("evt.type", "str", lambda ev, cx: evt_type(ev), fast={Kind.OPEN: _open_type})
define("evt.num", "int", lambda ev, cx: cx.evnum if cx is not None else None)
define("evt.time", "abstime", lambda ev, cx: ev.time, render=render_time, inline={None: "ev.time"})
define("evt.time.s", "str", safe(lambda ev, cx: _local_time(ev.time, nanos=False)))
define("evt.time.iso8601", "str", safe(lambda ev, cx: _iso(ev.time)))
define("evt.datetime", "str", safe(lambda ev, cx: _local_time(ev.time, with_date=True)))
define("evt.datetime.s", "str", safe(lambda ev, cx: _local_time(ev.time, with_date=True, nanos=False)))
define("evt.rawtime", "int", lambda ev, cx: ev.time, inline={None: "ev.time"})
define("evt.rawtime.s", "int", safe(lambda ev, cx: ev.time // 1_000_000_000))
define("evt.rawtime.ns", "int", safe(lambda ev, cx: ev.time % 1_000_000_000))
define("evt.dir", "str", lambda ev, cx: ">" if ev.kind is Kind.PTRACE else "<")
define("evt.res", "str", safe(lambda ev, cx: _res(ev)))
define("evt.rawres", "int", safe(lambda ev, cx: _rawres(ev)))
define("evt.failed", "bool", safe(lambda ev, cx: _failed(ev)))
define("evt.args", "str", safe(_evt_args))
define("evt.category", "str", lambda ev, cx: CATEGORY.get(ev.kind))
define("evt.hostname", "str", lambda ev, cx: HOSTNAME)
define("evt.source", "str", lambda ev, cx: "syscall")
define("evt.is_async", "bool", lambda ev, cx: False)
define("evt.is_open_read", "bool", safe(_is_open_read), fast={Kind.OPEN: _open_is_read})
define("evt.is_open_write", "bool", safe(_is_open_write), fast={Kind.OPEN: _open_is_write})
define("evt.is_open_exec", "bool", safe(_is_open_exec))
define("evt.is_open_create", "bool", safe(_is_open_create))
define("evt.abspath", "str", _abspath)
define("evt.cpu", "int", lambda ev, cx: None)
define("evt.buffer", "str", lambda ev, cx: None)
define("evt.buflen", "int", lambda ev, cx: None)
define("evt.latency", "int", lambda ev, cx: None)
define("evt.pluginname", "str", lambda ev, cx: None)

def _evt_arg(name, sub):
    if sub == "uid":
        return Extractor(name, "str", safe(_arg_uid), multi=True)
    return Extractor(name, "str", _make_evt_arg(sub, raw=False))


FAMILIES["evt.arg."] = _evt_arg
FAMILIES["evt.rawarg."] = lambda name, sub: Extractor(name, "rawarg", _make_evt_arg(sub, raw=True))

# vigil extras (DNS events have no Falco equivalent)
define("dns.query", "str", lambda ev, cx: ev.query)
define("dns.qtype", "str", lambda ev, cx: ev.qtype)
