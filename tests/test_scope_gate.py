"""The user-space half of scoping: the kernel decides host/container by pid
namespace; the pipeline drops what the cgroup (container identity) places on the
other side, so the two agree."""
from vigil.state.containers.model import HOST, UNKNOWN, ContainerInfo
from vigil.events import Event, Kind
from vigil.kernel.filters import KernelFilters
from vigil.pipeline import Pipeline

CTR = ContainerInfo(id="a" * 64, runtime="podman")


def _ev(container, n):
    ev = Event(Kind.EXEC, pid=1000 + n, tid=1000 + n, ppid=1, uid=0, gid=0, comm="sh",
               exe="/bin/sh", args=["sh"], cgroup_id=5, time=1)
    ev.container = container
    return ev


def _run(scope):
    p = Pipeline(KernelFilters(set(), scope=scope), seed=False)
    seen = []
    p.add_handler(lambda ev: seen.append(ev.container))
    for i, c in enumerate((HOST, CTR, UNKNOWN, None)):
        p._dispatch(_ev(c, i))
    return seen, p.scope_dropped


def test_host_only_drops_container_cgroups():
    seen, dropped = _run("host")
    assert seen == [HOST, UNKNOWN, None] and dropped == 1


def test_containers_only_drops_host_cgroups():
    seen, dropped = _run("containers")
    assert seen == [CTR, UNKNOWN, None] and dropped == 1


def test_all_keeps_everything():
    seen, dropped = _run("all")
    assert seen == [HOST, CTR, UNKNOWN, None] and dropped == 0
