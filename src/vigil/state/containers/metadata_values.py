"""What the container metadata sources share: kubelet's and the CRI runtimes'
label and annotation keys, and the small parsers for the values they hold
(image references, RFC 3339 times, JSON-in-a-string, booleans as text)."""
from __future__ import annotations

import calendar
import json
import re
from typing import Optional

# kubelet's labels on containers (dockershim, cri-dockerd; CRI-O mirrors them as annotations)
K8S_POD_NAME = "io.kubernetes.pod.name"
K8S_POD_NS = "io.kubernetes.pod.namespace"
K8S_POD_UID = "io.kubernetes.pod.uid"
K8S_CONTAINER_NAME = "io.kubernetes.container.name"
K8S_SANDBOX_ID = "io.kubernetes.sandbox.id"
K8S_DOCKER_TYPE = "io.kubernetes.docker.type"      # podsandbox | container
# kubelet's keys -> ContainerInfo fields (as labels, or mirrored as annotations)
K8S_FIELDS = ((K8S_POD_NAME, "pod_name"), (K8S_POD_NS, "namespace"),
               (K8S_POD_UID, "pod_uid"), (K8S_CONTAINER_NAME, "k8s_container_name"))

# containerd CRI plugin annotations
CRI = "io.kubernetes.cri."
# CRI-O annotations
CRIO = "io.kubernetes.cri-o."
DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[+._-][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")


def split_image(ref: str) -> tuple:
    """``registry:5000/ns/repo:tag@sha256:...`` -> (repository, tag, digest).
    Nothing is invented: no tag given means tag "".  A bare image id
    (``sha256:<hex>`` or 64 hex) is not a repository: ("", "", "")."""
    if not isinstance(ref, str):
        return "", "", ""
    ref = ref.strip()
    if not ref:
        return "", "", ""
    digest = ""
    if "@" in ref:
        ref, _, digest = ref.partition("@")
        if not DIGEST_RE.match(digest):
            digest = ""
    if DIGEST_RE.match(ref) or re.fullmatch(r"[0-9a-f]{64}", ref):
        return "", "", digest
    tag = ""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref, tag = ref[:colon], ref[colon + 1:]
    return ref, tag, digest


def parse_time_ns(ts) -> int:
    """RFC 3339 with optional fractional seconds (Go's format) -> ns since the epoch; 0 if
    missing, zero (0001-01-01) or unparsable."""
    if not isinstance(ts, str) or not ts or ts.startswith("0001-"):
        return 0
    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$",
                 ts.strip())
    if not m:
        return 0
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    except (ValueError, OverflowError):
        return 0
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        tz = tz[1:].replace(":", "")
        secs -= sign * (int(tz[:2]) * 3600 + int(tz[2:]) * 60)
    ns = int((frac or "0")[:9].ljust(9, "0"))
    return secs * 1_000_000_000 + ns


def truthy(v) -> Optional[bool]:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        if v.strip().lower() in ("true", "1", "yes"):
            return True
        if v.strip().lower() in ("false", "0", "no"):
            return False
    return None


def json_dict(s) -> dict:
    if isinstance(s, dict):
        return s
    if not isinstance(s, str) or not s:
        return {}
    try:
        v = json.loads(s)
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def str_dict(d) -> dict:
    if not isinstance(d, dict):
        return {}
    return {str(k): str(v) for k, v in d.items() if v is not None}


def pod_labels_from(labels: dict) -> dict:
    """Pod labels out of a sandbox's labels: drop kubelet's own bookkeeping keys."""
    return {k: v for k, v in labels.items()
            if not k.startswith("io.kubernetes.") and not k.startswith("annotation.")}


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path, "rb") as f:
            data = f.read(16 * 1024 * 1024)
        v = json.loads(data)
    except (OSError, ValueError):
        return None
    return v if isinstance(v, dict) else None


def drop_empty(fields: dict) -> dict:
    """`fields` without the ones a source left empty ("" or None)."""
    return {k: v for k, v in fields.items() if v not in ("", None)}


def mount_entry(source, dest, mode="", rw=True, propagation="") -> tuple:
    """One mount as ContainerInfo.mounts keeps it."""
    return (str(source or ""), str(dest or ""), str(mode or ""), bool(rw), str(propagation or ""))


def oci_mounts(spec_mounts) -> tuple:
    """ContainerInfo.mounts from an OCI config's ``mounts`` (host-path sources only:
    proc, tmpfs, cgroup ... have none)."""
    out = []
    for m in spec_mounts if isinstance(spec_mounts, list) else ():
        if not isinstance(m, dict) or not str(m.get("source", "")).startswith("/"):
            continue
        opts = [str(o) for o in m.get("options") or ()]
        prop = next((o for o in opts if o.endswith("private") or o.endswith("shared")
                     or o.endswith("slave")), "")
        out.append(mount_entry(m["source"], m.get("destination"), "ro" if "ro" in opts else "",
                               "ro" not in opts, prop))
    return tuple(out)


def inspect_mounts(mounts) -> tuple:
    """ContainerInfo.mounts from docker/podman inspect ``Mounts``."""
    out = []
    for m in mounts if isinstance(mounts, list) else ():
        if isinstance(m, dict) and m.get("Source"):
            out.append(mount_entry(m["Source"], m.get("Destination"), m.get("Mode"),
                                   m.get("RW", True), m.get("Propagation")))
    return tuple(out)
