"""One event of every sensing kind, with exact fields, on this kernel.

tests/kernels/workload.py makes each behaviour happen once (its own files, loopback sockets,
its own children); each kind is one test, under the feature of its sensor.  A kind whose every
program this kernel refused is skipped with the kernel's reason (the row says degraded, why).
"""
import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vigil.events import Kind
from vigil.events.kinds import DERIVED, ENFORCE_KINDS, SPECS
from vigil.kernel.node import find_v2_mount

HERE = Path(__file__).resolve().parent
WORKLOAD = str(HERE / "workload.py")
SENSING = frozenset(k for k in Kind if k not in ENFORCE_KINDS)
PY = sys.executable
O_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


class CgroupRecorder:
    """The cgroup events go to the container resolver, not to handlers: this sees them first."""

    def __init__(self, pipeline):
        self.events = []
        self._process = pipeline.process
        pipeline.process = self.process

    def process(self, ev):
        if ev.kind in (Kind.CGROUP_MKDIR, Kind.CGROUP_RMDIR):
            self.events.append((ev.kind, ev.cgroup_id, ev.path))
        self._process(ev)


@pytest.fixture(scope="module")
def observed(everything, tmp_path_factory):
    c = everything
    cg = CgroupRecorder(c.pipeline)
    d = tmp_path_factory.mktemp("kev")
    v2 = find_v2_mount() or "/sys/fs/cgroup"
    r = subprocess.run([PY, WORKLOAD, str(d), v2], cwd=d, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    did = json.loads(r.stdout)
    # an open through io_uring (IORING_OP_OPENAT), by vtool
    sys.path.insert(0, str(HERE))
    from workload import ensure_vtool
    vtool = ensure_vtool(str(HERE.parent.parent / "bench" / "out" / "kernels"))
    target = Path(d) / "uring-target"
    target.write_text("x")
    u = subprocess.Popen([vtool, "uring-openat", str(target)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    _, err = u.communicate(timeout=60)
    assert u.returncode == 0, err
    did["uring_pid"], did["uring_path"] = u.pid, str(target)
    pids = {did[k] for k in ("pid", "child", "traced", "execfail", "uring_pid")}
    c.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == did["uring_pid"], timeout=30)
    c.settle(quiet=0.3, limit=3)
    mine = [e for e in c.events if e.pid in pids]
    yield c, cg, did, str(d), mine
    c.pipeline.process = cg._process
    c.stop()            # the agent's module loads everything again: not two sets attached at once


def expected(k: Kind, did: dict, d: str) -> dict:
    """The exact fields of the one event of kind k the workload made (callables: predicates)."""
    p = did["pid"]
    comm = os.path.basename(PY)[:15]
    return {
        Kind.EXEC: dict(pid=p, exe=os.path.realpath(PY), args=[PY, WORKLOAD, d, did["cgroup"]
                                                               .rsplit("/", 1)[0]],
                        cwd=d, comm=comm, syscall="execve", args_truncated=False),
        Kind.EXIT: dict(pid=did["child"], ppid=p, exit_code=7, exit_signal=0),
        Kind.FORK: dict(pid=p, child_pid=did["child"]),
        Kind.OPEN: dict(pid=p, path=f"{d}/f1", mode=0o600, flags=lambda f: f & O_FLAGS == O_FLAGS,
                        ret=lambda r: r >= 0),
        Kind.CONNECT: dict(pid=p, family="AF_INET", proto="tcp", saddr="127.0.0.1",
                           sport=did["cport"], daddr="127.0.0.1", dport=did["port"], ret=0),
        Kind.ACCEPT: dict(pid=p, proto="tcp", saddr="127.0.0.1", sport=did["port"],
                          daddr="127.0.0.1", dport=did["cport"]),
        Kind.LISTEN: dict(pid=p, proto="tcp", saddr="127.0.0.1", sport=did["port"], ret=0),
        Kind.BIND: dict(pid=p, proto="tcp", saddr="127.0.0.1", sport=0, ret=0),
        Kind.CLOSE: dict(pid=p, proto="tcp", sport=did["cport"], dport=did["port"], ret=0),
        Kind.DNS: dict(pid=p, query="vigil-km.example.com", qtype="A", proto="udp",
                       daddr="127.0.0.1", dport=53),
        Kind.UNLINK: dict(pid=p, syscall="unlink", path=f"{d}/f3", ret=0),
        Kind.RENAME: dict(pid=p, path=f"{d}/f1", path2=f"{d}/f2", ret=0),
        Kind.LINK: dict(pid=p, path=f"{d}/f2", path2=f"{d}/f3", ret=0),
        Kind.SYMLINK: dict(pid=p, path=f"{d}/f2", path2=f"{d}/f4", ret=0),
        Kind.MKDIR: dict(pid=p, path=f"{d}/sub", mode=0o700, ret=0),
        Kind.CHMOD: dict(pid=p, path=f"{d}/f2", mode=0o644, ret=0),
        Kind.PTRACE: dict(pid=p, target_pid=did["traced"], request=16, ret=0),
        Kind.MODULE: dict(pid=p, syscall="finit_module", ret=-errno.EBADF),
        Kind.DUP: dict(pid=p, newfd=2, ret=2, fd_type="file"),
        Kind.MEMFD: dict(pid=p, syscall="memfd_create", path="vigil-km", ret=lambda r: r >= 0),
        Kind.SETUID: dict(pid=p, syscall="setuid", new_uid=os.getuid(), ret=0),
        Kind.IO_URING_SETUP: dict(pid=p, syscall="io_uring_setup", entries=4),
        Kind.PRCTL: dict(pid=p, old_name=comm, new_name="vigil-km-ren", target_pid=p),
        Kind.CAPSET: dict(pid=p, syscall="capset", ret=0),
        Kind.SETID: dict(pid=p, syscall="setgid", id_args=[os.getgid()], ret=0),
        Kind.SESSION: dict(pid=did["child"], syscall="setsid", ret=did["child"], sid=did["child"]),
        Kind.EXECFAIL: dict(pid=did["execfail"], path=f"{d}/missing-exe", args=["missing-exe"],
                            ret=-errno.ENOENT),
        Kind.SOCKET: dict(pid=p, family="AF_INET", proto="udp",
                          sock_type=lambda t: t & 0xf == socket.SOCK_DGRAM),
        Kind.SETNS: dict(pid=did["child"], nstype=0x40000000, ret=0),
        Kind.UNSHARE: dict(pid=did["child"], flags=0x04000000, ret=0),
        Kind.BPF: dict(pid=p, cmd=99, ret=-errno.EINVAL),
        Kind.USERFAULTFD: dict(pid=p, syscall="userfaultfd"),
        Kind.FCHMOD: dict(pid=p, path=f"{d}/f1", mode=0o640, ret=0),
        Kind.HTTP: dict(pid=p, method="GET", path="/vigil-km", status=204, direction="outbound",
                        saddr="127.0.0.1", sport=did["http_cport"], daddr="127.0.0.1",
                        dport=did["http_port"], duration=lambda s: 0 <= s < 60),
    }[k]


def l7_expected(did: dict) -> list:
    """The two ends of the workload's HTTP exchange, as the L7 tracker pairs them."""
    p = did["pid"]
    common = dict(protocol="http", tgid=p, method="GET", path="/vigil-km", status=204,
                  error=False, closed=False, tls=False, local_ip="127.0.0.1", peer_ip="127.0.0.1")
    return [dict(common, direction="outbound", local_port=did["http_cport"],
                 peer_port=did["http_port"]),
            dict(common, direction="inbound", local_port=did["http_port"],
                 peer_port=did["http_cport"])]


def _matches(e, want: dict) -> bool:
    for f, v in want.items():
        got = getattr(e, f, None)
        if callable(v):
            if got is None or not v(got):
                return False
        elif got != v:
            return False
    return True


def _kernel_refused(c, k, sensor=None):
    """The reasons this kernel refused every program of kind k (of that sensor, if given)
    (None if one is attached)."""
    k = DERIVED.get(k, k)               # a kind made in user space: its source kind's programs
    progs = [p for p in c.sensors.report.programs if p.kind == k
             and (sensor is None or p.sensor == sensor)]
    if any(p.attached for p in progs):
        return None
    return "; ".join(f"{p.sensor}/{p.name}: {p.error}" for p in progs) or "no program"


KINDS = sorted(SENSING, key=lambda k: k.value)


@pytest.mark.parametrize("kind", [
    pytest.param(k, marks=pytest.mark.feature(f"events: {SPECS[k].sensor}"), id=k.label)
    for k in KINDS])
def test_one_event_of_every_kind(observed, kind, matrix):
    c, cg, did, d, mine = observed
    refused = _kernel_refused(c, kind)
    if refused is not None:
        pytest.skip(f"no {kind.label} events: {refused}")
    feature = f"events: {SPECS[kind].sensor}"
    if kind in (Kind.CGROUP_MKDIR, Kind.CGROUP_RMDIR):
        name = did["cgroup"].rsplit("/", 1)[1]
        hits = [e for e in cg.events if e[0] == kind and e[2].rsplit("/", 1)[-1] == name]
        assert len(hits) == 1, f"{kind.label} of {name}: {cg.events[-5:]}"
        assert hits[0][1] > 1          # the new cgroup's own id (its inode), not the actor's
        matrix.note(feature, f"{kind.label} ok")
        return
    if kind == Kind.L7:
        # the l7 kind's records are the tracker's, not events: both ends of one exchange
        c.drain()
        reqs = [r for r in c.l7_requests if r.tgid == did["pid"]]
        for want in l7_expected(did):
            hits = [r for r in reqs if _matches(r, want)]
            assert len(hits) == 1, f"no l7 record with {want}; saw {reqs}"
        matrix.note(feature, "l7 ok")
        return
    want = expected(kind, did, d)
    got = [e for e in mine if e.kind == kind]
    hits = [e for e in got if _matches(e, want)]
    assert hits, f"no {kind.label} event with {want}; saw " + "; ".join(
        str({f: getattr(e, f) for f in want}) for e in got[:5])
    matrix.note(feature, f"{kind.label} ok")


@pytest.mark.feature("events: iouring")
def test_open_through_io_uring(observed, matrix):
    """IORING_OP_OPENAT never passes the open syscalls: the iouring sensor's submit and
    complete programs (one per tracepoint signature: sensors.VARIANTS) see it."""
    c, cg, did, d, mine = observed
    refused = _kernel_refused(c, Kind.OPEN, sensor="iouring")
    if refused is not None:
        pytest.skip(f"no io_uring opens: {refused}")
    want = dict(pid=did["uring_pid"], path=did["uring_path"], via="io_uring", syscall="openat",
                ret=lambda r: r >= 0)
    got = [e for e in mine if e.kind == Kind.OPEN and e.pid == did["uring_pid"]]
    assert [e for e in got if _matches(e, want)], f"no io_uring open with {want}; saw " + "; ".join(
        str({f: getattr(e, f) for f in want}) for e in got[:5])
    used = sorted(p.name for p in c.sensors.report.programs
                  if p.sensor == "iouring" and p.attached and p.kind == Kind.OPEN)
    matrix.note("events: iouring", "io_uring openat ok (" + ", ".join(used) + ")")
