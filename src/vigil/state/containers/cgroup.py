"""Cgroup path -> (runtime, container id, pod uid, QoS class).

Accepts any of:

* a cgroup path (``/kubepods.slice/.../cri-containerd-<id>.scope``),
* one line of ``/proc/<pid>/cgroup`` (``0::/path`` or ``4:memory:/path``),
* the whole text of ``/proc/<pid>/cgroup`` (v1, v2 or hybrid),
* a bare leaf name (``libpod-<id>``, as exec events carry in ``cgroup_name``).

The path is scanned from the deepest component upwards, so nested cgroups that
runtimes create inside a container's cgroup (``libpod-<id>.scope/container``,
systemd-in-container sub-slices) still belong to that container.

Nothing here raises on bad input: malformed or unrecognised text is the host
(if it looks like a cgroup path) or ``unknown``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

HOST_KIND = "host"
CONTAINER_KIND = "container"
POD_KIND = "pod"            # a pod-level cgroup (kubepods/.../pod<uid>) with no container
UNKNOWN_KIND = "unknown"

_HEX64 = r"[0-9a-f]{64}"
_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# static (file/http) pods get a 32-hex hash as uid instead of a UUID
_PODUID = rf"(?:{_UUID}|[0-9a-f]{{32}})"

# Leaf component patterns -> runtime.  Order matters: conmon before the plain names.
_CONMON_RE = re.compile(rf"^(?:libpod-conmon|crio-conmon)-{_HEX64}(?:\.scope)?$")
_SCOPE_RES = (
    (re.compile(rf"^cri-containerd-({_HEX64})(?:\.scope)?$"), "containerd"),
    (re.compile(rf"^crio-({_HEX64})(?:\.scope)?$"), "cri-o"),
    (re.compile(rf"^docker-({_HEX64})(?:\.scope)?$"), "docker"),
    (re.compile(rf"^libpod-({_HEX64})(?:\.scope)?$"), "podman"),
)
_BARE_ID_RE = re.compile(rf"^({_HEX64})$")
# kubelet's systemd driver; a custom cgroup root prefixes the names (kind: kubelet-kubepods-...)
_POD_SLICE_RE = re.compile(rf"^(?:[\w.]+-)?kubepods(?:-(besteffort|burstable))?-pod({_PODUID})\.slice$")
_POD_DIR_RE = re.compile(rf"^pod({_PODUID})$")
_QOS_SLICE_RE = re.compile(r"^(?:[\w.]+-)?kubepods-(besteffort|burstable)\.slice$")
_V1_LINE_RE = re.compile(r"^\d+:[^:]*:(.*)$")


@dataclass(frozen=True)
class CgroupIdentity:
    kind: str = UNKNOWN_KIND          # host | container | pod | unknown
    runtime: str = ""                 # containerd, cri-o, docker, podman, "" = not known from the path
    container_id: str = ""
    pod_uid: str = ""                 # with dashes
    qos: str = ""                     # guaranteed | burstable | besteffort | ""
    path: str = ""                    # the (normalised) path this came from
    conmon: bool = False              # the runtime's monitor process cgroup (not a container)

    @property
    def is_container(self) -> bool:
        return self.kind == CONTAINER_KIND

    @property
    def is_host(self) -> bool:
        return self.kind == HOST_KIND


UNKNOWN_IDENTITY = CgroupIdentity()


def _norm_uid(uid: str) -> str:
    return uid.replace("_", "-")


def normalize_path(path: str) -> str:
    """Strip ``(deleted)``, cgroup-namespace ``/..`` prefixes and duplicate slashes."""
    p = path.strip()
    if p.endswith(" (deleted)"):
        p = p[: -len(" (deleted)")]
    parts = [c for c in p.split("/") if c and c not in (".", "..")]
    return "/" + "/".join(parts)


def _looks_like_path(text: str) -> bool:
    return text.startswith("/") and "\x00" not in text and "\n" not in text


def parse_path(path: str) -> CgroupIdentity:
    """Identify a single cgroup path (or bare leaf name)."""
    try:
        return _parse_path(path)
    except Exception:  # pragma: no cover - defensive: never raise on the hot path
        return UNKNOWN_IDENTITY


def _parse_path(path: str) -> CgroupIdentity:
    if not isinstance(path, str):
        return UNKNOWN_IDENTITY
    raw = path.strip()
    if not raw:
        return UNKNOWN_IDENTITY
    if not raw.startswith("/"):
        # a bare leaf (exec events' cgroup_name) or garbage
        if "/" in raw or "\n" in raw or ":" in raw:
            return UNKNOWN_IDENTITY
        ident = _parse_components([raw], raw)
        # a leaf name that is not a container says nothing about the host either
        return ident if ident.kind in (CONTAINER_KIND, POD_KIND) or ident.conmon else UNKNOWN_IDENTITY
    if not _looks_like_path(raw):
        return UNKNOWN_IDENTITY
    norm = normalize_path(raw)
    comps = [c for c in norm.split("/") if c]
    return _parse_components(comps, norm)


def _k8s_context(comps: list) -> tuple:
    """(pod_uid, qos, index of the pod component) from kubepods components, or ("", "", -1)."""
    qos = ""
    for i, c in enumerate(comps):
        m = _POD_SLICE_RE.match(c)
        if m:
            return _norm_uid(m.group(2)), (m.group(1) or "guaranteed"), i
        m = _QOS_SLICE_RE.match(c)
        if m:
            qos = m.group(1)
            continue
        m = _POD_DIR_RE.match(c)
        if m and i > 0:
            parent = comps[i - 1]
            if parent == "kubepods":
                return _norm_uid(m.group(1)), "guaranteed", i
            if parent in ("besteffort", "burstable") and i > 1 and comps[i - 2] == "kubepods":
                return _norm_uid(m.group(1)), parent, i
    return "", qos, -1


def _parse_components(comps: list, norm: str) -> CgroupIdentity:
    if not comps:
        return CgroupIdentity(kind=HOST_KIND, path=norm or "/")
    pod_uid, qos, pod_idx = _k8s_context(comps)
    # deepest container-looking component wins
    for i in range(len(comps) - 1, -1, -1):
        c = comps[i]
        if _CONMON_RE.match(c):
            rt = "podman" if c.startswith("libpod") else "cri-o"
            return CgroupIdentity(kind=HOST_KIND, runtime=rt, path=norm, conmon=True,
                                  pod_uid=pod_uid, qos=qos)
        for rx, rt in _SCOPE_RES:
            m = rx.match(c)
            if m:
                return CgroupIdentity(kind=CONTAINER_KIND, runtime=rt, container_id=m.group(1),
                                      pod_uid=pod_uid, qos=qos, path=norm)
        m = _BARE_ID_RE.match(c)
        if m and i > 0:
            parent = comps[i - 1]
            if pod_idx >= 0 and i == pod_idx + 1:
                # cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>; containerd, docker (dockershim
                # or cri-dockerd) all look the same here, the metadata probe tells them apart
                return CgroupIdentity(kind=CONTAINER_KIND, runtime="", container_id=m.group(1),
                                      pod_uid=pod_uid, qos=qos, path=norm)
            if parent == "docker":
                return CgroupIdentity(kind=CONTAINER_KIND, runtime="docker", container_id=m.group(1),
                                      path=norm)
    if pod_idx >= 0:
        return CgroupIdentity(kind=POD_KIND, pod_uid=pod_uid, qos=qos, path=norm)
    return CgroupIdentity(kind=HOST_KIND, path=norm)


def parse_proc_cgroup(text: str) -> CgroupIdentity:
    """Identify the text of ``/proc/<pid>/cgroup``: the v2 (``0::``) line first; on hybrid
    hosts where v2 says nothing useful, the v1 lines (a container found there wins)."""
    try:
        return _parse_proc_cgroup(text)
    except Exception:  # pragma: no cover
        return UNKNOWN_IDENTITY


def _split_proc_cgroup(text: str) -> tuple:
    """(path of the v2 ``0::`` line or None, [paths of the v1 lines]) of /proc/<pid>/cgroup."""
    v2: Optional[str] = None
    v1: list = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("0::"):
            v2 = line[3:]
            continue
        m = _V1_LINE_RE.match(line)
        if m:
            v1.append(m.group(1))
    return v2, v1


def _parse_proc_cgroup(text: str) -> CgroupIdentity:
    if not isinstance(text, str):
        return UNKNOWN_IDENTITY
    v2, v1 = _split_proc_cgroup(text)
    if v2 is None and not v1:
        return UNKNOWN_IDENTITY
    best: Optional[CgroupIdentity] = None
    if v2 is not None:
        best = parse_path(v2) if v2.startswith("/") else UNKNOWN_IDENTITY
        if best.kind in (CONTAINER_KIND, POD_KIND):
            return best
    fallback = None
    for p in v1:
        ident = parse_path(p) if p.startswith("/") else UNKNOWN_IDENTITY
        if ident.is_container:
            return ident
        if fallback is None and ident.kind != UNKNOWN_KIND:
            fallback = ident
    if best is not None and best.kind != UNKNOWN_KIND:
        return best
    return fallback or UNKNOWN_IDENTITY


def pick_path(text: str) -> Optional[str]:
    """The cgroup path that identifies a process from ``/proc/<pid>/cgroup`` text: the ``0::``
    line, unless it is the root and a v1 line names a container (hybrid hosts whose runtime
    only uses v1), else the first v1 path."""
    if not isinstance(text, str):
        return None
    v2, v1 = _split_proc_cgroup(text)
    if v2 and v2.startswith("/") and normalize_path(v2) != "/":
        return v2
    for p in v1:
        if p.startswith("/") and parse_path(p).is_container:
            return p
    if v2 and v2.startswith("/"):
        return v2
    return v1[0] if v1 else None


def parse(text: str) -> CgroupIdentity:
    """Identify anything: a path, a leaf name, one /proc/<pid>/cgroup line or the whole file."""
    if not isinstance(text, str):
        return UNKNOWN_IDENTITY
    s = text.strip()
    if not s:
        return UNKNOWN_IDENTITY
    if "\n" in s or _V1_LINE_RE.match(s) or s.startswith("0::"):
        return parse_proc_cgroup(s)
    return parse_path(s)
