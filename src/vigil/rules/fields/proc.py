"""proc.* and thread.* fields: the process an event comes from and its ancestors."""
from __future__ import annotations

from vigil.events import Kind
from vigil.rules.fields.base import define, safe
from vigil.rules.fields.proc_state import exe_overlay


def _args(ev):
    if ev.kind is Kind.EXEC and ev.args is not None:
        return ev.args
    p = ev.proc
    return p.args if p is not None else None


def _comm(ev):
    """Falco's proc.name: the name the process got at exec (the invoked
    file's name, 15 bytes), kept in the process table; not the current comm,
    which a process sets itself (prctl PR_SET_NAME, /proc/<pid>/comm).  An
    exec event carries it itself (the table may be a later exec's by the time
    a held event is judged)."""
    if ev.kind is Kind.EXEC:
        return ev.comm
    p = ev.proc
    if p is not None and p.comm:
        return p.comm
    return ev.comm


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


define("proc.name", "str", lambda ev, cx: _comm(ev),
       inline={Kind.EXEC: "ev.comm",
               None: "(ev.proc.comm if ev.proc is not None and ev.proc.comm else ev.comm)"})
# vigil: the thread's name as the kernel reported it with the event (the
# comm a process can choose); proc.name is the exec-time name
define("thread.comm", "str", lambda ev, cx: ev.comm, inline={None: "ev.comm"})
# exec events: the same values in one call each (every exec rule reads them)


def _exec_exe(ev, cx):
    try:
        a = ev.args
        if a is None:
            p = ev.proc
            a = p.args if p is not None else None
        if a:
            return a[0]
        if ev.exe is not None:
            return ev.exe
        p = ev.proc
        return p.exe if p is not None else None
    except Exception:
        return None


def _exec_cmdline(ev, cx):
    try:
        c = ev.comm
        if c is None:
            return None
        a = ev.args
        if a is None:
            p = ev.proc
            a = p.args if p is not None else None
        return c + " " + " ".join(a[1:]) if a and len(a) > 1 else c
    except Exception:
        return None


def _exec_proc_args(ev, cx):
    try:
        a = ev.args
        if a is None:
            p = ev.proc
            a = p.args if p is not None else None
        return None if a is None else " ".join(a[1:])
    except Exception:
        return None


define("proc.exe", "str", safe(lambda ev, cx: _proc_exe(_args(ev), _exepath(ev))),
       fast={Kind.EXEC: _exec_exe})
define("proc.exepath", "str", safe(lambda ev, cx: _exepath(ev)),
       inline={Kind.EXEC: "(ev.exe if ev.exe is not None else ev.proc.exe if ev.proc is not None else None)"})
define("proc.args", "str", safe(lambda ev, cx: (lambda a: None if a is None else " ".join(a[1:]))(_args(ev))),
       fast={Kind.EXEC: _exec_proc_args})
define("proc.cmdline", "str", safe(lambda ev, cx: _cmdline(_comm(ev), _args(ev))),
       fast={Kind.EXEC: _exec_cmdline})
define("proc.exeline", "str", safe(lambda ev, cx: (lambda a: None if not a else " ".join(a))(_args(ev))))
define("proc.cmdnargs", "int", safe(lambda ev, cx: (lambda a: None if a is None else max(0, len(a) - 1))(_args(ev))))
define("proc.cmdlenargs", "int", safe(lambda ev, cx: (lambda a: None if a is None else sum(len(x) for x in a[1:]))(_args(ev))))
define("proc.pid", "int", lambda ev, cx: ev.pid, inline={None: "ev.pid"})
define("proc.ppid", "int", safe(lambda ev, cx: _ppid(ev)))
def _vpid(p):
    """pid inside the process's pid namespace; None while unknown (0)."""
    return (p.vpid or None) if p is not None else None


define("proc.vpid", "int", safe(lambda ev, cx: (ev.vpid if ev.kind is Kind.EXEC and ev.vpid else
                                             _vpid(ev.proc))))
define("proc.pvpid", "int", safe(lambda ev, cx: _vpid(_parent(ev, cx))))
define("thread.tid", "int", lambda ev, cx: ev.tid, inline={None: "ev.tid"})
define("thread.vtid", "int", lambda ev, cx: None)
def _cwd(ev, cx):
    """The working directory, ending in '/' as Falco keeps it."""
    c = ev.cwd if ev.kind is Kind.EXEC and ev.cwd else (ev.proc.cwd or None) if ev.proc is not None else None
    if c is None:
        return None
    return c if c.endswith("/") else c + "/"


define("proc.cwd", "str", safe(_cwd))
define("proc.tty", "int", safe(lambda ev, cx: _tty_nr(ev.tty if ev.kind is Kind.EXEC and ev.tty is not None
                                                   else ev.proc.tty if ev.proc is not None else None)))
define("proc.nthreads", "int", lambda ev, cx: None)
define("proc.is_container_healthcheck", "bool", lambda ev, cx: False)
define("proc.is_container_liveness_probe", "bool", lambda ev, cx: False)
define("proc.is_container_readiness_probe", "bool", lambda ev, cx: False)
define("proc.pid.ts", "int", safe(lambda ev, cx: ev.proc.start_time if ev.proc is not None else None))


def _is_memfd(ev, cx):
    if ev.kind is Kind.EXEC and ev.exe is not None:
        return ev.exe.startswith("/memfd:")
    p = ev.proc
    return bool(p.exe_from_memfd) if p is not None else None


def _written_after_start(ev):
    """The executable's inode changed after the container started: it was written
    (dropped) inside the container, whatever the filesystem."""
    c = ev.container
    if c is None or c.is_host or not c.start_time:
        return False
    ctime = getattr(ev, "exe_ctime", None) if ev.kind is Kind.EXEC else None
    if not ctime and ev.proc is not None:
        ctime = getattr(ev.proc, "exe_ctime", 0)
    return bool(ctime) and ctime > c.start_time // 1_000_000_000


def _is_upper(ev, cx):
    hook = cx.written_paths if cx is not None else None
    if hook is None:
        # the kernel's word (overlayfs upper layer) when it gave one; else the
        # executable's inode changed after the container started
        layer = exe_overlay(ev)
        return layer == "upper" if layer is not None else _written_after_start(ev)
    path = _exepath(ev)
    if not path:
        return False
    c = ev.container
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


define("proc.is_exe_from_memfd", "bool", safe(_is_memfd))
define("proc.is_exe_upper_layer", "bool", safe(_is_upper),
       desc="true if the executable file is in the upper layer of an overlayfs (written or "
            "copied up in the container), as the kernel reports it at exec; for processes "
            "vigil did not see exec, whether the file changed after the container started.")
define("proc.exe_written_in_container", "bool", safe(lambda ev, cx: _written_after_start(ev)),
       desc="vigil: true if the executable's inode changed after its container started (it "
            "was written in the container, on any filesystem: overlay, bind mount, volume).")
define("proc.loginshellid", "int", safe(_loginshellid))


def _pfield(get):
    return safe(lambda ev, cx: (lambda p: None if p is None else get(p))(_parent(ev, cx)))


define("proc.pname", "str", _pfield(lambda p: p.comm))
define("proc.pexe", "str", _pfield(lambda p: _proc_exe(p.args, p.exe)))
define("proc.pexepath", "str", _pfield(lambda p: p.exe or None))
define("proc.pcmdline", "str", _pfield(lambda p: p.cmdline))
define("proc.pargs", "str", _pfield(lambda p: " ".join(p.args[1:])))


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
            return safe(lambda ev, cx: self_get(ev))

        def fn(ev, cx):
            p = _ancestor(ev, cx, n)
            return None if p is None else get(p)
        return safe(fn)

    def all_(ev, cx):
        return [get(p) for p in _ancestors(ev, cx)]

    define(name, type_, safe(all_), make=make, arg="index_opt", multi=True)


for _n, _t in (("proc.aname", "str"), ("proc.apid", "int"), ("proc.aexe", "str"),
               ("proc.aexepath", "str"), ("proc.acmdline", "str")):
    _anc_field(_n, _t)
