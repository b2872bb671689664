"""End to end against a private containerd (ctr + runc, busybox rootfs): the container's
OCI bundle carries CRI-style annotations and sits in a kubelet-style cgroupfs path.

Skips cleanly where containerd, ctr, runc, busybox, root or cgroup v2 are missing.
"""
import os
import subprocess
import time

import pytest

from podman_env import (BUSYBOX, CONTAINERD, CTR, RUNC, V2, containerd_service, cri_container,
                        ctr_run, make_rootfs, remove_cgroup_tree)
from vigil.state.containers.cgroupfs import CgroupFS
from vigil.state.containers.metadata import BundleSource, MetadataFetcher
from vigil.state.containers.resolver import ContainerResolver
from vigil.events import Event, Kind

_missing = [n for n, v in (("containerd", CONTAINERD), ("ctr", CTR), ("runc", RUNC),
                           ("busybox", BUSYBOX), ("cgroup v2", V2)) if not v]
pytestmark = [pytest.mark.slow]
if _missing:
    pytestmark.append(pytest.mark.skip(reason="missing: " + ", ".join(_missing)))
elif os.geteuid() != 0:
    pytestmark.append(pytest.mark.skip(reason="needs root"))


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    yield from containerd_service(tmp_path_factory.mktemp("ctrd"))


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    return make_rootfs(tmp_path_factory.mktemp("rootfs"), ("sh", "sleep", "cat"))


def test_containerd_cri_annotations(containerd, rootfs):
    sock, state = containerd
    cid, uid, top, cg, ann = cri_container("vigil-test", "nginx", "web-1", "shop",
                                           "docker.io/library/nginx:1.25.3")
    r = ctr_run(sock, cid, cg, ann, rootfs, "sleep 30", "-d")
    assert r.returncode == 0, r.stderr
    try:
        deadline = time.monotonic() + 10
        while not os.path.isdir(V2 + cg) and time.monotonic() < deadline:
            time.sleep(0.05)
        cgid = os.stat(V2 + cg).st_ino
        task_dir = f"{state}/io.containerd.runtime.v2.task"
        assert os.path.isfile(f"{task_dir}/k8s.io/{cid}/config.json")
        fetcher = MetadataFetcher(sources=[BundleSource(containerd_dirs=(task_dir,))])
        with ContainerResolver(cgroupfs=CgroupFS(root=V2), fetcher=fetcher) as res:
            first = res.resolve(Event(Kind.OPEN, cgroup_id=cgid, pid=None))
            # cgroupfs driver: the path alone cannot tell containerd from docker
            assert first.id == cid and first.pod_uid == uid and first.qos == "besteffort"
            info = res.wait_for(cgid, 10)
            assert info.complete
            assert info.runtime == "containerd"
            assert (info.pod_name, info.namespace, info.k8s_container_name) == ("web-1", "shop", "nginx")
            assert info.name == "nginx"
            assert (info.image_repository, info.image_tag) == ("docker.io/library/nginx", "1.25.3")
            assert info.container_type == "container"
            assert info.privileged is False
    finally:
        subprocess.run([CTR, "-a", sock, "-n", "k8s.io", "task", "kill", "-s", "KILL", cid],
                       capture_output=True, timeout=30)
        for _ in range(50):
            d = subprocess.run([CTR, "-a", sock, "-n", "k8s.io", "task", "delete", cid],
                               capture_output=True, timeout=30)
            if d.returncode == 0 or b"not found" in d.stderr:
                break
            time.sleep(0.1)
        subprocess.run([CTR, "-a", sock, "-n", "k8s.io", "container", "delete", cid],
                       capture_output=True, timeout=30)
        remove_cgroup_tree(top)
