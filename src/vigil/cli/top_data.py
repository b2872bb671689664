"""Where `vigil top`'s numbers come from, sampled once per refresh.

* **/proc** (read by `vigil top` itself, the host's through ``VIGIL_HOST_ROOT``):
  per process its name, CPU (``utime + stime`` of ``/proc/PID/stat``), syscalls
  (``syscr + syscw`` of ``/proc/PID/io``: the kernel's own count of the read- and
  write-family syscalls), bytes (``rchar + wchar``: read and written through those
  syscalls, sockets and files alike), established TCP connections (its socket fds
  found ``ESTABLISHED`` in its network namespace's ``/proc/PID/net/tcp{,6}``) and its
  cgroup (the cgroup directory's inode is the id the kernel and the agent key on).
* **the agent** (``/l7/processes`` on its metrics address): per process the L7
  requests, errors and duration buckets it saw (HTTP, Redis, PostgreSQL, both
  directions), and the namespace/pod/container of every cgroup it placed.

Rates are differences between two samples over the time between them.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional


from vigil.host_paths import proc_path
from vigil.l7.stats import cumulative_of, quantile

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROTOCOLS = ("http", "redis", "postgres")


@dataclass
class ProcSample:
    pid: int
    name: str
    ticks: int = 0
    syscalls: int = 0
    bytes: int = 0
    conns: int = 0
    cgroup: str = ""
    cgroup_id: int = 0


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cgroup_root() -> Optional[str]:
    from vigil.state.containers.cgroupfs import find_v2_mount
    return find_v2_mount()


def established(pid: int) -> set:
    """Socket inodes ESTABLISHED in the network namespace of pid."""
    out = set()
    for name in ("tcp", "tcp6"):
        text = _read(proc_path(pid, "net", name))
        for line in (text or "").splitlines()[1:]:
            f = line.split()
            if len(f) > 9 and f[3] == "01":
                out.add(f[9])
    return out


def sample_procs(cg_root: Optional[str]) -> dict:
    """pid -> ProcSample for every user-space process."""
    out = {}
    netns_sockets: dict = {}         # netns inode -> established socket inodes
    cg_ids: dict = {}
    for d in os.listdir(proc_path()):
        if not d.isdigit():
            continue
        pid = int(d)
        stat = _read(proc_path(pid, "stat"))
        if not stat:
            continue
        rp = stat.rfind(")")
        name = stat[stat.find("(") + 1:rp]
        rest = stat[rp + 2:].split()
        if len(rest) < 13 or rest[1] == "2" or pid == 2:        # kernel threads
            continue
        s = ProcSample(pid, name, ticks=int(rest[11]) + int(rest[12]))
        io = _read(proc_path(pid, "io"))
        if io:
            kv = dict(line.split(": ", 1) for line in io.splitlines() if ": " in line)
            s.syscalls = int(kv.get("syscr", 0)) + int(kv.get("syscw", 0))
            s.bytes = int(kv.get("rchar", 0)) + int(kv.get("wchar", 0))
        cg = _read(proc_path(pid, "cgroup")) or ""
        for line in cg.splitlines():
            if line.startswith("0::"):
                s.cgroup = line[3:].strip()
        if s.cgroup and cg_root:
            if s.cgroup not in cg_ids:
                try:
                    cg_ids[s.cgroup] = os.stat(cg_root + s.cgroup).st_ino
                except OSError:
                    cg_ids[s.cgroup] = 0
            s.cgroup_id = cg_ids[s.cgroup]
        s.conns = _count_conns(pid, netns_sockets)
        out[pid] = s
    return out


def _count_conns(pid: int, netns_sockets: dict) -> int:
    try:
        ns = os.stat(proc_path(pid, "ns", "net")).st_ino
        fds = os.listdir(proc_path(pid, "fd"))
    except OSError:
        return 0
    socks = []
    for fd in fds:
        try:
            link = os.readlink(proc_path(pid, "fd", fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            socks.append(link[8:-1])
    if not socks:
        return 0
    est = netns_sockets.get(ns)
    if est is None:
        est = netns_sockets[ns] = established(pid)
    return sum(1 for s in socks if s in est)


NOT_ANSWERING = "not answering: no HTTP columns, no names"
NO_L7 = "answers without L7 (l7.protocols is [] or metrics off): no HTTP columns, no names"


def agent_sample(base: Optional[str], timeout: float = 2.0) -> tuple:
    """(the agent's /l7/processes document or None, why there is none)."""
    if not base:
        return None, NOT_ANSWERING
    try:
        import requests     # here, not at import: every vigil command would pay for it
        r = requests.get(base + "/l7/processes", timeout=timeout)
        if r.status_code == 200:
            return r.json(), ""
        return None, NO_L7 if r.status_code == 404 else f"answered {r.status_code}"
    except (requests.RequestException, ValueError):
        return None, NOT_ANSWERING


def _placed(cgroup: str) -> str:
    """A cgroup the agent did not name: a container's short id, else host."""
    from vigil.state.containers.cgroup import parse_path
    ident = parse_path(cgroup) if cgroup else None
    if ident is not None and ident.is_container:
        return ident.container_id[:12]
    return "host"


@dataclass
class Row:
    key: tuple
    pid: int                 # 0 for a container row
    name: str
    namespace: str = ""
    pod: str = ""
    container: str = ""
    cpu: float = 0.0         # percent of one CPU
    syscalls: float = 0.0    # per second
    conns: int = 0
    bytes: float = 0.0       # per second
    rate: float = 0.0        # L7 requests per second (HTTP)
    errors: float = 0.0      # error ratio of those
    p50: float = math.nan
    p99: float = math.nan
    l7_rate: float = 0.0     # every protocol
    procs: int = 1
    _durs: list = field(default_factory=list, repr=False)
    _reqs: float = 0.0
    _errs: float = 0.0


class Sampler:
    """Two successive samples -> rows (per process, or per container)."""

    def __init__(self, agent_base: Optional[str], protocol: str = "http"):
        self.base = agent_base
        self.protocol = protocol
        self.cg_root = cgroup_root()
        self.prev = self.cur = None
        self.agent_ok = None
        self.agent_note = ""

    def sample(self) -> None:
        """One more sample: the rows are the difference from the one before."""
        doc, self.agent_note = agent_sample(self.base)
        self.agent_ok = doc is not None
        self.prev, self.cur = self.cur, (time.monotonic(), sample_procs(self.cg_root), doc)

    def rows(self, by: str = "process", namespace: Optional[str] = None) -> list:
        """The last two samples as rows, per process or per container."""
        prev, cur = self.prev, self.cur
        if prev is None:
            return []
        t0, procs0, agent0 = prev
        t1, procs1, agent1 = cur
        dt = max(t1 - t0, 1e-6)
        ag0 = (agent0 or {}).get("processes", {})
        ag1 = (agent1 or {}).get("processes", {})
        cgroups = (agent1 or {}).get("cgroups", {})
        rows: dict = {}
        for pid, s in procs1.items():
            old = procs0.get(pid)
            a1, a0 = ag1.get(str(pid), {}), ag0.get(str(pid), {})
            w = cgroups.get(str(s.cgroup_id)) or {k: a1.get(k, "") for k in
                                                   ("namespace", "pod", "container")}
            if not w.get("container"):
                w = {"namespace": "", "pod": "", "container": _placed(s.cgroup)}
            if namespace is not None and w.get("namespace", "") != namespace:
                continue
            if by == "container":
                key = (w["namespace"], w["pod"], w["container"])
                name = "/".join(x for x in key if x)
            else:
                key, name = (pid,), s.name
            r = rows.get(key)
            if r is None:
                r = rows[key] = Row(key, pid if by == "process" else 0, name, w["namespace"],
                                    w["pod"], w["container"], procs=0)
            r.procs += 1
            r.conns += s.conns
            if old is not None:
                r.cpu += (s.ticks - old.ticks) / CLK_TCK / dt * 100
                r.syscalls += max(s.syscalls - old.syscalls, 0) / dt
                r.bytes += max(s.bytes - old.bytes, 0) / dt
            for proto in PROTOCOLS:
                p1, p0 = a1.get(proto), a0.get(proto) or {}
                if not p1:
                    continue
                n = max(p1["requests"] - p0.get("requests", 0), 0)
                r.l7_rate += n / dt
                if proto != self.protocol:
                    continue
                r._reqs += n
                r._errs += max(p1["errors"] - p0.get("errors", 0), 0)
                d0 = p0.get("durations") or [0] * len(p1["durations"])
                d = [max(x - y, 0) for x, y in zip(p1["durations"], d0)]
                r._durs = d if not r._durs else [x + y for x, y in zip(r._durs, d)]
        for r in rows.values():
            r.rate = r._reqs / dt
            r.errors = r._errs / r._reqs if r._reqs else 0.0
            if r._reqs:
                cum = cumulative_of(r._durs)
                r.p50, r.p99 = quantile(0.5, cum), quantile(0.99, cum)
        return list(rows.values())


SORT_KEYS = {"cpu": lambda r: r.cpu, "syscalls": lambda r: r.syscalls,
             "conns": lambda r: r.conns, "bytes": lambda r: r.bytes,
             "rate": lambda r: r.rate, "errors": lambda r: r.errors,
             "p50": lambda r: -1 if math.isnan(r.p50) else r.p50,
             "p99": lambda r: -1 if math.isnan(r.p99) else r.p99,
             "pid": lambda r: -r.pid, "name": None}


def sort_rows(rows: list, key: str) -> list:
    if key == "name":
        return sorted(rows, key=lambda r: (r.name, r.pid))
    f = SORT_KEYS[key]
    return sorted(rows, key=lambda r: (-f(r), r.name, r.pid))


__all__ = ["Sampler", "Row", "SORT_KEYS", "sort_rows", "sample_procs", "agent_sample"]
