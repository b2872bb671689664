"""Shared set-up for the container tests: real podman (runc) or a private containerd
running busybox ``--rootfs`` containers (no image pulls).

Plain helpers, imported by the test modules (``from podman_env import ...``; pytest
puts ``tests/`` on ``sys.path``):

* ``PODMAN``, ``BUSYBOX``, ``V2`` (the cgroup v2 mount), ``CONTAINERD``, ``CTR``;
* ``skip_reason()``: why the podman tests cannot run here (None: they can), cached;
* ``podman(*args)``: run podman, captured;
* ``make_rootfs(root, tools)``: a busybox root filesystem (/bin/sh and some tools);
* ``podman_service(sock)`` / ``containerd_service(base)``: generators for module
  fixtures (``yield from``) that start a private API service / containerd;
* ``cri_container(...)`` / ``ctr_run(...)``: a CRI-style (kubelet cgroupfs path,
  CRI annotations) container run by ``ctr``;
* ``poll(fn)``, ``remove_cgroup_tree(top)``.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from vigil.state.containers.cgroupfs import find_v2_mount

PODMAN = shutil.which("podman")
BUSYBOX = shutil.which("busybox") or ("/bin/busybox" if os.path.exists("/bin/busybox") else None)
V2 = find_v2_mount()
CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")
RUNC = shutil.which("runc")

ROOTFS_DIRS = ("bin", "proc", "sys", "dev", "etc", "tmp")
ROOTFS_TOOLS = ("sh", "cat", "echo", "sleep", "true")


def tools_missing() -> str | None:
    """podman or busybox is not installed (None: both are)."""
    if not PODMAN:
        return "podman is not installed"
    if not BUSYBOX:
        return "busybox is not installed (needed for a --rootfs container)"
    return None


@functools.cache
def skip_reason() -> str | None:
    """Why rootful podman with a busybox --rootfs cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (rootful podman)"
    why = tools_missing()
    if why:
        return why
    if not V2:
        return "no cgroup v2 hierarchy mounted"
    try:
        r = subprocess.run([PODMAN, "info", "--format", "{{.Host.OCIRuntime.Name}}"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return f"podman info failed: {e}"
    if r.returncode != 0:
        return f"podman info failed: {r.stderr.strip()[:200]}"
    return None


def podman(*args, timeout=60):
    return subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)


def make_rootfs(root: Path, tools=ROOTFS_TOOLS, dirs=(), links=None) -> str:
    """A busybox root filesystem at ``root`` (created if missing): the usual top
    directories plus ``dirs``, /bin/busybox with a symlink per tool in ``tools``, and
    the symlinks ``links`` ({name: target}).  Returns its path as a string."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for d in (*ROOTFS_DIRS, *dirs):
        (root / d).mkdir()
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for tool in tools:
        os.symlink("busybox", root / "bin" / tool)
    for name, target in (links or {}).items():
        os.symlink(target, root / name)
    return str(root)


def poll(fn, timeout=10.0, every=0.1):
    """Call ``fn`` until it returns something true or ``timeout`` s have passed; its
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(every)


def _stop(p, timeout):
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()


def podman_service(sock: str):
    """For a module fixture (``yield from``): podman's Docker-compatible API on the
    private socket ``sock``; yields ``sock``.  Skips if it does not come up."""
    p = subprocess.Popen([PODMAN, "system", "service", "--time=0", f"unix://{sock}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not poll(lambda: os.path.exists(sock) or p.poll() is not None, 20, 0.05) \
            or not os.path.exists(sock):
        p.kill()
        pytest.skip("podman system service did not come up")
    yield sock
    _stop(p, 10)


def containerd_service(base: Path):
    """For a module fixture (``yield from``): a private containerd with its root, state,
    socket and log under the existing directory ``base``; yields (socket, state dir).
    Skips if it does not answer ``ctr version`` within 30 s."""
    sock = str(base / "c.sock")
    log = open(base / "log", "w")
    p = subprocess.Popen([CONTAINERD, "--root", str(base / "root"), "--state", str(base / "state"),
                          "--address", sock], stdout=log, stderr=subprocess.STDOUT)
    ok = poll(lambda: p.poll() is not None or (os.path.exists(sock) and subprocess.run(
        [CTR, "-a", sock, "version"], capture_output=True).returncode == 0), 30)
    if not ok or p.poll() is not None:
        p.kill()
        log.close()
        pytest.skip("containerd did not start: " + (base / "log").read_text()[-500:])
    yield sock, str(base / "state")
    _stop(p, 15)
    log.close()


def cri_container(prefix, name, pod, namespace, image):
    """A new CRI-style container: (id: 64 hex, pod uid, ``top``: a private parent cgroup
    to remove afterwards, its kubelet-style cgroupfs path below ``top``, CRI annotations)."""
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    uid = str(uuid.uuid4())
    top = f"/{prefix}-{cid[:8]}"
    cg = f"{top}/kubepods/besteffort/pod{uid}/{cid}"
    ann = {"io.kubernetes.cri.container-type": "container",
           "io.kubernetes.cri.container-name": name,
           "io.kubernetes.cri.sandbox-name": pod,
           "io.kubernetes.cri.sandbox-namespace": namespace,
           "io.kubernetes.cri.sandbox-uid": uid,
           "io.kubernetes.cri.image-name": image}
    return cid, uid, top, cg, ann


def ctr_run(sock, cid, cg, ann, rootfs, script, mode="--rm"):
    """``ctr run`` (``mode``: --rm or -d) of ``/bin/sh -c script`` in namespace k8s.io."""
    args = [CTR, "-a", sock, "-n", "k8s.io", "run", mode, "--cgroup", cg]
    for k, v in ann.items():
        args += ["--annotation", f"{k}={v}"]
    args += ["--rootfs", rootfs, cid, "/bin/sh", "-c", script]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def remove_cgroup_tree(top):
    """runc leaves the parent cgroups it made: remove our private tree in every hierarchy."""
    for h in os.listdir("/sys/fs/cgroup") + [""]:
        base = os.path.join("/sys/fs/cgroup", h) + top
        if not os.path.isdir(base):
            continue
        for d, _, _ in sorted(os.walk(base), key=lambda t: -len(t[0])):
            try:
                os.rmdir(d)
            except OSError:
                pass
