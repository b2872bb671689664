"""Falco field names mapped onto vigil events.

Every field is a :class:`FieldDef`: a name, a value type, and an extractor
``fn(ev, cx)`` returning the value or ``None`` when it is not available (Falco
prints ``<NA>``).  ``cx`` is the evaluation context (the RuleEngine): it has
``proctable`` (a ProcessTable or None), ``written_paths`` (upper-layer hook or
None) and ``evnum``.

Fields that take an argument (``proc.aname[2]``, ``k8s.pod.label[app]``) have a
``make(arg)`` factory returning the extractor for that argument.  Fields that
hold several values at once (``proc.aname`` without an index: every ancestor)
have ``multi=True`` and return a list; comparisons on them are true when any
element matches.

Socket convention: an event's ``saddr/sport`` is the local end of the socket and
``daddr/dport`` the remote end.  For connect/sendto (and close/dup) the local
end is the client; for accept the local end is the server; for bind/listen only
the server (local) end exists.
"""
from __future__ import annotations

import base64
import datetime as _dt
import errno as _errno
import functools
import grp
import ipaddress
import os
import pwd
import time as _time
from typing import Optional

from vigil.alerts.alert import HOSTNAME
from vigil.events import Kind

# --------------------------------------------------------------- event types

# The Falco event type names each vigil kind can stand for.  The first name is
# the default when the event does not say which syscall produced it.
KIND_TYPES = {
    Kind.EXEC: ("execve", "execveat"),
    Kind.EXIT: ("procexit",),
    Kind.FORK: ("clone", "clone3", "fork", "vfork"),
    Kind.OPEN: ("openat", "open", "openat2", "creat"),
    Kind.CONNECT: ("connect",),
    Kind.ACCEPT: ("accept4", "accept"),
    Kind.LISTEN: ("listen",),
    Kind.BIND: ("bind",),
    Kind.CLOSE: ("close",),
    Kind.DNS: ("sendto", "sendmsg", "sendmmsg"),
    Kind.UNLINK: ("unlinkat", "unlink", "rmdir"),
    Kind.RENAME: ("renameat2", "rename", "renameat"),
    Kind.LINK: ("linkat", "link"),
    Kind.SYMLINK: ("symlinkat", "symlink"),
    Kind.MKDIR: ("mkdirat", "mkdir"),
    Kind.CHMOD: ("fchmodat", "chmod", "fchmod"),
    Kind.PTRACE: ("ptrace",),
    Kind.MODULE: ("finit_module", "init_module"),
    Kind.DUP: ("dup2", "dup", "dup3"),
    Kind.MEMFD: ("memfd_create",),
    Kind.SETUID: ("setuid",),
    Kind.CGROUP_MKDIR: (),
    Kind.CGROUP_RMDIR: (),
}
KIND_TYPE_SETS = {k: frozenset(v) for k, v in KIND_TYPES.items()}
TYPE_TO_KIND = {name: k for k, names in KIND_TYPES.items() for name in names}
PRODUCED_TYPES = frozenset(TYPE_TO_KIND)
RULE_KINDS = tuple(k for k in Kind if KIND_TYPES[k])

# evt.dir: vigil events are complete syscalls.  Falco rules look at the exit
# ("<") of most syscalls but at the enter (">") of ptrace, so a ptrace event
# answers to both directions.
KIND_DIRS = {k: frozenset(("<",)) for k in Kind}
KIND_DIRS[Kind.PTRACE] = frozenset(("<", ">"))

_CATEGORY = {
    Kind.EXEC: "process", Kind.EXIT: "process", Kind.FORK: "process", Kind.PTRACE: "process",
    Kind.OPEN: "file", Kind.CLOSE: "file", Kind.UNLINK: "file", Kind.RENAME: "file",
    Kind.LINK: "file", Kind.SYMLINK: "file", Kind.MKDIR: "file", Kind.CHMOD: "file",
    Kind.DUP: "file", Kind.MEMFD: "memory",
    Kind.CONNECT: "net", Kind.ACCEPT: "net", Kind.LISTEN: "net", Kind.BIND: "net",
    Kind.DNS: "net", Kind.MODULE: "system", Kind.SETUID: "user",
    Kind.CGROUP_MKDIR: "other", Kind.CGROUP_RMDIR: "other",
}


def evt_type(ev) -> str:
    names = KIND_TYPES.get(ev.kind, ())
    sc = ev.syscall
    if sc is not None and sc in names:
        return sc
    return names[0] if names else ev.type


# --------------------------------------------------------------- flags tables

O_FLAGS = (  # linux x86_64
    (0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o10000, "O_DSYNC"), (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"), (0o100000, "O_LARGEFILE"), (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"), (0o1000000, "O_NOATIME"), (0o2000000, "O_CLOEXEC"),
    (0o4000000, "O_SYNC"), (0o10000000, "O_PATH"), (0o20000000, "O_TMPFILE"),
)
O_ACCMODE = 3
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_DIRECTORY, O_TMPFILE = 1, 2, 0o100, 0o1000, 0o200000, 0o20000000
_O_TMPFILE_BITS = O_TMPFILE & ~O_DIRECTORY
_O_CREATES = O_CREAT | _O_TMPFILE_BITS           # opens that create a file
_O_DIR_MASK = O_DIRECTORY | _O_TMPFILE_BITS      # flags & mask == O_DIRECTORY: opens a directory


@functools.lru_cache(maxsize=1024)
def render_open_flags(flags: int) -> str:
    acc = flags & O_ACCMODE
    out = ["O_RDONLY" if acc == 0 else "O_WRONLY" if acc == 1 else "O_RDWR" if acc == 2 else "O_ACCMODE"]
    for bit, name in O_FLAGS:
        if flags & bit:
            out.append(name)
    return "|".join(out)


PTRACE_REQUESTS = {
    0: "PTRACE_TRACEME", 1: "PTRACE_PEEKTEXT", 2: "PTRACE_PEEKDATA", 3: "PTRACE_PEEKUSR",
    4: "PTRACE_POKETEXT", 5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSR", 7: "PTRACE_CONT",
    8: "PTRACE_KILL", 9: "PTRACE_SINGLESTEP", 12: "PTRACE_GETREGS", 13: "PTRACE_SETREGS",
    14: "PTRACE_GETFPREGS", 15: "PTRACE_SETFPREGS", 16: "PTRACE_ATTACH", 17: "PTRACE_DETACH",
    18: "PTRACE_GETFPXREGS", 19: "PTRACE_SETFPXREGS", 24: "PTRACE_SYSCALL",
    25: "PTRACE_GET_THREAD_AREA", 26: "PTRACE_SET_THREAD_AREA", 30: "PTRACE_ARCH_PRCTL",
    31: "PTRACE_SYSEMU", 32: "PTRACE_SYSEMU_SINGLESTEP", 0x4200: "PTRACE_SETOPTIONS",
    0x4201: "PTRACE_GETEVENTMSG", 0x4202: "PTRACE_GETSIGINFO", 0x4203: "PTRACE_SETSIGINFO",
    0x4204: "PTRACE_GETREGSET", 0x4205: "PTRACE_SETREGSET", 0x4206: "PTRACE_SEIZE",
    0x4207: "PTRACE_INTERRUPT", 0x4208: "PTRACE_LISTEN", 0x4209: "PTRACE_PEEKSIGINFO",
}


# --------------------------------------------------------------- definitions

class FieldDef:
    __slots__ = ("name", "type", "fn", "make", "arg", "multi", "inline", "render", "fast")

    def __init__(self, name, type_, fn=None, *, make=None, arg=None, multi=False, inline=None,
                 render=None, fast=None):
        self.fast = fast or {}      # {kind: fn(ev, cx)} specialised extractors for hot kinds
        self.name = name
        self.type = type_          # str int bool ip ipnet abstime
        self.fn = fn               # fn(ev, cx) for the argument-less form
        self.make = make           # make(arg) -> fn(ev, cx), for fields with an argument
        self.arg = arg             # None | "required" | "optional" | "index" | "index_opt"
        self.multi = multi         # argument-less form yields a list (any-match)
        self.inline = inline       # {kind or None: python expression over ev} for hot fields
        self.render = render


FIELDS: dict = {}


def _f(name, type_="str", fn=None, **kw):
    FIELDS[name] = FieldDef(name, type_, fn, **kw)


class Extractor:
    """A resolved field expression (a field with its argument, possibly transformed)."""
    __slots__ = ("key", "type", "fn", "multi", "inline", "render", "fast")

    def __init__(self, key, type_, fn, multi=False, inline=None, render=None, fast=None):
        self.key, self.type, self.fn, self.multi = key, type_, fn, multi
        self.inline, self.render = inline or {}, render
        self.fast = fast or {}

    def fn_for(self, kind):
        return self.fast.get(kind, self.fn)

    def inline_for(self, kind) -> Optional[str]:
        x = self.inline.get(kind)
        return x if x is not None else self.inline.get(None)


class UnknownField(KeyError):
    pass


class BadFieldArg(ValueError):
    pass


def _family_lookup(name):
    for prefix in ("evt.arg.", "evt.rawarg."):
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix
    return None


def lookup(name: str, arg: Optional[str] = None) -> Extractor:
    """Resolve a field name (+ argument) to an Extractor.

    Raises UnknownField for a name vigil does not know and BadFieldArg for an
    argument the field does not accept.
    """
    fd = FIELDS.get(name)
    if fd is None:
        fam = _family_lookup(name)
        if fam is None:
            raise UnknownField(name)
        if arg is not None:
            raise BadFieldArg(f"field '{name}' takes no argument")
        sub = name[len(fam):]
        if fam == "evt.arg.":
            return Extractor(name, "str", _make_evt_arg(sub, raw=False))
        return Extractor(name, "rawarg", _make_evt_arg(sub, raw=True))
    text = name if arg is None else f"{name}[{arg}]"
    if arg is None:
        if fd.arg in ("required", "index"):
            raise BadFieldArg(f"field '{name}' requires an argument, e.g. {name}[1]")
        if fd.fn is None:
            raise BadFieldArg(f"field '{name}' requires an argument")
        return Extractor(text, fd.type, fd.fn, fd.multi, fd.inline, fd.render, fd.fast)
    if fd.arg is None:
        raise BadFieldArg(f"field '{name}' does not take an argument")
    if fd.arg in ("index", "index_opt"):
        try:
            a = int(arg.strip())
        except ValueError:
            raise BadFieldArg(f"field '{name}' needs a numeric index, got [{arg}]") from None
        if a < 0:
            raise BadFieldArg(f"field '{name}' needs a non-negative index, got [{arg}]")
        return Extractor(text, fd.type, fd.make(a), False, None, fd.render)
    return Extractor(text, fd.type, fd.make(arg), False, None, fd.render)


def known(name: str) -> bool:
    return name in FIELDS or _family_lookup(name) is not None


# --------------------------------------------------------------- helpers

def _safe(fn):
    """Extractors never raise: a value that cannot be computed is missing."""
    @functools.wraps(fn)
    def wrapper(ev, cx):
        try:
            return fn(ev, cx)
        except Exception:
            return None
    return wrapper


def _args(ev):
    if ev.kind is Kind.EXEC and ev.args is not None:
        return ev.args
    p = ev.proc
    return p.args if p is not None else None


def _comm(ev):
    c = ev.comm
    if c is None and ev.proc is not None:
        return ev.proc.comm
    return c


def _exepath(ev):
    if ev.kind is Kind.EXEC and ev.exe is not None:
        return ev.exe
    p = ev.proc
    return p.exe if p is not None else None


def _proc_exe(args, exepath):
    if args:
        return args[0]
    return exepath


def _cmdline(comm, args):
    if comm is None:
        return None
    if args and len(args) > 1:
        return comm + " " + " ".join(args[1:])
    return comm


def _ppid(ev):
    if ev.ppid:
        return ev.ppid
    p = ev.proc
    return p.ppid if p is not None else None


def _parent(ev, cx):
    pt = cx.proctable if cx is not None else None
    if pt is None:
        return None
    ppid = _ppid(ev)
    if not ppid:
        return None
    return pt.ancestor(ppid, 0)


def _ancestor(ev, cx, n):
    if n == 0:
        return ev.proc
    parent = _parent(ev, cx)
    if parent is None or n == 1:
        return parent
    return cx.proctable.ancestor(parent.pid, n - 1)


def _ancestors(ev, cx):
    parent = _parent(ev, cx)
    if parent is None:
        return []
    return [parent] + cx.proctable.ancestors(parent.pid, 15)


def _tty_nr(tty):
    if tty is None:
        return None
    if isinstance(tty, int):
        return tty
    if tty == "":
        return 0
    try:
        if tty.startswith("pts"):
            m = int(tty[3:])
            return (136 << 8) | (m & 0xFF) | ((m & ~0xFF) << 12)
        if tty.startswith("tty"):
            rest = tty[3:]
            if ":" in rest:
                ma, mi = rest.split(":", 1)
                return (int(ma) << 8) | int(mi)
            return (4 << 8) | int(rest)
        return int(tty)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _user_name(uid):
    e = _user_entry(uid)
    return e.pw_name if e is not None else None


@functools.lru_cache(maxsize=4096)
def _user_entry(uid):
    try:
        return pwd.getpwuid(uid)
    except (KeyError, OverflowError, TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=4096)
def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError, TypeError, ValueError):
        return None


def _in_container(ev):
    c = ev.container
    return c is not None and not c.is_host


def _uname(ev, uid):
    if uid is None:
        return None
    if _in_container(ev):
        return "root" if uid == 0 else None
    return _user_name(uid)


def _loginuid(ev):
    lu = None
    if ev.kind is Kind.EXEC and ev.loginuid is not None:
        lu = ev.loginuid
    elif ev.proc is not None:
        lu = ev.proc.loginuid
    if lu is None:
        return None
    if lu == 0xFFFFFFFF:
        return -1
    return lu


# --------------------------------------------------------------- evt.*

def _local_time(ns, with_date=False, nanos=True):
    secs, frac = divmod(int(ns), 1_000_000_000)
    t = _time.localtime(secs)
    base = _time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", t)
    return f"{base}.{frac:09d}" if nanos else base


def _iso(ns):
    secs, frac = divmod(int(ns), 1_000_000_000)
    base = _dt.datetime.fromtimestamp(secs, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def _render_time(v):
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
    return bool(f & _O_CREATES) and (ev.ret is None or ev.ret >= 0)


def _is_open_exec(ev, cx):
    f = _open_flags(ev)
    if f is None or not (f & _O_CREATES):
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
    "tuple": lambda ev, cx: _sock_name(ev, _fd_class(ev)),
    "addr": lambda ev, cx: _sock_name(ev, _fd_class(ev)),
    "cwd": lambda ev, cx: ev.cwd,
    "exe": lambda ev, cx: ev.exe,
    "args": lambda ev, cx: (None if ev.args is None else " ".join(ev.args[1:])) if ev.kind is Kind.EXEC
    else None,
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
}


def _arg_flags_text(ev, cx):
    if ev.kind is Kind.OPEN:
        return render_open_flags(_open_flags(ev))
    f = ev.flags
    return None if f is None else str(f)


def _arg_mode_text(ev, cx):
    m = ev.mode
    return None if m is None else "0%o" % m


def _arg_request_text(ev, cx):
    r = ev.request
    return None if r is None else PTRACE_REQUESTS.get(r, str(r))


_ARG_SHOWN = {"flags": _arg_flags_text, "mode": _arg_mode_text, "request": _arg_request_text}


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
        return _safe(path)
    get = _ARG_TEXT.get(sub) or (_ARG_NUM.get(sub) if raw else _ARG_SHOWN.get(sub))
    if get is not None:
        return _safe(get)
    num = _ARG_NUM.get(sub)
    if num is None:
        return lambda ev, cx: None

    def text(ev, cx):
        v = num(ev, cx)
        return None if v is None else str(v)
    return _safe(text)


def _evt_args(ev, cx):
    parts = []
    r = _rawres(ev)
    if r is not None:
        parts.append(f"res={r}")
    for name, val in (("fd", ev.fd), ("name", ev.path), ("path2", ev.path2),
                      ("flags", render_open_flags(_open_flags(ev)) if ev.kind is Kind.OPEN else ev.flags),
                      ("mode", None if ev.mode is None else "0%o" % ev.mode),
                      ("tuple", _sock_name(ev, _fd_class(ev)) if ev.family else None),
                      ("query", ev.query), ("request", PTRACE_REQUESTS.get(ev.request, ev.request)
                                            if ev.request is not None else None),
                      ("pid", ev.target_pid), ("uid", ev.new_uid), ("exe", ev.exe),
                      ("status", ev.exit_code)):
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


def _open_typechar(ev, cx):
    f = ev.flags
    if f and (f & _O_DIR_MASK) == O_DIRECTORY:
        return "d"
    return "f"


def _open_directory(ev, cx):
    p = ev.path
    if not p:
        return None
    f = ev.flags
    if f and (f & _O_DIR_MASK) == O_DIRECTORY:
        return p
    i = p.rfind("/")
    if i < 0:
        return None
    return p[:i] or "/"


def _open_filename(ev, cx):
    p = ev.path
    if not p:
        return None
    return p[p.rfind("/") + 1:] or None


_f("evt.type", "str", lambda ev, cx: evt_type(ev), fast={Kind.OPEN: _open_type})
_f("evt.num", "int", lambda ev, cx: cx.evnum if cx is not None else None)
_f("evt.time", "abstime", lambda ev, cx: ev.time, render=_render_time, inline={None: "ev.time"})
_f("evt.time.s", "str", _safe(lambda ev, cx: _local_time(ev.time, nanos=False)))
_f("evt.time.iso8601", "str", _safe(lambda ev, cx: _iso(ev.time)))
_f("evt.datetime", "str", _safe(lambda ev, cx: _local_time(ev.time, with_date=True)))
_f("evt.datetime.s", "str", _safe(lambda ev, cx: _local_time(ev.time, with_date=True, nanos=False)))
_f("evt.rawtime", "int", lambda ev, cx: ev.time, inline={None: "ev.time"})
_f("evt.rawtime.s", "int", _safe(lambda ev, cx: ev.time // 1_000_000_000))
_f("evt.rawtime.ns", "int", _safe(lambda ev, cx: ev.time % 1_000_000_000))
_f("evt.dir", "str", lambda ev, cx: ">" if ev.kind is Kind.PTRACE else "<")
_f("evt.res", "str", _safe(lambda ev, cx: _res(ev)))
_f("evt.rawres", "int", _safe(lambda ev, cx: _rawres(ev)))
_f("evt.failed", "bool", _safe(lambda ev, cx: _failed(ev)))
_f("evt.args", "str", _safe(_evt_args))
_f("evt.category", "str", lambda ev, cx: _CATEGORY.get(ev.kind))
_f("evt.hostname", "str", lambda ev, cx: HOSTNAME)
_f("evt.source", "str", lambda ev, cx: "syscall")
_f("evt.is_async", "bool", lambda ev, cx: False)
_f("evt.is_open_read", "bool", _safe(_is_open_read), fast={Kind.OPEN: _open_is_read})
_f("evt.is_open_write", "bool", _safe(_is_open_write), fast={Kind.OPEN: _open_is_write})
_f("evt.is_open_exec", "bool", _safe(_is_open_exec))
_f("evt.is_open_create", "bool", _safe(_is_open_create))
_f("evt.abspath", "str", _abspath)
_f("evt.cpu", "int", lambda ev, cx: None)
_f("evt.buffer", "str", lambda ev, cx: None)
_f("evt.buflen", "int", lambda ev, cx: None)
_f("evt.latency", "int", lambda ev, cx: None)
_f("evt.pluginname", "str", lambda ev, cx: None)

# --------------------------------------------------------------- proc.*

_f("proc.name", "str", lambda ev, cx: _comm(ev), inline={None: "ev.comm"})
_f("proc.exe", "str", _safe(lambda ev, cx: _proc_exe(_args(ev), _exepath(ev))))
_f("proc.exepath", "str", _safe(lambda ev, cx: _exepath(ev)))
_f("proc.args", "str", _safe(lambda ev, cx: (lambda a: None if a is None else " ".join(a[1:]))(_args(ev))))
_f("proc.cmdline", "str", _safe(lambda ev, cx: _cmdline(_comm(ev), _args(ev))))
_f("proc.exeline", "str", _safe(lambda ev, cx: (lambda a: None if not a else " ".join(a))(_args(ev))))
_f("proc.cmdnargs", "int", _safe(lambda ev, cx: (lambda a: None if a is None else max(0, len(a) - 1))(_args(ev))))
_f("proc.cmdlenargs", "int", _safe(lambda ev, cx: (lambda a: None if a is None else sum(len(x) for x in a[1:]))(_args(ev))))
_f("proc.pid", "int", lambda ev, cx: ev.pid, inline={None: "ev.pid"})
_f("proc.ppid", "int", _safe(lambda ev, cx: _ppid(ev)))
def _vpid(p):
    """pid inside the process's pid namespace; None while unknown (0)."""
    return (p.vpid or None) if p is not None else None


_f("proc.vpid", "int", _safe(lambda ev, cx: (ev.vpid if ev.kind is Kind.EXEC and ev.vpid else
                                             _vpid(ev.proc))))
_f("proc.pvpid", "int", _safe(lambda ev, cx: _vpid(_parent(ev, cx))))
_f("thread.tid", "int", lambda ev, cx: ev.tid, inline={None: "ev.tid"})
_f("thread.vtid", "int", lambda ev, cx: None)
_f("proc.sid", "int", _safe(lambda ev, cx: ev.proc.sid if ev.proc is not None else None))
_f("proc.cwd", "str", _safe(lambda ev, cx: (ev.cwd if ev.kind is Kind.EXEC and ev.cwd else
                                             (ev.proc.cwd or None) if ev.proc is not None else None)))
_f("proc.tty", "int", _safe(lambda ev, cx: _tty_nr(ev.tty if ev.kind is Kind.EXEC and ev.tty is not None
                                                   else ev.proc.tty if ev.proc is not None else None)))
_f("proc.env", "str", lambda ev, cx: None)
_f("proc.nthreads", "int", lambda ev, cx: None)
_f("proc.is_container_healthcheck", "bool", lambda ev, cx: False)
_f("proc.is_container_liveness_probe", "bool", lambda ev, cx: False)
_f("proc.is_container_readiness_probe", "bool", lambda ev, cx: False)
_f("proc.pid.ts", "int", _safe(lambda ev, cx: ev.proc.start_time if ev.proc is not None else None))


def _is_memfd(ev, cx):
    if ev.kind is Kind.EXEC and ev.exe is not None:
        return ev.exe.startswith("/memfd:")
    p = ev.proc
    return bool(p.exe_from_memfd) if p is not None else None


def _is_upper(ev, cx):
    hook = cx.written_paths if cx is not None else None
    c = ev.container
    if hook is None:
        # No write tracking: the executable's inode changed after the container
        # started, so it was written (dropped) inside the container.
        if c is None or c.is_host or not c.start_time:
            return False
        ctime = getattr(ev, "exe_ctime", None) if ev.kind is Kind.EXEC else None
        if not ctime and ev.proc is not None:
            ctime = getattr(ev.proc, "exe_ctime", 0)
        return bool(ctime) and ctime > c.start_time // 1_000_000_000
    path = _exepath(ev)
    if not path:
        return False
    cid = "host" if c is None else c.id
    if callable(hook):
        return bool(hook(cid, path))
    return (cid, path) in hook or path in hook


def _loginshellid(ev, cx):
    chain = [ev.proc] + _ancestors(ev, cx) if ev.proc is not None else _ancestors(ev, cx)
    res = None
    for p in chain:
        if p is not None and p.comm.endswith("sh"):
            res = p.pid
    return res


_f("proc.is_exe_from_memfd", "bool", _safe(_is_memfd))
_f("proc.is_exe_upper_layer", "bool", _safe(_is_upper))
_f("proc.is_exe_writable", "bool", lambda ev, cx: None)
_f("proc.loginshellid", "int", _safe(_loginshellid))


def _pfield(get):
    return _safe(lambda ev, cx: (lambda p: None if p is None else get(p))(_parent(ev, cx)))


_f("proc.pname", "str", _pfield(lambda p: p.comm))
_f("proc.pexe", "str", _pfield(lambda p: _proc_exe(p.args, p.exe)))
_f("proc.pexepath", "str", _pfield(lambda p: p.exe or None))
_f("proc.pcmdline", "str", _pfield(lambda p: p.cmdline))
_f("proc.pargs", "str", _pfield(lambda p: " ".join(p.args[1:])))


_SELF = {
    "proc.aname": lambda ev: _comm(ev),
    "proc.apid": lambda ev: ev.pid,
    "proc.aexe": lambda ev: _proc_exe(_args(ev), _exepath(ev)),
    "proc.aexepath": lambda ev: _exepath(ev),
    "proc.acmdline": lambda ev: _cmdline(_comm(ev), _args(ev)),
}
_ANC = {
    "proc.aname": lambda p: p.comm,
    "proc.apid": lambda p: p.pid,
    "proc.aexe": lambda p: _proc_exe(p.args, p.exe),
    "proc.aexepath": lambda p: p.exe or None,
    "proc.acmdline": lambda p: p.cmdline,
}


def _anc_field(name, type_):
    self_get, get = _SELF[name], _ANC[name]

    def make(n):
        if n == 0:
            return _safe(lambda ev, cx: self_get(ev))

        def fn(ev, cx):
            p = _ancestor(ev, cx, n)
            return None if p is None else get(p)
        return _safe(fn)

    def all_(ev, cx):
        return [get(p) for p in _ancestors(ev, cx)]

    _f(name, type_, _safe(all_), make=make, arg="index_opt", multi=True)


for _n, _t in (("proc.aname", "str"), ("proc.apid", "int"), ("proc.aexe", "str"),
               ("proc.aexepath", "str"), ("proc.acmdline", "str")):
    _anc_field(_n, _t)

# --------------------------------------------------------------- user/group

_f("user.uid", "int", lambda ev, cx: ev.uid, inline={None: "ev.uid"})
_f("user.name", "str", _safe(lambda ev, cx: _uname(ev, ev.uid)))
_f("user.loginuid", "int", _safe(lambda ev, cx: _loginuid(ev)))
_f("user.loginname", "str", _safe(lambda ev, cx: (lambda lu: None if lu is None or lu < 0 else _uname(ev, lu))(_loginuid(ev))))
_f("user.homedir", "str", _safe(lambda ev, cx: None if _in_container(ev) else (lambda e: e.pw_dir if e else None)(_user_entry(ev.uid))))
_f("user.shell", "str", _safe(lambda ev, cx: None if _in_container(ev) else (lambda e: e.pw_shell if e else None)(_user_entry(ev.uid))))
_f("group.gid", "int", lambda ev, cx: ev.gid, inline={None: "ev.gid"})
_f("group.name", "str", _safe(lambda ev, cx: ("root" if ev.gid == 0 else None) if _in_container(ev) else _group_name(ev.gid)))

# --------------------------------------------------------------- fd.*

_SOCK_KINDS = (Kind.CONNECT, Kind.ACCEPT, Kind.LISTEN, Kind.BIND, Kind.DNS)


def _fd_class(ev):
    """'file', 'directory', 'ipv4', 'ipv6', 'unix', other fd type string, or None."""
    k = ev.kind
    if k is Kind.OPEN:
        f = ev.flags or 0
        if (f & _O_DIR_MASK) == O_DIRECTORY:
            return "directory"
        return "file"
    if k is Kind.MEMFD:
        return "file"
    if k is Kind.DUP:
        t = ev.fd_type
        if t:
            return t
    fam = ev.family
    if fam is not None:
        if fam == "AF_INET":
            return "ipv4"
        if fam == "AF_INET6":
            return "ipv6"
        if fam == "AF_UNIX":
            return "unix"
        return "socket"
    if k in _SOCK_KINDS:
        return "ipv4" if ev.daddr or ev.saddr else None
    if k in (Kind.CLOSE, Kind.DUP) and ev.path:
        return "file"
    return None


_TYPECHAR = {"file": "f", "directory": "d", "ipv4": "4", "ipv6": "6", "unix": "u", "socket": "s",
             "pipe": "p", "event": "e", "signalfd": "s", "eventpoll": "l", "inotify": "i",
             "timerfd": "t", "netlink": "n", "bpf": "b", "memfd": "f", "userfaultfd": "u"}


def _is_inet(c):
    return c == "ipv4" or c == "ipv6"


def _endpoints(ev):
    """(client_ip, client_port, server_ip, server_port) for inet events."""
    k = ev.kind
    if k is Kind.ACCEPT:
        return ev.daddr, ev.dport, ev.saddr, ev.sport
    if k is Kind.LISTEN or k is Kind.BIND:
        return None, None, ev.saddr, ev.sport
    return ev.saddr, ev.sport, ev.daddr, ev.dport


def _sock_name(ev, c):
    """The socket's tuple for an event whose fd class (_fd_class) is `c`."""
    if c == "unix":
        return ev.daddr or ev.saddr or ev.path or None
    if not _is_inet(c):
        return None
    cip, cport, sip, sport = _endpoints(ev)
    if cip is None and cport is None:
        return f"{sip}:{sport}" if sip is not None or sport is not None else None
    return f"{cip}:{cport}->{sip}:{sport}"


def _fd_name(ev, cx):
    c = _fd_class(ev)
    if c is None:
        return None
    if not (_is_inet(c) or c == "unix"):
        return ev.path
    return _sock_name(ev, c)


def _fd_file_path(ev):
    c = _fd_class(ev)
    if c in ("file", "directory"):
        return ev.path
    return None


def _fd_directory(ev, cx):
    c = _fd_class(ev)
    if c != "file" and c != "directory":
        return None
    p = ev.path
    if not p:
        return None
    if c == "directory" and ev.kind is Kind.OPEN:
        return p
    d = os.path.dirname(p)
    return d or None


def _fd_filename(ev, cx):
    p = _fd_file_path(ev)
    if not p:
        return None
    return os.path.basename(p) or None


def _fd_num(ev, cx):
    if ev.fd is not None:
        return ev.fd
    k = ev.kind
    if k is Kind.OPEN or k is Kind.ACCEPT or k is Kind.MEMFD:
        return ev.ret
    return None


def _ip_part(which):
    def fn(ev, cx):
        if not _is_inet(_fd_class(ev)):
            return None
        return _endpoints(ev)[which]
    return _safe(fn)


def _local_remote(which):
    def fn(ev, cx):
        if not _is_inet(_fd_class(ev)):
            return None
        k = ev.kind
        if k is Kind.LISTEN or k is Kind.BIND:
            return (ev.saddr, ev.sport, None, None)[which]
        return (ev.saddr, ev.sport, ev.daddr, ev.dport)[which]
    return _safe(fn)


def _multi_ip(ev, cx):
    if not _is_inet(_fd_class(ev)):
        return []
    cip, _, sip, _ = _endpoints(ev)
    return [x for x in (cip, sip) if x is not None]


def _multi_port(ev, cx):
    if not _is_inet(_fd_class(ev)):
        return []
    _, cport, _, sport = _endpoints(ev)
    return [x for x in (cport, sport) if x is not None]


_f("fd.name", "str", _safe(_fd_name), inline={Kind.OPEN: "ev.path"})
_f("fd.nameraw", "str", _safe(_fd_name))
_f("fd.directory", "str", _safe(_fd_directory), fast={Kind.OPEN: _open_directory})
_f("fd.filename", "str", _safe(_fd_filename), fast={Kind.OPEN: _open_filename})
_f("fd.num", "int", _safe(_fd_num), inline={Kind.OPEN: "ev.ret"})
_f("fd.type", "str", _safe(lambda ev, cx: _fd_class(ev)))
def _fd_typechar(ev, cx):
    c = _fd_class(ev)
    return _TYPECHAR.get(c, "o") if c else None


_f("fd.typechar", "str", _safe(_fd_typechar),
   fast={Kind.OPEN: _open_typechar})
_f("fd.l4proto", "str", _safe(lambda ev, cx: (ev.proto or None) if _is_inet(_fd_class(ev)) else None))
_f("fd.sockfamily", "str", _safe(lambda ev, cx: {"ipv4": "ip", "ipv6": "ip", "unix": "unix"}.get(_fd_class(ev))))
_f("fd.is_server", "bool", _safe(lambda ev, cx: ev.kind in (Kind.ACCEPT, Kind.LISTEN, Kind.BIND) if _fd_class(ev) else None))
_f("fd.cip", "ip", _ip_part(0))
_f("fd.cport", "int", _ip_part(1))
_f("fd.sip", "ip", _ip_part(2))
_f("fd.sport", "int", _ip_part(3))
_f("fd.lip", "ip", _local_remote(0))
_f("fd.lport", "int", _local_remote(1))
_f("fd.rip", "ip", _local_remote(2))
_f("fd.rport", "int", _local_remote(3))
_f("fd.dip", "ip", _ip_part(2))
_f("fd.dport", "int", _ip_part(3))
_f("fd.ip", "ip", _safe(_multi_ip), multi=True)
_f("fd.port", "int", _safe(_multi_port), multi=True)
_f("fd.net", "ipnet", _safe(_multi_ip), multi=True)
_f("fd.cnet", "ipnet", _ip_part(0))
_f("fd.snet", "ipnet", _ip_part(2))
_f("fd.lnet", "ipnet", _local_remote(0))
_f("fd.rnet", "ipnet", _local_remote(2))
_f("fd.ino", "int", lambda ev, cx: None)
_f("fd.dev", "int", lambda ev, cx: None)
_f("fd.uid", "str", lambda ev, cx: None)

# fs.path.*: the paths a filesystem syscall works on.
_ONE_PATH = (Kind.OPEN, Kind.UNLINK, Kind.MKDIR, Kind.CHMOD, Kind.MEMFD, Kind.MODULE)
_TWO_PATH = (Kind.RENAME, Kind.LINK, Kind.SYMLINK)
_f("fs.path.name", "str", lambda ev, cx: ev.path if ev.kind in _ONE_PATH else None)
_f("fs.path.nameraw", "str", lambda ev, cx: ev.path if ev.kind in _ONE_PATH else None)
_f("fs.path.source", "str", lambda ev, cx: ev.path if ev.kind in _TWO_PATH else None)
_f("fs.path.sourceraw", "str", lambda ev, cx: ev.path if ev.kind in _TWO_PATH else None)
_f("fs.path.target", "str", lambda ev, cx: ev.path2 if ev.kind in _TWO_PATH else None)
_f("fs.path.targetraw", "str", lambda ev, cx: ev.path2 if ev.kind in _TWO_PATH else None)

# vigil extras (DNS events have no Falco equivalent)
_f("dns.query", "str", lambda ev, cx: ev.query)
_f("dns.qtype", "str", lambda ev, cx: ev.qtype)

# --------------------------------------------------------------- container/k8s


def _cont(get, host=None):
    def fn(ev, cx):
        c = ev.container
        if c is None or c.is_host:
            return host
        return get(c)
    return _safe(fn)


def _cid(ev, cx):
    c = ev.container
    return "host" if c is None else c.short_id


def _labels(c):
    if not c.labels:
        return None
    return ", ".join(f"{k}:{v}" for k, v in c.labels.items())


def _label(arg):
    return _cont(lambda c: c.labels.get(arg))


def _container_info(ev, cx):
    c = ev.container
    if c is None or c.is_host:
        return "container_id=host container_name=host"
    return f"container_id={c.short_id} container_name={c.name or '<NA>'}"


_f("container.id", "str", _safe(_cid))
_f("container.full_id", "str", _safe(lambda ev, cx: "host" if ev.container is None else ev.container.id))
_f("container.name", "str", _cont(lambda c: c.name or None, host="host"))
_f("container.image", "str", _cont(lambda c: c.image or None))
_f("container.image.repository", "str", _cont(lambda c: c.image_repository or None))
_f("container.image.tag", "str", _cont(lambda c: c.image_tag or None))
_f("container.image.digest", "str", _cont(lambda c: c.image_digest or None))
_f("container.image.id", "str", lambda ev, cx: None)
_f("container.privileged", "bool", _cont(lambda c: c.privileged))
_f("container.type", "str", _cont(lambda c: c.runtime or None))
_f("container.start_ts", "abstime", _cont(lambda c: c.start_time or None), render=_render_time)
_f("container.duration", "int", lambda ev, cx: None)
_f("container.info", "str", _safe(_container_info))
_f("container.healthcheck", "str", lambda ev, cx: None)
_f("container.liveness_probe", "str", lambda ev, cx: None)
_f("container.readiness_probe", "str", lambda ev, cx: None)
_f("container.mounts", "str", lambda ev, cx: None)
_f("container.label", "str", None, make=lambda a: _label(a), arg="required")
_f("k8s.ns.name", "str", _cont(lambda c: c.namespace or None))
_f("k8s.pod.name", "str", _cont(lambda c: c.pod_name or None))
_f("k8s.pod.uid", "str", _cont(lambda c: c.pod_uid or None))
_f("k8s.pod.id", "str", _cont(lambda c: c.pod_uid or None))
_f("k8s.pod.labels", "str", _cont(_labels))
_f("k8s.pod.label", "str", None, make=lambda a: _label(a), arg="required")
_f("k8s.pod.ip", "str", lambda ev, cx: None)
_f("k8s.container.name", "str", _cont(lambda c: c.k8s_container_name or None))
_f("k8s.deployment.name", "str", _cont(lambda c: c.owner_name or None if c.owner_kind == "Deployment" else None))
_f("k8s.rs.name", "str", _cont(lambda c: c.owner_name or None if c.owner_kind == "ReplicaSet" else None))
_f("k8s.ns.labels", "str", lambda ev, cx: None)
_f("k8s.svc.name", "str", lambda ev, cx: None)


# --------------------------------------------------------------- transformers

def _t_lower(v):
    return v.lower() if isinstance(v, str) else None if v is None else str(v).lower()


def _t_upper(v):
    return v.upper() if isinstance(v, str) else None if v is None else str(v).upper()


def _t_b64(v):
    if v is None:
        return None
    try:
        return base64.b64decode(str(v), validate=False).decode("utf-8", "replace")
    except Exception:
        return None


def _t_basename(v):
    if v is None:
        return None
    s = str(v)
    return s.rsplit("/", 1)[-1]


def _t_len(v):
    if v is None:
        return None
    if isinstance(v, (list, tuple, str)):
        return len(v)
    return len(str(v))


TRANSFORMS = {"tolower": (_t_lower, "str"), "toupper": (_t_upper, "str"), "b64": (_t_b64, "str"),
              "basename": (_t_basename, "str"), "len": (_t_len, "int")}


def transform(name: str, inner: Extractor) -> Extractor:
    t, rtype = TRANSFORMS[name]
    f = inner.fn
    if inner.multi:
        def fn(ev, cx):
            vals = f(ev, cx)
            return None if vals is None else [t(v) for v in vals]
    else:
        def fn(ev, cx):
            return t(f(ev, cx))
    return Extractor(f"{name}({inner.key})", rtype, _safe(fn), inner.multi)


# --------------------------------------------------------------- rendering

def render_value(v, ext: Optional[Extractor] = None) -> str:
    if v is None:
        return "<NA>"
    if isinstance(v, list):
        return render_value(v[0], ext) if v else "<NA>"
    if ext is not None and ext.render is not None:
        try:
            return ext.render(v)
        except Exception:
            return str(v)
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


def json_value(v):
    if isinstance(v, list):
        return v[0] if v else None
    return v


@functools.lru_cache(maxsize=65536)
def parse_ip(s):
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        return None


def all_field_names() -> list:
    return sorted(FIELDS) + ["evt.arg.<name>", "evt.rawarg.<name>"]
