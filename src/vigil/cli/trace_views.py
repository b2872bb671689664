"""`vigil trace`: execsnoop/opensnoop/tcpconnect-style views of the events,
as aligned columns or one JSON object per line."""
from __future__ import annotations

import json
import sys
import time

from vigil.alerts.alert import format_time
from vigil.events import KIND_BY_NAME, Event
from vigil.events.kinds import TRACE_GROUPS
from vigil.events.render import args_text, errno_name, hostport, one_line, open_flags, ret_text

# the single-kind views have columns of their own (_cols); the groups come
# from the kinds registry
_COLUMN_VIEWS = ("exec", "open", "connect", "accept", "dns")
TRACE_KINDS = {**{v: frozenset((KIND_BY_NAME[v],)) for v in _COLUMN_VIEWS}, **TRACE_GROUPS}
# execsnoop shows the execs that failed too, with their errno under RET
TRACE_KINDS["exec"] = frozenset((KIND_BY_NAME["exec"], KIND_BY_NAME["execfail"]))


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
    d.update(ev.kind.spec.trace_json(ev))
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


# view -> (header columns with widths, row function)
def _cols(view: str):
    if view == "exec":
        # RET as execsnoop's: 0, or the errno name of a failed execve
        return [("TIME", 12), ("UID", 6), ("PCOMM", 16), ("PID", 7), ("PPID", 7), ("RET", 7),
                ("CWD", -24), ("ARGS", 0)], lambda e: [
            _hms(e.time), e.uid, e.comm, e.pid, e.ppid, ret_text(e.ret or 0),
            e.cwd or (e.proc.cwd if e.proc is not None else None) or "-",
            args_text(e) or e.exe or e.path]
    if view == "open":
        return [("TIME", 12), ("UID", 6), ("PID", 7), ("COMM", 16), ("FD", 4), ("ERR", 7),
                ("FLAGS", 30), ("PATH", 0)], lambda e: [
            _hms(e.time), e.uid, e.pid, e.comm, e.ret if e.ret >= 0 else -1,
            errno_name(e.ret) if e.ret < 0 else 0, open_flags(e.flags), e.path]
    if view == "connect":
        return [("TIME", 12), ("UID", 6), ("PID", 7), ("COMM", 16), ("PROTO", 5), ("SADDR", 22),
                ("DADDR", 22), ("RET", 0)], lambda e: [
            _hms(e.time), e.uid, e.pid, e.comm, e.proto or e.family, hostport(e.saddr, e.sport),
            hostport(e.daddr, e.dport) if e.family != "AF_UNIX" else (e.path or "-"), ret_text(e.ret)]
    if view == "accept":
        return [("TIME", 12), ("PID", 7), ("COMM", 16), ("PROTO", 5), ("LADDR", 22),
                ("RADDR", 0)], lambda e: [
            _hms(e.time), e.pid, e.comm, e.proto or e.family, hostport(e.saddr, e.sport),
            hostport(e.daddr, e.dport)]
    if view == "dns":
        return [("TIME", 12), ("PID", 7), ("COMM", 16), ("QTYPE", 6), ("SERVER", 22),
                ("QUERY", 0)], lambda e: [
            _hms(e.time), e.pid, e.comm, e.qtype or "?", hostport(e.daddr, e.dport),
            e.query or "?"]
    return [("TIME", 12), ("EVENT", 8), ("UID", 6), ("PID", 7), ("COMM", 16),
            ("DETAILS", 0)], lambda e: [_hms(e.time), e.type, e.uid, e.pid, e.comm, details(e)]


def details(e: Event) -> str:
    return e.kind.spec.trace_detail(e)


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
        """One row: every value on one line (control characters escaped), padded
        to its column; a negative width is a column whose longer values are cut
        from the left, behind an ellipsis (CWD: its end says the most)."""
        parts = []
        for (name, width), v in zip(self._cols, values):
            s = "" if v is None else one_line(str(v))
            if width < 0:
                width = -width
                if len(s) > width:
                    s = "\u2026" + s[-(width - 1):]
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
