"""Container metadata from the OCI bundle ``config.json`` the runtime wrote for
runc: annotations (containerd CRI, CRI-O, podman) and privilege from the spec."""
from __future__ import annotations

import os
from typing import Optional

from vigil.host_paths import host_path
from vigil.state.containers.metadata_values import (CRI, CRIO, K8S_FIELDS, drop_empty, json_dict, oci_mounts, parse_time_ns,
                                                     pod_labels_from, read_json, str_dict, truthy)

# (runtime, path template); {id} is the container id, {ns} a containerd namespace
CONTAINERD_TASK_DIRS = (
    "/run/containerd/io.containerd.runtime.v2.task",
    "/run/containerd/io.containerd.runtime.v1.linux",
    "/run/k3s/containerd/io.containerd.runtime.v2.task",          # k3s / rke2
    "/run/docker/containerd/daemon/io.containerd.runtime.v2.task",  # docker's private containerd
    "/run/docker/containerd/daemon/io.containerd.runtime.v1.linux",
)
BUNDLE_TEMPLATES = (
    ("podman", "/var/lib/containers/storage/overlay-containers/{id}/userdata/config.json"),
    ("cri-o", "/run/containers/storage/overlay-containers/{id}/userdata/config.json"),
    ("docker", "/run/docker/containerd/{id}/config.json"),
)


def spec_privileged(spec: dict) -> Optional[bool]:
    """Judge privilege from an OCI spec: access to every device plus CAP_SYS_ADMIN in the
    bounding set is what ``--privileged`` / ``privileged: true`` produce."""
    try:
        linux = spec.get("linux") or {}
        devs = (linux.get("resources") or {}).get("devices")
        caps = ((spec.get("process") or {}).get("capabilities") or {}).get("bounding") or []
    except AttributeError:
        return None
    all_devices = False
    if isinstance(devs, list):
        for d in devs:
            if (isinstance(d, dict) and d.get("allow") is True and not d.get("type") in ("b", "c")
                    and d.get("major") in (None, -1) and d.get("minor") in (None, -1)
                    and set(str(d.get("access", "rwm"))) >= set("rwm")):
                all_devices = True
    return bool(all_devices and "CAP_SYS_ADMIN" in caps)


# --- source: OCI bundle ------------------------------------------------------------------

def parse_oci_config(spec: dict, runtime_hint: str = "") -> dict:
    """Fields from an OCI ``config.json`` (already loaded)."""
    out: dict = {}
    if not isinstance(spec, dict):
        return out
    ann = str_dict(spec.get("annotations"))
    labels: dict = {}
    runtime = runtime_hint

    if any(k.startswith(CRI) for k in ann):
        runtime = runtime or "containerd"
        out["pod_name"] = ann.get(CRI + "sandbox-name", "")
        out["namespace"] = ann.get(CRI + "sandbox-namespace", "")
        out["pod_uid"] = ann.get(CRI + "sandbox-uid", "")
        out["k8s_container_name"] = ann.get(CRI + "container-name", "")
        out["container_type"] = ann.get(CRI + "container-type", "")
        out["sandbox_id"] = ann.get(CRI + "sandbox-id", "")
        out["image"] = ann.get(CRI + "image-name", "")
        if out["container_type"] == "sandbox":
            out["image"] = out["image"] or ann.get(CRI + "podsandbox.image-name", "")
            out["k8s_container_name"] = out["k8s_container_name"] or "POD"
    if ann.get("io.container.manager") == "libpod":
        runtime = runtime or "podman"
        priv = truthy(ann.get("io.podman.annotations.privileged"))
        if priv is not None:
            out["privileged"] = priv
    if any(k.startswith(CRIO) for k in ann) and ann.get("io.container.manager") != "libpod":
        # podman also writes a couple of io.kubernetes.cri-o.* keys; the manager key tells
        runtime = runtime or "cri-o"
        out.setdefault("pod_name", ann.get(CRIO + "KubeName", ""))
        out["container_type"] = ann.get(CRIO + "ContainerType", "")
        out["sandbox_id"] = ann.get(CRIO + "SandboxID", "")
        out["image"] = ann.get(CRIO + "ImageName", "")
        priv = truthy(ann.get(CRIO + "Privileged"))
        if priv is not None:
            out["privileged"] = priv
        crio_labels = str_dict(json_dict(ann.get(CRIO + "Labels")))
        labels.update(crio_labels)
        md = json_dict(ann.get(CRIO + "Metadata"))
        if md.get("name"):
            out["k8s_container_name"] = str(md["name"])
        if out["container_type"] == "sandbox":
            out["pod_labels"] = pod_labels_from(crio_labels)
            out["k8s_container_name"] = out.get("k8s_container_name") or "POD"
        if ann.get(CRIO + "Namespace"):
            out["namespace"] = ann[CRIO + "Namespace"]
        created = parse_time_ns(ann.get(CRIO + "Created"))
        if created:
            out["start_time"] = created
    # kubelet-style keys may be present as annotations (CRI-O mirrors them; podman users
    # can set them with --annotation)
    for key, field in K8S_FIELDS:
        v = ann.get(key) or labels.get(key)
        if v and not out.get(field):
            out[field] = v
    if runtime == "podman" and not out.get("start_time"):
        created = parse_time_ns(ann.get(CRIO + "Created"))
        if created:
            out["start_time"] = created
    if "privileged" not in out:
        p = spec_privileged(spec)
        if p is not None:
            out["privileged"] = p
    if labels:
        out["labels"] = labels
    mounts = oci_mounts(spec.get("mounts"))
    if mounts:
        out["mounts"] = mounts
    out["runtime"] = runtime
    out["annotations"] = ann
    return drop_empty(out)


def containerd_task_dirs(env=None) -> tuple:
    """The well-known containerd task dirs, plus ``<state>/io.containerd.runtime.v2.task``
    for every state dir in ``VIGIL_CONTAINERD_STATE`` (colon-separated; a containerd
    started with ``--state`` elsewhere)."""
    env = os.environ if env is None else env
    extra = [f"{d.rstrip('/')}/io.containerd.runtime.v2.task"
             for d in (env.get("VIGIL_CONTAINERD_STATE") or "").split(":") if d.startswith("/")]
    return tuple(extra) + CONTAINERD_TASK_DIRS


class BundleSource:
    name = "oci-bundle"

    def __init__(self, templates=BUNDLE_TEMPLATES, containerd_dirs=None):
        # host paths, as this process reaches them (VIGIL_HOST_ROOT)
        self.templates = tuple((rt, host_path(t)) for rt, t in templates)
        self.containerd_dirs = tuple(host_path(d) for d in (
            containerd_task_dirs() if containerd_dirs is None else containerd_dirs))

    def find(self, cid: str, runtime: str = "") -> Optional[tuple]:
        """(runtime, path) of the container's config.json, or None."""
        if not isinstance(cid, str) or not cid or "/" in cid or cid in (".", ".."):
            return None
        cands = []
        for rt, tmpl in self.templates:
            cands.append((rt, tmpl.format(id=cid)))
        for d in self.containerd_dirs:
            try:
                namespaces = os.listdir(d)
            except OSError:
                continue
            # k8s.io first: that's where kubelet's containers are
            namespaces.sort(key=lambda n: (n != "k8s.io", n != "moby", n))
            for ns in namespaces:
                rt = "docker" if ns == "moby" else "containerd"
                cands.append((rt, f"{d}/{ns}/{cid}/config.json"))
        # a runtime hint from the cgroup path moves its own candidates first
        if runtime:
            cands.sort(key=lambda c: c[0] != runtime)
        for rt, p in cands:
            if os.path.isfile(p):
                return rt, p
        return None

    def fetch(self, cid: str, runtime: str = "") -> Optional[dict]:
        found = self.find(cid, runtime)
        if not found:
            return None
        rt, path = found
        spec = read_json(path)
        if spec is None:
            return None
        out = parse_oci_config(spec, runtime or "")
        if not out.get("runtime"):
            out["runtime"] = rt
        if not out.get("start_time"):
            try:
                out["start_time"] = int(os.stat(path).st_mtime_ns)
            except OSError:
                pass
        out["_bundle"] = path
        sid = out.get("sandbox_id")
        if sid and sid != cid and out.get("runtime") == "cri-o" and "pod_labels" not in out:
            # CRI-O: the pod labels live in the sandbox's Labels annotation
            sb = self.find(sid, "cri-o")
            if sb:
                sspec = read_json(sb[1])
                if sspec:
                    sann = str_dict(sspec.get("annotations"))
                    pl = pod_labels_from(str_dict(json_dict(sann.get(CRIO + "Labels"))))
                    if pl:
                        out["pod_labels"] = pl
        return out
