"""ContainerResolver: caching, background metadata, holding events, grace after rmdir."""
import os
import threading
import time

import pytest

from vigil.state.containers.cgroupfs import CgroupFS, find_v2_mount
from vigil.state.containers.model import HOST, UNKNOWN
from vigil.state.containers.resolver import ContainerResolver, EventHold
from vigil.events import Event, Kind

CID = "4c0f1b3e9f5a7e2d8c6b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
CID2 = "990b2585eb9ded8675fdeb1f0458f9c50794454f30fc01e5ce1373114b0ee45f"
UID = "a3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
CTRD_PATH = (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice/"
             f"cri-containerd-{CID}.scope")


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class FakeFetcher:
    """Answers from a dict; can be made slow with a gate."""

    def __init__(self, answers=None, gate=None):
        self.answers = answers or {}
        self.gate = gate
        self.calls = []

    def fetch(self, cid, runtime="", pod_uid=""):
        self.calls.append(cid)
        if self.gate is not None:
            self.gate.wait(5)
        a = dict(self.answers.get(cid, {}))
        if a:
            a.setdefault("sources", ("fake",))
        return a


def make_tree(root, paths):
    ids = {}
    for p in paths:
        d = os.path.join(root, p.lstrip("/"))
        os.makedirs(d, exist_ok=True)
        ids[p] = os.stat(d).st_ino
    return ids


@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path / "cg")
    os.makedirs(root)
    ids = make_tree(root, [CTRD_PATH, "/system.slice/sshd.service", f"/libpod_parent/libpod-{CID2}",
                           f"/libpod_parent/libpod-{CID2}/nested"])
    return root, ids


def ev(kind=Kind.OPEN, **kw):
    return Event(kind, **kw)


def test_cgroupfs_walk_and_lookup(tree):
    root, ids = tree
    fs = CgroupFS(root=root, refresh_interval=0)
    assert fs.path_for_id(ids[CTRD_PATH]) == CTRD_PATH
    assert fs.id_for_path(CTRD_PATH) == ids[CTRD_PATH]
    assert fs.path_for_id(123456789) is None
    assert fs.walks >= 1
    assert fs.cached_path(os.stat(root).st_ino) == "/"


def test_cgroupfs_refresh_rate_limited(tree):
    root, ids = tree
    clock = Clock()
    fs = CgroupFS(root=root, refresh_interval=0.5, clock=clock)
    fs.refresh()
    new = make_tree(root, ["/system.slice/late.service"])["/system.slice/late.service"]
    assert fs.path_for_id(new) is None            # walked just now: no second walk
    clock.t += 1
    assert fs.path_for_id(new) == "/system.slice/late.service"


def test_find_v2_mount_here():
    m = find_v2_mount()
    if m is None:
        pytest.skip("no cgroup2 mount on this machine")
    assert os.path.exists(os.path.join(m, "cgroup.procs"))


def test_host_and_container_resolution(tree):
    root, ids = tree
    f = FakeFetcher({CID: {"name": "nginx", "namespace": "shop", "image": "nginx:1.25"}})
    r = ContainerResolver(cgroupfs=CgroupFS(root=root, refresh_interval=0), fetcher=f, start=False)
    host = r.resolve(ev(cgroup_id=ids["/system.slice/sshd.service"], pid=None))
    assert host is HOST
    info = r.resolve(ev(cgroup_id=ids[CTRD_PATH]))
    assert info.id == CID and info.runtime == "containerd" and info.pod_uid == UID
    assert info.qos == "burstable" and not info.complete and info.cgroup_path == CTRD_PATH
    assert r.stats()["pending"] == 1
    r.fetch_now(CID)
    info2 = r.resolve(ev(cgroup_id=ids[CTRD_PATH]))
    assert info2.complete and info2.name == "nginx" and info2.namespace == "shop"
    assert info2.image_repository == "nginx" and info2.image_tag == "1.25"
    assert info2.pod_uid == UID
    s = r.stats()
    assert s["pending"] == 0 and s["misses"] == 2 and s["hits"] == 1 and s["lookups"] == 3
    # nested cgroup of the same container shares the entry
    nested = r.resolve(ev(cgroup_id=ids[f"/libpod_parent/libpod-{CID2}/nested"]))
    top = r.resolve(ev(cgroup_id=ids[f"/libpod_parent/libpod-{CID2}"]))
    assert nested is top and top.runtime == "podman"
    assert f.calls.count(CID2) == 0            # no worker: nothing fetched yet


def test_hot_path_no_io_when_cached(tree, monkeypatch):
    root, ids = tree
    r = ContainerResolver(cgroupfs=CgroupFS(root=root, refresh_interval=0), fetcher=FakeFetcher(), start=False)
    r.resolve(ev(cgroup_id=ids[CTRD_PATH]))
    r.resolve(ev(cgroup_id=ids["/system.slice/sshd.service"]))

    def no_io(*a, **k):
        raise AssertionError("I/O on the hot path")

    monkeypatch.setattr(os, "stat", no_io)
    monkeypatch.setattr(os, "scandir", no_io)
    monkeypatch.setattr("builtins.open", no_io)
    for _ in range(1000):
        assert r.resolve(ev(cgroup_id=ids[CTRD_PATH])).id == CID
        assert r.resolve(ev(cgroup_id=ids["/system.slice/sshd.service"])) is HOST


def test_unknown_is_negatively_cached(tree):
    root, _ = tree
    clock = Clock()
    fs = CgroupFS(root=root, refresh_interval=0.5, clock=clock)
    r = ContainerResolver(cgroupfs=fs, fetcher=FakeFetcher(), start=False, clock=clock, unknown_ttl=1.0)
    assert r.resolve(ev(cgroup_id=987654321)) is UNKNOWN
    walks = fs.walks
    for _ in range(100):
        assert r.resolve(ev(cgroup_id=987654321)) is UNKNOWN
    assert fs.walks == walks and r.stats()["hits"] == 100
    clock.t += 2
    assert r.resolve(ev(cgroup_id=987654321)) is UNKNOWN    # tried again after the TTL
    assert fs.walks == walks + 1


def test_mkdir_and_rmdir_grace(tmp_path):
    clock = Clock()
    fs = CgroupFS(root=str(tmp_path / "absent"), refresh_interval=0.5, clock=clock)
    f = FakeFetcher({CID2: {"name": "web"}})
    r = ContainerResolver(cgroupfs=fs, fetcher=f, start=False, clock=clock, grace=30)
    seen = []
    r.add_listener(lambda g, i: seen.append((g, None if i is None else i.id)))
    path = f"/libpod_parent/libpod-{CID2}"
    r.resolve(ev(Kind.CGROUP_MKDIR, cgroup_id=4242, path=path))
    r.fetch_now(CID2)
    assert r.resolve(ev(cgroup_id=4242)).name == "web"
    r.resolve(ev(Kind.CGROUP_RMDIR, cgroup_id=4242, path=path))
    clock.t += 29
    r.expire()
    assert r.resolve(ev(cgroup_id=4242)).name == "web"          # late event, still known
    clock.t += 2
    assert r.expire() == 1
    assert r.peek(4242) is None
    assert (4242, None) in seen and (4242, CID2) in seen
    assert r.stats()["containers"] == 0


def test_exec_cgroup_name_when_path_unknown(tmp_path):
    fs = CgroupFS(root=str(tmp_path / "absent"))
    r = ContainerResolver(cgroupfs=fs, fetcher=FakeFetcher(), start=False)
    info = r.resolve(ev(Kind.EXEC, cgroup_id=77, pid=None, cgroup_name=f"cri-containerd-{CID}.scope"))
    assert info.id == CID and info.runtime == "containerd" and info.pod_uid == ""


def test_proc_pid_cgroup_used(tmp_path, tree):
    root, ids = tree
    proc = tmp_path / "proc"
    (proc / "4321").mkdir(parents=True)
    (proc / "4321" / "cgroup").write_text(f"4:memory:{CTRD_PATH}\n0::{CTRD_PATH}\n")
    fs = CgroupFS(root=root, refresh_interval=1e9, proc=str(proc))
    fs._last_walk = 1e18  # never walk: the answer must come from /proc + stat
    r = ContainerResolver(cgroupfs=fs, fetcher=FakeFetcher(), proc=str(proc), start=False)
    info = r.resolve(ev(cgroup_id=ids[CTRD_PATH], pid=4321))
    assert info.id == CID and info.pod_uid == UID
    assert fs.walks == 0
    # /proc says a path whose inode is not the event's cgroup id (task moved): not trusted
    assert r.resolve(ev(cgroup_id=5555, pid=4321)) is UNKNOWN


def test_background_worker_and_wait_for(tree):
    root, ids = tree
    gate = threading.Event()
    f = FakeFetcher({CID: {"name": "nginx"}}, gate=gate)
    with ContainerResolver(cgroupfs=CgroupFS(root=root), fetcher=f, hold=0.05) as r:
        t0 = time.monotonic()
        info = r.resolve(ev(cgroup_id=ids[CTRD_PATH]))
        assert time.monotonic() - t0 < 0.5 and not info.complete   # never blocks on metadata
        assert not r.wait_for(ids[CTRD_PATH], 0.05).complete
        assert r.stats()["timeouts"] == 1
        gate.set()
        done = r.wait_for(ids[CTRD_PATH], 5)
        assert done.complete and done.name == "nginx"


def test_retry_when_runtime_not_ready(tree):
    root, ids = tree
    f = FakeFetcher({})
    with ContainerResolver(cgroupfs=CgroupFS(root=root), fetcher=f, retry_delays=(0.01, 0.3, 1.0)) as r:
        r.resolve(ev(cgroup_id=ids[CTRD_PATH]))
        time.sleep(0.05)
        f.answers[CID] = {"name": "late"}
        assert r.wait_for(ids[CTRD_PATH], 5).name == "late"
        assert f.calls.count(CID) >= 2


def test_gives_up_after_retries(tree):
    root, ids = tree
    with ContainerResolver(cgroupfs=CgroupFS(root=root), fetcher=FakeFetcher(), retry_delays=(0.01,)) as r:
        r.resolve(ev(cgroup_id=ids[CTRD_PATH]))
        info = r.wait_for(ids[CTRD_PATH], 5)
        assert info.complete and info.id == CID and info.name == ""
        assert r.stats()["fetch_empty"] == 1


def test_event_hold_keeps_order_and_bounds_delay(tree):
    root, ids = tree
    clock = Clock()
    gate = threading.Event()
    f = FakeFetcher({CID: {"name": "nginx"}})
    r = ContainerResolver(cgroupfs=CgroupFS(root=root), fetcher=f, start=False, clock=clock)
    hold = EventHold(r, max_hold=0.05, clock=clock)
    e_host = ev(cgroup_id=ids["/system.slice/sshd.service"])
    assert hold.push(e_host) == [e_host]                       # nothing held: straight out
    e1 = ev(cgroup_id=ids[CTRD_PATH])
    e2 = ev(cgroup_id=ids["/system.slice/sshd.service"])
    assert hold.push(e1) == []
    assert hold.push(e2) == []                                  # behind e1: order is kept
    r.fetch_now(CID)
    out = hold.poll()
    assert out == [e1, e2] and e1.container.complete and e1.container.name == "nginx"
    e3 = ev(cgroup_id=ids[f"/libpod_parent/libpod-{CID2}"])
    assert hold.push(e3) == []
    clock.t += 0.06
    assert hold.poll() == [e3] and not e3.container.complete
    assert hold.timeouts == 1 and r.stats()["timeouts"] == 1


def test_seed_finds_existing(tree):
    root, ids = tree
    f = FakeFetcher()
    r = ContainerResolver(cgroupfs=CgroupFS(root=root), fetcher=f, start=False)
    assert r.seed() == 2
    assert r.peek(ids[CTRD_PATH]).id == CID
    assert r.peek(ids["/system.slice/sshd.service"]) is HOST
    assert r.stats()["lookups"] == 0


def test_resolve_without_cgroup_id(tmp_path):
    proc = tmp_path / "proc"
    (proc / "9").mkdir(parents=True)
    (proc / "9" / "cgroup").write_text(f"0::/libpod_parent/libpod-{CID2}\n")
    r = ContainerResolver(cgroupfs=CgroupFS(root=str(tmp_path / "none"), proc=str(proc)),
                          fetcher=FakeFetcher(), proc=str(proc), start=False)
    assert r.resolve(ev(cgroup_id=None, pid=9)).id == CID2
    assert r.resolve(ev(cgroup_id=None, pid=None)) is UNKNOWN


def test_live_container_fetched_before_seeded_ones(tmp_path):
    """Containers that were there at start are fetched after one seen live: a slow source
    on a backlog of old containers must not keep a short-lived new one waiting until its
    runtime state is gone."""
    root = str(tmp_path / "cg")
    old = [f"{i:064x}" for i in range(1, 6)]
    ids = make_tree(root, [f"/libpod_parent/libpod-{c}" for c in old] + [CTRD_PATH])
    os.rmdir(os.path.join(root, CTRD_PATH.lstrip("/")))   # the new one appears after seed
    f = FakeFetcher({c: {"name": "old"} for c in old} | {CID: {"name": "new"}})
    r = ContainerResolver(cgroupfs=CgroupFS(root=root), fetcher=f, start=False)
    assert r.seed() == 5
    r.resolve(ev(Kind.CGROUP_MKDIR, cgroup_id=4242, path=CTRD_PATH))
    r.start()
    try:
        assert r.wait_for(4242, 5).name == "new"
        assert f.calls[0] == CID, f.calls
    finally:
        r.stop()


def test_local_files_read_when_the_cgroup_appears(tmp_path):
    """A new container's local runtime state (OCI bundle, storage) is read on the event's
    thread when its cgroup appears: a container that lives a few milliseconds has its
    bundle gone before a queued fetch; the slow sources still run afterwards."""
    fs = CgroupFS(root=str(tmp_path / "absent"))

    class Fetcher(FakeFetcher):
        def fetch_fast(self, cid, runtime=""):
            self.calls.append(("fast", cid))
            return {"name": "redis", "image": "docker.io/library/redis:7.2", "sources": ("oci-bundle",)}

    gate = threading.Event()
    f = Fetcher({}, gate=gate)        # the slow fetch waits, then finds nothing (state gone)
    with ContainerResolver(cgroupfs=fs, fetcher=f, retry_delays=()) as r:
        info = r.resolve(ev(Kind.CGROUP_MKDIR, cgroup_id=4242, path=CTRD_PATH))
        assert f.calls[0] == ("fast", CID)
        assert (info.name, info.image, info.complete) == ("redis", "docker.io/library/redis:7.2", False)
        gate.set()
        done = r.wait_for(4242, 5)
        assert done.complete and done.name == "redis" and done.sources == ("oci-bundle",)
        assert r.stats()["fetch_empty"] == 0
