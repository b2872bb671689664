"""Process table: seeded from /proc, kept current by exec/fork/exit (fed events
and live), LRU-bounded, ancestry, reaping after the grace period."""
import os
import subprocess
import time
import uuid

import pytest

from vigil.events import Event, Kind
from vigil.state.proctable import EXIT_GRACE_NS, ProcessTable, read_proc

SLEEP = os.path.realpath("/bin/sleep")


def ev(kind, pid, **kw):
    kw.setdefault("ppid", 1)
    kw.setdefault("uid", 0)
    kw.setdefault("gid", 0)
    kw.setdefault("comm", "x")
    kw.setdefault("cgroup_id", 1)
    kw.setdefault("time", time.time_ns())
    return Event(kind, pid=pid, tid=pid, **kw)


def test_read_proc_of_a_sleep(tmp_path):
    p = subprocess.Popen([SLEEP, "30", "0.0123"], cwd=str(tmp_path))
    try:
        time.sleep(0.05)
        info = read_proc(p.pid)
        assert info.pid == p.pid and info.ppid == os.getpid()
        assert info.exe == SLEEP
        assert info.args == [SLEEP, "30", "0.0123"]
        assert info.comm == "sleep"
        assert info.cwd == str(tmp_path)
        assert (info.uid, info.gid) == (os.getuid(), os.getgid())
        assert abs(info.start_time - time.time_ns()) < 5 * 10**9
    finally:
        p.kill()
        p.wait()
    assert read_proc(p.pid) is None


def test_seeded_from_proc():
    p = subprocess.Popen([SLEEP, "30"])
    try:
        time.sleep(0.05)
        t = ProcessTable()
        n = t.seed_from_proc()
        assert n == len(t) and n > 2
        assert p.pid in t and os.getpid() in t and 1 in t
        got = t.get(p.pid)
        assert (got.exe, got.args, got.ppid) == (SLEEP, [SLEEP, "30"], os.getpid())
    finally:
        p.kill()
        p.wait()


def test_exec_fork_exit_updates():
    t = ProcessTable()
    parent = t.update(ev(Kind.EXEC, 100, ppid=1, comm="bash", exe="/bin/bash", args=["bash"],
                         cwd="/root", loginuid=1000, tty="pts0"))
    assert (parent.exe, parent.args, parent.cwd, parent.loginuid, parent.tty) == \
        ("/bin/bash", ["bash"], "/root", 1000, "pts0")
    r = t.update(ev(Kind.FORK, 100, ppid=1, comm="bash", child_pid=101))
    assert r is parent
    child = t.get(101)
    assert (child.ppid, child.exe, child.args, child.cwd, child.loginuid, child.tty) == \
        (100, "/bin/bash", ["bash"], "/root", 1000, "pts0")
    child.args.append("mutated")
    assert parent.args == ["bash"]   # the child got a copy
    t.update(ev(Kind.EXEC, 101, ppid=100, comm="curl", exe="/usr/bin/curl",
                args=["curl", "x"], cwd="/tmp"))
    child = t.get(101)
    assert (child.comm, child.exe, child.args, child.cwd) == ("curl", "/usr/bin/curl", ["curl", "x"], "/tmp")
    assert [p.pid for p in t.ancestors(101)] == [100]
    t.update(ev(Kind.EXIT, 101, ppid=100, exit_code=0, exit_signal=0))
    assert t.get(101).exited_at > 0
    # exec again after an exit record (pid reuse): alive again
    t.update(ev(Kind.EXEC, 101, ppid=100, comm="ls", exe="/bin/ls", args=["ls"]))
    assert t.get(101).exited_at == 0


def test_other_event_for_unknown_pid_reads_proc_or_makes_minimal():
    t = ProcessTable()
    me = t.update(ev(Kind.OPEN, os.getpid(), ppid=os.getppid(), comm="pytest"))
    assert me.exe == os.readlink("/proc/self/exe")
    ghost = t.update(ev(Kind.OPEN, 4_000_000, ppid=77, comm="ghost", uid=5, gid=6))
    assert (ghost.pid, ghost.ppid, ghost.comm, ghost.uid, ghost.gid) == (4_000_000, 77, "ghost", 5, 6)
    # reparenting is noticed
    t.update(ev(Kind.OPEN, 4_000_000, ppid=1, comm="ghost", uid=5, gid=6))
    assert t.get(4_000_000).ppid == 1


def test_lru_bound():
    t = ProcessTable(max_size=5)
    for pid in range(1000, 1010):
        t.update(ev(Kind.EXEC, 4_100_000 + pid, ppid=1, exe="/x", args=[]))
    assert len(t) == 5
    assert t.evictions == 5
    assert [p.pid for p in t] == [4_100_000 + pid for pid in range(1005, 1010)]
    t.get(4_101_005)                       # touched: now most recent
    t.update(ev(Kind.EXEC, 4_200_000, ppid=1, exe="/y", args=[]))
    assert 4_101_005 in t and 4_101_006 not in t


def test_ancestors_chain_depth_and_cycles():
    t = ProcessTable()
    chain = [4_300_000 + i for i in range(6)]
    t.update(ev(Kind.EXEC, chain[0], ppid=1, exe="/init"))
    for parent, child in zip(chain, chain[1:]):
        t.update(ev(Kind.EXEC, child, ppid=parent, exe=f"/p{child}"))
    assert [p.pid for p in t.ancestors(chain[-1])] == list(reversed(chain[:-1]))
    assert [p.pid for p in t.ancestors(chain[-1], depth=2)] == [chain[4], chain[3]]
    assert t.ancestor(chain[-1], 0).pid == chain[-1]
    assert t.ancestor(chain[-1], 3).pid == chain[2]
    assert t.ancestor(chain[-1], 10) is None
    # a cycle (corrupt ppids) does not loop forever
    t.update(ev(Kind.EXEC, 4_400_000, ppid=4_400_001, exe="/a"))
    t.update(ev(Kind.EXEC, 4_400_001, ppid=4_400_000, exe="/b"))
    assert [p.pid for p in t.ancestors(4_400_000)] == [4_400_001]


def test_reap_after_grace():
    t = ProcessTable()
    now = time.time_ns()
    t.update(ev(Kind.EXEC, 4_500_000, exe="/a"))
    t.update(ev(Kind.EXEC, 4_500_001, exe="/b"))
    t.update(ev(Kind.EXIT, 4_500_000, time=now))
    assert t.reap(now + EXIT_GRACE_NS - 1) == 0
    assert 4_500_000 in t            # late events still resolve during the grace
    assert t.reap(now + EXIT_GRACE_NS + 1) == 1
    assert 4_500_000 not in t and 4_500_001 in t


def test_snapshot_roundtrip():
    t = ProcessTable()
    t.update(ev(Kind.EXEC, 4_600_000, exe="/a", args=["a", "b"], cwd="/c"))
    t2 = ProcessTable()
    t2.load_snapshot(t.snapshot())
    p = t2.get(4_600_000)
    assert (p.exe, p.args, p.cwd) == ("/a", ["a", "b"], "/c")


# --- live, through a pipeline ---

@pytest.fixture(scope="module")
def live(start_pipeline):
    older = subprocess.Popen([SLEEP, "30", "0.0456"])
    time.sleep(0.05)
    c = start_pipeline({Kind.EXEC, Kind.EXIT, Kind.FORK, Kind.OPEN})
    yield c, older
    older.kill()
    older.wait()
    c.stop()


def test_live_seeded_process_has_exe_args_ppid(live):
    c, older = live
    p = c.pipeline.proctable.get(older.pid)
    assert p is not None
    assert (p.exe, p.args[:2], p.ppid) == (SLEEP, [SLEEP, "30"], os.getpid())
    # an event from it resolves to the seeded entry
    older.kill()
    older.wait()
    e = c.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == older.pid)[0]
    assert e.proc is p and e.proc.exited_at > 0
    assert e.exit_signal == 9


def test_live_fork_exec_exit_chain(live, tmp_path):
    c, _ = live
    m = "m-" + uuid.uuid4().hex[:8]
    subprocess.run(["/bin/sh", "-c", f"/bin/cat /etc/hostname {m} ; true"], cwd=str(tmp_path),
                   capture_output=True)
    cat = c.wait_for(lambda e: e.kind == Kind.OPEN and e.path == str(tmp_path / m))[0]
    pt = c.pipeline.proctable
    info = cat.proc
    assert info is pt.get(cat.pid)
    assert info.exe == os.path.realpath("/bin/cat")
    assert info.args == ["/bin/cat", "/etc/hostname", m]
    assert info.cwd == str(tmp_path)
    chain = pt.ancestors(cat.pid)
    assert chain[0].exe == os.path.realpath("/bin/sh")
    assert chain[0].args == ["/bin/sh", "-c", f"/bin/cat /etc/hostname {m} ; true"]
    assert chain[1].pid == os.getpid()
    c.wait_for(lambda e: e.kind == Kind.EXIT and e.pid == cat.pid)
    assert pt.get(cat.pid).exited_at > 0
