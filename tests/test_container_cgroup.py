"""Cgroup path parsing: runtimes, k8s QoS / pod uid, /proc/<pid>/cgroup texts, malformed input."""
from pathlib import Path

import pytest

from vigil.state.containers.cgroup import (CgroupIdentity, parse, parse_path, parse_proc_cgroup,
                                    pick_path, normalize_path)

DATA = Path(__file__).parent / "data" / "cgroups"

CID = "4c0f1b3e9f5a7e2d8c6b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
CID2 = "990b2585eb9ded8675fdeb1f0458f9c50794454f30fc01e5ce1373114b0ee45f"
UID = "a3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
UID_ = UID.replace("-", "_")
STATIC_UID = "6f2c0ea3e2f04dc8b5e2bbf1e5a9d1c7"   # static pods: 32-hex hash

# (path, kind, runtime, container id, pod uid, qos)
CASES = [
    # containerd + systemd cgroup driver
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
     "container", "containerd", CID, UID, "burstable"),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     "container", "containerd", CID, UID, "besteffort"),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope",
     "container", "containerd", CID, UID, "guaranteed"),
    # without the leading slash (cgroup_mkdir paths may come either way? be lenient is not the goal:
    # a relative multi-component path is not a cgroup path) -> see MALFORMED
    # containerd / cgroupfs driver
    (f"/kubepods/burstable/pod{UID}/{CID}", "container", "", CID, UID, "burstable"),
    (f"/kubepods/besteffort/pod{UID}/{CID}", "container", "", CID, UID, "besteffort"),
    (f"/kubepods/pod{UID}/{CID}", "container", "", CID, UID, "guaranteed"),
    (f"/kubepods/pod{STATIC_UID}/{CID}", "container", "", CID, STATIC_UID, "guaranteed"),
    # CRI-O
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope",
     "container", "cri-o", CID, UID, "burstable"),
    (f"/kubepods/burstable/pod{UID}/crio-{CID}", "container", "cri-o", CID, UID, "burstable"),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{CID}.scope",
     "host", "cri-o", "", UID, "burstable"),
    (f"/machine.slice/crio-{CID}.scope", "container", "cri-o", CID, "", ""),
    # docker
    (f"/system.slice/docker-{CID}.scope", "container", "docker", CID, "", ""),
    (f"/docker/{CID}", "container", "docker", CID, "", ""),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{CID}.scope",
     "container", "docker", CID, UID, "besteffort"),
    # podman
    (f"/libpod_parent/libpod-{CID2}", "container", "podman", CID2, "", ""),
    (f"/machine.slice/libpod-{CID2}.scope", "container", "podman", CID2, "", ""),
    (f"/machine.slice/libpod-{CID2}.scope/container", "container", "podman", CID2, "", ""),
    (f"/machine.slice/libpod-conmon-{CID2}.scope", "host", "podman", "", "", ""),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID2}.scope",
     "container", "podman", CID2, "", ""),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID2}.scope/container",
     "container", "podman", CID2, "", ""),
    # kind / k8s-in-docker: the deepest container wins, custom kubelet cgroup root
    (f"/system.slice/docker-{CID2}.scope/kubelet.slice/kubelet-kubepods.slice/"
     f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     "container", "containerd", CID, UID, "besteffort"),
    (f"/docker/{CID2}/kubepods/burstable/pod{UID}/{CID}", "container", "", CID, UID, "burstable"),
    # sub-cgroups a container makes inside its own cgroup still belong to it
    (f"/system.slice/docker-{CID}.scope/init.scope", "container", "docker", CID, "", ""),
    # pod-level cgroups are not containers
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice", "pod", "", "", UID, "burstable"),
    (f"/kubepods/besteffort/pod{UID}", "pod", "", "", UID, "besteffort"),
    # host
    ("/", "host", "", "", "", ""),
    ("/system.slice/foo.service", "host", "", "", "", ""),
    ("/system.slice/docker.service", "host", "", "", "", ""),
    ("/system.slice/containerd.service", "host", "", "", "", ""),
    ("/user.slice/user-0.slice/session-3.scope", "host", "", "", "", ""),
    ("/init.scope", "host", "", "", "", ""),
    ("/kubepods.slice/kubepods-burstable.slice", "host", "", "", "", ""),
    ("/kubepods", "host", "", "", "", ""),
    ("/libpod_parent", "host", "", "", "", ""),
    # this machine's sandbox cgroup: 32 hex is not a container id
    ("/process_api/13fecd9f82e7cb7b4cfa89cd521490ff", "host", "", "", "", ""),
    # ids of the wrong length are not container ids
    (f"/docker/{CID[:63]}", "host", "", "", "", ""),
    (f"/docker/{CID}0", "host", "", "", "", ""),
    (f"/system.slice/docker-{CID[:12]}.scope", "host", "", "", "", ""),
    (f"/libpod_parent/libpod-{CID2.upper()}", "host", "", "", "", ""),
    # a bare 64-hex dir with no runtime context is not claimed
    (f"/foo/{CID}", "host", "", "", "", ""),
    # cgroup namespaces show '..' prefixes; removed cgroups '(deleted)'
    (f"/../../kubepods/besteffort/pod{UID}/{CID}", "container", "", CID, UID, "besteffort"),
    (f"/libpod_parent/libpod-{CID2} (deleted)", "container", "podman", CID2, "", ""),
    ("//system.slice//sshd.service/", "host", "", "", "", ""),
]


@pytest.mark.parametrize("path,kind,runtime,cid,uid,qos", CASES)
def test_parse_path(path, kind, runtime, cid, uid, qos):
    ident = parse_path(path)
    assert (ident.kind, ident.runtime, ident.container_id, ident.pod_uid, ident.qos) == \
        (kind, runtime, cid, uid, qos)
    assert parse(path) == ident


@pytest.mark.parametrize("leaf,runtime,cid", [
    (f"libpod-{CID2}", "podman", CID2),
    (f"libpod-{CID2}.scope", "podman", CID2),
    (f"cri-containerd-{CID}.scope", "containerd", CID),
    (f"crio-{CID}.scope", "cri-o", CID),
    (f"docker-{CID}.scope", "docker", CID),
])
def test_leaf_names(leaf, runtime, cid):
    ident = parse_path(leaf)
    assert ident.is_container and ident.runtime == runtime and ident.container_id == cid


@pytest.mark.parametrize("leaf", ["container", "sshd.service", CID, "", "init.scope",
                                  f"libpod-conmon-{CID2}.scope"])
def test_leaf_names_not_containers(leaf):
    assert not parse_path(leaf).is_container


MALFORMED = [
    None, 0, b"/docker/" + CID.encode(), "", "   ", "\n\n", "garbage", "::::", "0::",
    "0::relative/path", "kubepods/besteffort/pod" + UID + "/" + CID,
    "/docker/" + CID + "\x00", "/" + "a/" * 5000, "x" * 100000, "1:memory", "12:cpu:",
    "🙂/docker", "/docker/\udcff" + CID,
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_never_raises(text):
    for fn in (parse, parse_path, parse_proc_cgroup):
        ident = fn(text)
        assert isinstance(ident, CgroupIdentity)
        assert ident.kind in ("host", "unknown")
    pick_path(text)


def test_proc_cgroup_podman_hybrid():
    ident = parse_proc_cgroup((DATA / "podman_hybrid.txt").read_text())
    assert ident.runtime == "podman" and ident.container_id == CID2


def test_proc_cgroup_v1_container_with_root_v2():
    # hybrid host where only the v1 controllers carry the container (docker/cgroupfs, kubepods)
    text = (DATA / "docker_kubepods_v1.txt").read_text()
    ident = parse(text)
    assert ident.is_container and ident.container_id == CID and ident.pod_uid == UID
    assert ident.qos == "besteffort"
    assert pick_path(text) == f"/kubepods/besteffort/pod{UID}/{CID}"


def test_proc_cgroup_v2_only():
    ident = parse((DATA / "containerd_systemd_v2.txt").read_text())
    assert ident.runtime == "containerd" and ident.pod_uid == UID and ident.qos == "burstable"
    assert parse((DATA / "systemd_service_v2.txt").read_text()).is_host


def test_proc_cgroup_docker_systemd():
    ident = parse((DATA / "docker_systemd_v1.txt").read_text())
    assert ident.runtime == "docker" and ident.container_id == CID


def test_proc_cgroup_sandbox_host():
    text = (DATA / "host_hybrid_sandbox.txt").read_text()
    assert parse(text).is_host
    assert pick_path(text) == "/"


def test_single_lines():
    assert parse(f"0::/libpod_parent/libpod-{CID2}").container_id == CID2
    assert parse(f"4:memory:/docker/{CID}").runtime == "docker"
    assert parse(f"1:name=systemd:/kubepods/burstable/pod{UID}/{CID}").pod_uid == UID
    assert parse("0::/").is_host


def test_own_proc_cgroup_parses():
    text = Path("/proc/self/cgroup").read_text()
    ident = parse(text)
    assert ident.kind in ("host", "container", "pod")


def test_normalize_path():
    assert normalize_path("/../../a//b/ (deleted)") == "/a/b"
    assert normalize_path("/") == "/"


try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    _parts = st.sampled_from(["kubepods", "kubepods.slice", "besteffort", f"pod{UID}",
                              f"kubepods-burstable-pod{UID_}.slice", f"cri-containerd-{CID}.scope",
                              f"libpod-{CID2}", "docker", CID, "system.slice", "..", "", " (deleted)",
                              "crio-conmon-" + CID + ".scope", "x"])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(_parts, max_size=8), st.text(max_size=40))
    def test_fuzz_never_raises(parts, junk):
        for text in ("/" + "/".join(parts), "/".join(parts) + junk, junk,
                     f"0::/{'/'.join(parts)}\n4:memory:{junk}"):
            ident = parse(text)
            assert ident.kind in ("host", "container", "pod", "unknown")
            if ident.is_container:
                assert len(ident.container_id) == 64
