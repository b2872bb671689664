"""container.* and k8s.* fields."""
from __future__ import annotations

import fnmatch
import re

from vigil.rules.fields.base import define, safe
from vigil.rules.fields.evt import render_time


def _cont(get, host=None):
    def fn(ev, cx):
        c = ev.container
        if c is None or c.is_host:
            return host
        return get(c)
    return safe(fn)


def _cid(ev, cx):
    c = ev.container
    return "host" if c is None else c.short_id


def _labels(c):
    if not c.labels:
        return None
    return ", ".join(f"{k}:{v}" for k, v in c.labels.items())


def _label(arg):
    return _cont(lambda c: c.labels.get(arg))


def _container_info(ev, cx):
    c = ev.container
    if c is None or c.is_host:
        return "container_id=host container_name=host"
    return f"container_id={c.short_id} container_name={c.name or '<NA>'}"


define("container.id", "str", safe(_cid),
       inline={None: "('host' if ev.container is None else ev.container.short_id)"})
define("container.full_id", "str", safe(lambda ev, cx: "host" if ev.container is None else ev.container.id))
define("container.name", "str", _cont(lambda c: c.name or None, host="host"))
define("container.image", "str", _cont(lambda c: c.image or None))
define("container.image.repository", "str", _cont(lambda c: c.image_repository or None))
define("container.image.tag", "str", _cont(lambda c: c.image_tag or None))
define("container.image.digest", "str", _cont(lambda c: c.image_digest or None))
define("container.image.id", "str", lambda ev, cx: None)
define("container.privileged", "bool", _cont(lambda c: c.privileged))
define("container.type", "str", _cont(lambda c: c.runtime or None))
define("container.start_ts", "abstime", _cont(lambda c: c.start_time or None), render=render_time)
define("container.duration", "int", lambda ev, cx: None)
define("container.info", "str", safe(_container_info))
define("container.healthcheck", "str", lambda ev, cx: None)
define("container.liveness_probe", "str", lambda ev, cx: None)
define("container.readiness_probe", "str", lambda ev, cx: None)
def _mounts_text(c):
    """Falco's container.mounts: source:dest:mode:rdwr:propagation, comma-joined."""
    return ",".join(f"{src}:{dst}:{mode}:{'true' if rw else 'false'}:{prop}"
                    for src, dst, mode, rw, prop in c.mounts) or None


def _mount_lookup(arg, by, give):
    """container.mount.dest[X] (X = a mount's source) / container.mount.source[X]
    (X = its destination): X is a glob or an index; "<NA>" when no mount fits,
    as Falco's rules expect (`not ... in ("<NA>","N/A")`)."""
    a = arg.strip()
    if a.isdigit():
        i = int(a)
        return _cont(lambda c: c.mounts[i][give] if i < len(c.mounts) else "<NA>")
    match = re.compile(fnmatch.translate(a), re.S).match

    def get(c):
        for m in c.mounts:
            if match(m[by]):
                return m[give]
        return "<NA>"
    return _cont(get)


define("container.mounts", "str", _cont(_mounts_text))
define("container.mount.dest", "str", None, make=lambda a: _mount_lookup(a, 0, 1), arg="required")
define("container.mount.source", "str", None, make=lambda a: _mount_lookup(a, 1, 0), arg="required")
define("container.mount.mode", "str", None, make=lambda a: _mount_lookup(a, 0, 2), arg="required")
define("container.mount.rdwr", "str", None,
       make=lambda a: _mount_lookup(a, 0, 3), arg="required")
define("container.mount.propagation", "str", None, make=lambda a: _mount_lookup(a, 0, 4),
       arg="required")
define("container.label", "str", None, make=lambda a: _label(a), arg="required")
define("k8s.ns.name", "str", _cont(lambda c: c.namespace or None))
define("k8s.pod.name", "str", _cont(lambda c: c.pod_name or None))
define("k8s.pod.uid", "str", _cont(lambda c: c.pod_uid or None))
define("k8s.pod.id", "str", _cont(lambda c: c.pod_uid or None))
define("k8s.pod.labels", "str", _cont(_labels))
define("k8s.pod.label", "str", None, make=lambda a: _label(a), arg="required")
define("k8s.pod.ip", "str", lambda ev, cx: None)
define("k8s.container.name", "str", _cont(lambda c: c.k8s_container_name or None))
define("k8s.deployment.name", "str", _cont(lambda c: c.owner_name or None if c.owner_kind == "Deployment" else None))
define("k8s.rs.name", "str", _cont(lambda c: c.owner_name or None if c.owner_kind == "ReplicaSet" else None))
define("k8s.ns.labels", "str", lambda ev, cx: None)
define("k8s.svc.name", "str", lambda ev, cx: None)
