"""`vigil trace`: execsnoop/opensnoop/tcpconnect-style views of the events,
as aligned columns or one JSON object per line."""
from __future__ import annotations

import json
import sys
import time

from vigil.alerts.alert import format_time
from vigil.events import Event, Kind

TRACE_KINDS = {
    "exec": {Kind.EXEC},
    "open": {Kind.OPEN},
    "connect": {Kind.CONNECT},
    "accept": {Kind.ACCEPT},
    "dns": {Kind.DNS},
    "file": {Kind.OPEN, Kind.UNLINK, Kind.RENAME, Kind.LINK, Kind.SYMLINK, Kind.MKDIR,
             Kind.CHMOD},
    "net": {Kind.CONNECT, Kind.ACCEPT, Kind.LISTEN, Kind.BIND, Kind.CLOSE, Kind.DNS},
    "all": {k for k in Kind if k not in (Kind.CGROUP_MKDIR, Kind.CGROUP_RMDIR)},
}

_ERRNO_NAMES = None


def errno_name(ret: int) -> str:
    global _ERRNO_NAMES
    if _ERRNO_NAMES is None:
        import errno
        _ERRNO_NAMES = errno.errorcode
    return _ERRNO_NAMES.get(-ret, str(-ret)) if ret < 0 else ""


def event_json(ev: Event, containers: bool = False) -> dict:
    """The `--json` form of an event: common process keys plus the kind's own."""
    p = ev.proc
    d = {
        "type": ev.type,
        "time": format_time(ev.time),
        "ts": ev.time,
        "pid": ev.pid,
        "tid": ev.tid,
        "ppid": ev.ppid,
        "uid": ev.uid,
        "gid": ev.gid,
        "comm": ev.comm,
        "exe": ev.exe if ev.exe is not None else (p.exe if p else None),
        "args": ev.args if ev.args is not None else (list(p.args) if p else []),
        "cwd": ev.cwd if ev.cwd is not None else (p.cwd if p else None),
        "cgroup_id": ev.cgroup_id,
    }
    k = ev.kind
    if k == Kind.EXEC:
        d.update(args_truncated=ev.args_truncated, tty=ev.tty, loginuid=ev.loginuid)
    elif k == Kind.EXIT:
        d.update(exit_code=ev.exit_code, exit_signal=ev.exit_signal)
    elif k == Kind.FORK:
        d.update(child_pid=ev.child_pid)
    elif k == Kind.OPEN:
        d.update(syscall=ev.syscall, path=ev.path, flags=ev.flags, mode=ev.mode, ret=ev.ret)
    elif k in (Kind.CONNECT, Kind.ACCEPT, Kind.LISTEN, Kind.BIND, Kind.CLOSE):
        d.update(syscall=ev.syscall, fd=ev.fd, family=ev.family, proto=ev.proto, saddr=ev.saddr,
                 sport=ev.sport, daddr=ev.daddr, dport=ev.dport, ret=ev.ret)
        if ev.path:
            d["path"] = ev.path
    elif k == Kind.DNS:
        d.update(syscall=ev.syscall, query=ev.query, qtype=ev.qtype, daddr=ev.daddr,
                 dport=ev.dport)
    elif k in (Kind.UNLINK, Kind.RENAME, Kind.LINK, Kind.SYMLINK, Kind.MKDIR, Kind.CHMOD):
        d.update(syscall=ev.syscall, path=ev.path, ret=ev.ret)
        if ev.path2 is not None:
            d["path2"] = ev.path2
        if k in (Kind.MKDIR, Kind.CHMOD):
            d["mode"] = ev.mode
    elif k == Kind.PTRACE:
        d.update(request=ev.request, target_pid=ev.target_pid, ret=ev.ret)
    elif k == Kind.DUP:
        d.update(syscall=ev.syscall, fd=ev.fd, newfd=ev.newfd, fd_type=ev.fd_type, ret=ev.ret,
                 saddr=ev.saddr, sport=ev.sport, daddr=ev.daddr, dport=ev.dport)
    elif k == Kind.MEMFD:
        d.update(name=ev.path, flags=ev.flags, ret=ev.ret)
    elif k == Kind.MODULE:
        d.update(syscall=ev.syscall, path=ev.path, ret=ev.ret)
    elif k == Kind.SETUID:
        d.update(new_uid=ev.new_uid, ret=ev.ret)
    if containers:
        c = ev.container
        d.update(container_json(c))
    return d


def container_json(c) -> dict:
    if c is None:
        return {"container_id": "host", "container_name": None, "container_image": None,
                "container_runtime": None, "k8s_ns": None, "k8s_pod": None,
                "k8s_pod_uid": None, "k8s_container": None}
    return {"container_id": c.id, "container_name": c.name or None,
            "container_image": c.image or None, "container_runtime": c.runtime or None,
            "k8s_ns": c.namespace or None, "k8s_pod": c.pod_name or None,
            "k8s_pod_uid": c.pod_uid or None, "k8s_container": c.k8s_container_name or None}


def _hms(ns: int) -> str:
    t = time.localtime(ns // 1_000_000_000)
    return time.strftime("%H:%M:%S", t) + f".{(ns // 1_000_000) % 1000:03d}"


def _args(ev: Event) -> str:
    a = ev.args if ev.args is not None else (ev.proc.args if ev.proc else [])
    s = " ".join(a)
    return s + (" ..." if ev.args_truncated else "")


def _ret(ret) -> str:
    return str(ret) if ret is None or ret >= 0 else errno_name(ret)


def _hostport(addr, port) -> str:
    if addr is None:
        return "-"
    if ":" in addr:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


# view -> (header columns with widths, row function)
def _cols(view: str):
    if view == "exec":
        return [("TIME", 12), ("UID", 6), ("PCOMM", 16), ("PID", 7), ("PPID", 7), ("CWD", 20),
                ("ARGS", 0)], lambda e: [
            _hms(e.time), e.uid, e.comm, e.pid, e.ppid, e.cwd or "-", _args(e) or e.exe]
    if view == "open":
        return [("TIME", 12), ("UID", 6), ("PID", 7), ("COMM", 16), ("FD", 4), ("ERR", 7),
                ("FLAGS", 8), ("PATH", 0)], lambda e: [
            _hms(e.time), e.uid, e.pid, e.comm, e.ret if e.ret >= 0 else -1,
            errno_name(e.ret) if e.ret < 0 else 0, f"{e.flags:07o}", e.path]
    if view == "connect":
        return [("TIME", 12), ("PID", 7), ("COMM", 16), ("PROTO", 5), ("SADDR", 22),
                ("DADDR", 22), ("RET", 0)], lambda e: [
            _hms(e.time), e.pid, e.comm, e.proto or e.family, _hostport(e.saddr, e.sport),
            _hostport(e.daddr, e.dport) if e.family != "AF_UNIX" else (e.path or "-"), _ret(e.ret)]
    if view == "accept":
        return [("TIME", 12), ("PID", 7), ("COMM", 16), ("PROTO", 5), ("LADDR", 22),
                ("RADDR", 0)], lambda e: [
            _hms(e.time), e.pid, e.comm, e.proto or e.family, _hostport(e.saddr, e.sport),
            _hostport(e.daddr, e.dport)]
    if view == "dns":
        return [("TIME", 12), ("PID", 7), ("COMM", 16), ("QTYPE", 6), ("SERVER", 22),
                ("QUERY", 0)], lambda e: [
            _hms(e.time), e.pid, e.comm, e.qtype or "?", _hostport(e.daddr, e.dport),
            e.query or "?"]
    return [("TIME", 12), ("EVENT", 8), ("UID", 6), ("PID", 7), ("COMM", 16),
            ("DETAILS", 0)], lambda e: [_hms(e.time), e.type, e.uid, e.pid, e.comm, details(e)]


def details(e: Event) -> str:
    k = e.kind
    if k == Kind.EXEC:
        return f"{e.exe} {_args(e)}"
    if k == Kind.EXIT:
        return f"code={e.exit_code}" + (f" signal={e.exit_signal}" if e.exit_signal else "")
    if k == Kind.FORK:
        return f"child={e.child_pid}"
    if k == Kind.OPEN:
        return f"{e.syscall} {e.path} flags={e.flags:#o} ret={_ret(e.ret)}"
    if k in (Kind.CONNECT, Kind.BIND, Kind.LISTEN, Kind.ACCEPT, Kind.CLOSE):
        if e.family == "AF_UNIX":
            return f"{e.syscall} unix {e.path or '-'} ret={_ret(e.ret)}"
        return (f"{e.syscall} {e.proto} {_hostport(e.saddr, e.sport)} -> "
                f"{_hostport(e.daddr, e.dport)} ret={_ret(e.ret)}")
    if k == Kind.DNS:
        return f"{e.qtype} {e.query} -> {_hostport(e.daddr, e.dport)}"
    if k in (Kind.RENAME, Kind.LINK, Kind.SYMLINK):
        return f"{e.syscall} {e.path} -> {e.path2} ret={_ret(e.ret)}"
    if k in (Kind.UNLINK, Kind.MKDIR, Kind.CHMOD):
        return f"{e.syscall} {e.path} mode={e.mode:#o} ret={_ret(e.ret)}"
    if k == Kind.PTRACE:
        return f"request={e.request} target={e.target_pid} ret={_ret(e.ret)}"
    if k == Kind.DUP:
        return f"{e.syscall} fd={e.fd}({e.fd_type}) -> {e.newfd} ret={_ret(e.ret)}"
    if k == Kind.MEMFD:
        return f"name={e.path} ret={_ret(e.ret)}"
    if k == Kind.MODULE:
        return f"{e.syscall} {e.path or ''} ret={_ret(e.ret)}"
    if k == Kind.SETUID:
        return f"uid={e.new_uid} ret={_ret(e.ret)}"
    return ""


class TracePrinter:
    """Pipeline handler printing the chosen view; applies the user's filters."""

    def __init__(self, view: str, *, as_json: bool = False, pids=(), comms=(), uids=(),
                 containers: bool = False, out=None, proctable=None):
        self.view = view
        self.kinds = TRACE_KINDS[view]
        self.as_json = as_json
        self.pids = set(pids)
        self.proctable = proctable      # for --pid: descendants of the given pids
        self.comms = set(comms)
        self.uids = set(uids)
        self.containers = containers
        self.out = out or sys.stdout
        self.count = 0
        self._header_done = False
        cols, self._row = _cols(view)
        if containers:
            cols = cols[:-1] + [("CONTAINER", 13), ("K8S_NS/POD", 28)] + cols[-1:]
        self._cols = cols

    def header(self) -> None:
        if self.as_json or self._header_done:
            return
        self._header_done = True
        self.out.write(self._fmt([c for c, _ in self._cols]) + "\n")
        self.out.flush()

    def _fmt(self, values) -> str:
        parts = []
        for (name, width), v in zip(self._cols, values):
            s = "" if v is None else str(v)
            parts.append(s.ljust(width) if width else s)
        return " ".join(parts)

    def _in_pids(self, ev: Event) -> bool:
        """The process is one of --pid or descends from one."""
        pids = self.pids
        if ev.pid in pids or ev.ppid in pids:
            return True
        pt = self.proctable
        if pt is None:
            return False
        return any(a.pid in pids for a in pt.ancestors(ev.ppid or 0, 32)) if ev.ppid else False

    def __call__(self, ev: Event) -> None:
        if ev.kind not in self.kinds:
            return
        if self.pids and not self._in_pids(ev):
            return
        if self.comms and ev.comm not in self.comms:
            return
        if self.uids and ev.uid not in self.uids:
            return
        self.count += 1
        if self.as_json:
            self.out.write(json.dumps(event_json(ev, self.containers)) + "\n")
        else:
            self.header()
            row = self._row(ev)
            if self.containers:
                c = ev.container
                cid = c.short_id if c is not None else "host"
                pod = f"{c.namespace}/{c.pod_name}" if c is not None and c.pod_name else "-"
                row = row[:-1] + [cid, pod] + row[-1:]
            self.out.write(self._fmt(row) + "\n")

    def flush(self) -> None:
        """Called by the pipeline after each batch of events."""
        try:
            self.out.flush()
        except BrokenPipeError:
            raise
        except OSError:
            pass
