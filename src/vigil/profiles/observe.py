"""Events -> (workload identity, profile values).

**Identity** (one profile per workload, shared by its replicas on the node):

* ``<ns>/<profile>``: the pod or container label ``vigil.dev/profile`` names it;
* ``<ns>/<owner kind>/<owner name>/<container>``: the Kubernetes owner workload
  (a Deployment for a ReplicaSet's pods) and the pod's container name, when the
  API cache knows the pod;
* ``<ns>/image/<image>[/<container>]``: else the image (without digest);
* ``<ns>/container/<name>``: else the container's own name (a ``--rootfs``
  container without image);
* ``host/<executable>``: a host process (``profiles.host``); an exec belongs
  to the executable that started it.

**Values** per event kind: see vigil.profiles.profile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vigil.events import Kind
from vigil.profiles.shapes import arg_shape, fold_path, under_prefixes
from vigil.state.containers.metadata_values import pod_labels_from

PROFILE_LABEL = "vigil.dev/profile"
WINDOW_LABEL = "vigil.dev/profile-learning-window"
KINDS = frozenset((Kind.EXEC, Kind.OPEN, Kind.CONNECT, Kind.ACCEPT, Kind.LISTEN, Kind.BIND,
                   Kind.DNS, Kind.CAPSET))
_INET = ("AF_INET", "AF_INET6")


@dataclass(frozen=True)
class Identity:
    key: str
    kind: str                  # workload | image | container | host
    namespace: str = ""
    container: str = ""        # Kubernetes container name
    image: str = ""
    labels: Optional[dict] = None    # what a policy selects on (None: host)
    container_id: str = ""
    started_ns: int = 0        # container start (0: unknown)
    window: str = ""           # the learning-window label, as written


def container_identity(c) -> Optional[Identity]:
    """The workload a resolved container belongs to (None: not resolved yet)."""
    if not c.is_container or not c.complete:
        return None
    ns = c.namespace or ""
    cname = c.k8s_container_name or ""
    labels = dict(c.pod_labels) if c.pod_labels else pod_labels_from(c.labels)
    # the container's OCI annotations (pod annotations on CRI runtimes), then its labels
    own = {**(getattr(c, "annotations", None) or {}), **c.labels, **c.pod_labels}
    image = (c.image or "").split("@", 1)[0]
    explicit = own.get(PROFILE_LABEL)
    if explicit:
        key, kind = f"{ns}/{explicit}", "workload"
    elif c.owner_name:
        key, kind = f"{ns}/{c.owner_kind.lower() or 'owner'}/{c.owner_name}", "workload"
        key += f"/{cname}" if cname else ""
    elif image:
        key, kind = f"{ns}/image/{image}" + (f"/{cname}" if cname else ""), "image"
    else:
        key, kind = f"{ns}/container/{c.name or c.short_id}", "container"
    return Identity(key, kind, ns, cname, image, labels, c.id, c.start_time or 0,
                    own.get(WINDOW_LABEL, ""))


def host_identity(exe: str) -> Optional[Identity]:
    return Identity(f"host/{exe}", "host") if exe else None


def values(ev, file_prefixes: tuple) -> list:
    """The profile values an event stands for: [(category, value)]."""
    k = ev.kind
    out = []
    if k == Kind.EXEC:
        if ev.exe:
            out.append(("exec", (ev.exe, arg_shape(ev.args))))
        if ev.cap_effective:
            out.append(("caps", int(ev.cap_effective)))
    elif k == Kind.OPEN:
        path = ev.path
        if path and (ev.ret is None or ev.ret >= 0) and under_prefixes(path, file_prefixes):
            out.append(("file", fold_path(path)))
    elif k == Kind.CONNECT:
        if ev.family in _INET and ev.dport and ev.daddr:
            out.append(("egress", (ev.daddr, int(ev.dport), (ev.proto or "tcp").upper())))
    elif k == Kind.DNS:
        if ev.query:
            out.append(("dns", ev.query.rstrip(".").lower()))
        if ev.daddr and ev.dport:     # the resolver is an egress peer too
            out.append(("egress", (ev.daddr, int(ev.dport), "UDP")))
    elif k == Kind.LISTEN:
        if ev.family in _INET and ev.sport:
            out.append(("listen", (int(ev.sport), "TCP")))
    elif k == Kind.BIND:
        if ev.family in _INET and ev.sport and (ev.proto or "").lower() == "udp" and \
                (ev.ret is None or ev.ret >= 0):
            out.append(("listen", (int(ev.sport), "UDP")))
    elif k == Kind.ACCEPT:
        if ev.family in _INET and ev.sport and ev.daddr:
            out.append(("ingress", (ev.daddr, int(ev.sport), (ev.proto or "tcp").upper())))
    elif k == Kind.CAPSET:
        if ev.cap_effective:
            out.append(("caps", int(ev.cap_effective)))
    if ev.syscall and k in KINDS:
        out.append(("syscall", ev.syscall))
    return out


__all__ = ["Identity", "container_identity", "host_identity", "values", "KINDS",
           "PROFILE_LABEL", "WINDOW_LABEL"]
