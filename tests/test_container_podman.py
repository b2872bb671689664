"""End to end against real podman (runc, busybox rootfs, no image pulls).

Skips cleanly where podman, busybox, root or cgroup v2 are missing.
"""
import os
import subprocess
import threading
import time
import uuid

import pytest

from podman_env import PODMAN, V2, make_rootfs, podman, podman_service, skip_reason
from vigil.state.containers.cgroupfs import CgroupFS
from vigil.state.containers.metadata import MetadataFetcher
from vigil.state.containers.resolver import ContainerResolver
from vigil.events import Event, Kind

pytestmark = pytest.mark.slow

SKIP = skip_reason()
if SKIP:
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=SKIP)]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    return make_rootfs(tmp_path_factory.mktemp("rootfs"),
                       ("sh", "cat", "sed", "stat", "sleep", "echo", "true"), dirs=("cg2",))


@pytest.fixture(scope="module")
def podman_socket(tmp_path_factory):
    """A podman API service (Docker-compatible) on a private socket."""
    yield from podman_service(str(tmp_path_factory.mktemp("podsock") / "podman.sock"))


LABELS = ["--label", "io.kubernetes.pod.name=web-1", "--label", "io.kubernetes.pod.namespace=shop",
          "--label", "io.kubernetes.container.name=nginx", "--label", "team=payments",
          "--annotation", "io.kubernetes.pod.name=web-1"]


def start_container(rootfs, name, script, extra=()):
    """Run a container that prints 'CG <v2 path> <cgroup id>' from inside, then ``script``."""
    inner = ('p=$(sed -n "s/^0:://p" /proc/self/cgroup); '
             'echo "CG $p $(stat -c %i /cg2$p)"; ' + script)
    cmd = [PODMAN, "run", "--rm", "--name", name, *LABELS, *extra,
           "-v", f"{V2}:/cg2:ro", "--rootfs", rootfs, "/bin/sh", "-c", inner]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if len(line) != 3 or line[0] != "CG":
        proc.kill()
        err = proc.stderr.read()
        pytest.fail(f"container did not report its cgroup: {line} {err[:500]}")
    return proc, line[1], int(line[2])


@pytest.mark.parametrize("via", ["api", "cli"])
def test_podman_container_resolves(rootfs, podman_socket, via):
    name = f"vigil-test-{uuid.uuid4().hex[:8]}"
    proc, path, cgid = start_container(rootfs, name, "sleep 30")
    try:
        cid = podman("inspect", "-f", "{{.Id}}", name).stdout.strip()
        pid = int(podman("inspect", "-f", "{{.State.Pid}}", name).stdout.strip())
        assert len(cid) == 64
        assert path == f"/libpod_parent/libpod-{cid}" or cid in path
        fs = CgroupFS(root=V2)
        assert fs.path_for_id(cgid) == path           # the id seen inside is the host inode
        assert fs.path_for_pid(pid) == path
        if via == "api":
            fetcher = MetadataFetcher(docker_sockets=[podman_socket], podman_cli=False)
        else:
            fetcher = MetadataFetcher(docker_sockets=[], podman_cli=True)
        with ContainerResolver(cgroupfs=fs, fetcher=fetcher) as r:
            first = r.resolve(Event(Kind.OPEN, cgroup_id=cgid, pid=pid))
            assert first.id == cid and first.runtime == "podman"
            info = r.wait_for(cgid, 15)
            assert info.complete, r.stats()
            assert info.id == cid
            assert info.name == name
            assert info.pod_name == "web-1"
            assert info.namespace == "shop"
            assert info.k8s_container_name == "nginx"
            assert info.labels.get("team") == "payments"
            assert info.labels.get("io.kubernetes.pod.name") == "web-1"
            # --rootfs: podman knows no image and says so (empty), nothing is invented
            assert info.image == "" and info.image_repository == "" and info.image_digest == ""
            assert info.privileged is False
            assert info.start_time > 0
            assert info.cgroup_path == path and info.cgroup_id == cgid
            assert "oci-bundle" in info.sources
            assert ("docker-api" if via == "api" else "podman-cli") in info.sources
            # the hot path now hits the cache
            again = r.resolve(Event(Kind.OPEN, cgroup_id=cgid, pid=pid))
            assert again is info
            assert r.stats()["hits"] >= 1
    finally:
        podman("kill", name)
        proc.wait(30)


class CgroupPoller:
    """Stands in for the kernel's cgroup_mkdir/cgroup_rmdir events: polls one directory of
    the v2 hierarchy and feeds the resolver."""

    def __init__(self, resolver, root, rel="/libpod_parent", interval=0.003):
        self.resolver, self.root, self.rel, self.interval = resolver, root, rel, interval
        self.seen = {}
        self.events = []
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _scan(self):
        out = {}
        try:
            with os.scandir(self.root + self.rel) as it:
                for de in it:
                    if de.is_dir(follow_symlinks=False):
                        out[f"{self.rel}/{de.name}"] = de.inode()
        except OSError:
            pass
        return out

    def _run(self):
        self.seen = self._scan()
        while not self._stop.is_set():
            now = self._scan()
            for p, ino in now.items():
                if p not in self.seen:
                    e = Event(Kind.CGROUP_MKDIR, cgroup_id=ino, path=p)
                    self.events.append(e)
                    self.resolver.resolve(e)
            for p, ino in self.seen.items():
                if p not in now:
                    e = Event(Kind.CGROUP_RMDIR, cgroup_id=ino, path=p)
                    self.events.append(e)
                    self.resolver.resolve(e)
            self.seen = now
            time.sleep(self.interval)

    def __enter__(self):
        self.t.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *a):
        self._stop.set()
        self.t.join(5)


@pytest.mark.parametrize("script", ["sleep 0.3", "true"])
def test_short_lived_container_still_resolves(rootfs, podman_socket, script):
    name = f"vigil-short-{uuid.uuid4().hex[:8]}"
    fs = CgroupFS(root=V2)
    fetcher = MetadataFetcher(docker_sockets=[podman_socket], podman_cli=False)
    with ContainerResolver(cgroupfs=fs, fetcher=fetcher, grace=30) as r, \
            CgroupPoller(r, V2) as poller:
        t0 = time.monotonic()
        proc, path, cgid = start_container(rootfs, name, script)
        assert proc.wait(30) == 0
        lifetime = time.monotonic() - t0
        # podman --rm has removed the container and its cgroup by now
        deadline = time.monotonic() + 5
        while os.path.exists(V2 + path) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)
        assert not os.path.exists(V2 + path)
        kinds = [(e.type, e.cgroup_id) for e in poller.events]
        assert ("cgroup_mkdir", cgid) in kinds and ("cgroup_rmdir", cgid) in kinds
        assert podman("container", "exists", name).returncode != 0   # gone from podman too
        # a late event from the dead container still resolves, with its metadata
        late = r.resolve(Event(Kind.EXIT, cgroup_id=cgid, pid=None))
        info = r.wait_for(cgid, 10) if not late.complete else late
        assert info.id in path and info.runtime == "podman"
        assert info.name == name
        assert info.pod_name == "web-1" and info.namespace == "shop"
        assert lifetime < 3            # podman run --rm of 'sleep 0.3' takes ~0.65 s here
