"""Container and Kubernetes identity for events (cgroup -> container -> pod).

* :mod:`.cgroup`    cgroup path -> runtime, container id, pod uid, QoS
* :mod:`.cgroupfs`  cgroup v2 id <-> path from the mounted hierarchy
* :mod:`.metadata`  OCI bundle / containers-storage / Docker API / podman CLI sources
* :mod:`.kube`      optional Kubernetes pod cache (labels, owner, image digest)
* :mod:`.resolver`  ``ContainerResolver`` (hot path cache + background fetches), ``EventHold``
* :mod:`.scope`     host/containers/namespace scoping for in-kernel filtering
"""
from vigil.state.containers.model import HOST, UNKNOWN, ContainerInfo

__all__ = ["HOST", "UNKNOWN", "ContainerInfo"]
