"""The vigil image for the deployment tests: built once per test session with
`make image` from a clean build cache (the Debian base made with mmdebstrap is
kept and reused when present), and the DaemonSet as podman runs it.

Plain helpers (``from image_env import ...``):

* ``IMAGE``; ``build_image()`` -> (image, seconds), cached; ``pytest.skip`` when podman
  cannot run containers here;
* ``rendered(path)``: the objects ``kubectl kustomize path`` renders;
* ``daemonset_run_args(ds, image)``: ``podman run`` arguments with the DaemonSet's
  host namespaces, capabilities, env and host mounts.
"""
from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from podman_env import skip_reason

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/vigil:test"
KUBECTL = shutil.which("kubectl")


@functools.cache
def _build():
    t = time.monotonic()
    r = subprocess.run(["make", "-C", str(ROOT), "image", f"IMAGE={IMAGE}",
                        "BUILD_FLAGS=--no-cache"], capture_output=True, text=True, timeout=1200)
    return r, time.monotonic() - t


def build_image():
    why = skip_reason()
    if why:
        pytest.skip(why)
    r, secs = _build()
    assert r.returncode == 0, f"make image failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return IMAGE, secs


def rendered(path) -> list:
    if not KUBECTL:
        pytest.skip("kubectl is not installed")
    r = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def one(objs, kind, name=None):
    (o,) = [d for d in objs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]
    return o


def env_value(e: dict):
    """A literal for what podman cannot resolve: the node's name."""
    ref = (e.get("valueFrom") or {}).get("fieldRef")
    if ref and ref.get("fieldPath") == "spec.nodeName":
        return socket.gethostname()
    return e.get("value")


def daemonset_run_args(ds: dict, image: str, extra_env=None) -> list:
    """`podman run` arguments for the DaemonSet's pod: host PID namespace (and the
    host cgroup namespace, as runtimes give on this hybrid-cgroup node), its
    capabilities, literal env, and every hostPath mount."""
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    sc = c["securityContext"]
    args = ["--pid=host" if spec.get("hostPID") else "--pid=private", "--cgroupns=host"]
    args += [f"--cap-drop={','.join(sc['capabilities']['drop'])}",
             f"--cap-add={','.join(sc['capabilities']['add'])}",
             "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for e in c["env"]:
        v = env_value(e)
        if v is not None:
            args += ["-e", f"{e['name']}={v}"]
    for k, v in (extra_env or {}).items():
        args += ["-e", f"{k}={v}"]
    vols = {v["name"]: v for v in spec["volumes"]}
    for m in c["volumeMounts"]:
        hp = vols[m["name"]].get("hostPath")
        if hp is None:
            continue
        if not Path(hp["path"]).exists():
            if hp.get("type") != "DirectoryOrCreate":
                continue
            Path(hp["path"]).mkdir(parents=True, exist_ok=True)
        args += ["-v", f"{hp['path']}:{m['mountPath']}:{'ro' if m.get('readOnly') else 'rw'}"]
    for m in c["volumeMounts"]:
        if "emptyDir" in vols[m["name"]]:
            args += ["--tmpfs", m["mountPath"]]
    return args
