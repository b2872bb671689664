"""What vigil knows about one container (or the host)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class ContainerInfo:
    id: str = "host"                 # full container id; "host" for host processes
    runtime: str = ""                # containerd, cri-o, docker, podman, ...
    name: str = ""
    image: str = ""                  # full reference as the runtime knows it
    image_repository: str = ""
    image_tag: str = ""
    image_digest: str = ""
    privileged: Optional[bool] = None
    start_time: int = 0              # ns since epoch
    pod_uid: str = ""
    pod_name: str = ""
    namespace: str = ""              # k8s namespace
    k8s_container_name: str = ""
    labels: dict = field(default_factory=dict)        # runtime labels (docker/podman/CRI)
    pod_labels: dict = field(default_factory=dict)    # k8s pod labels, where known
    annotations: dict = field(default_factory=dict)   # OCI annotations (bounded: metadata.py)
    sandbox_id: str = ""             # CRI pod sandbox id (pause container)
    container_type: str = ""         # CRI: "container" or "sandbox" (pause); "" if unknown
    qos: str = ""                    # k8s QoS class from the cgroup path (guaranteed/burstable/besteffort)
    owner_kind: str = ""
    owner_name: str = ""
    cgroup_path: str = ""            # cgroup path relative to the hierarchy root
    cgroup_id: int = 0               # cgroup v2 id of the container's cgroup, if known
    # the runtime's mounts: (source on the host, destination inside, mode, read-write, propagation)
    mounts: tuple = ()
    sources: tuple = ()              # metadata sources that contributed (oci-bundle, docker-api ...)
    complete: bool = True            # False while metadata is still being fetched

    @property
    def short_id(self) -> str:
        return self.id if self.id in ("host", "") else self.id[:12]

    @property
    def is_host(self) -> bool:
        return self.id == "host"

    @property
    def is_container(self) -> bool:
        """A real container (not the host, not the unresolved placeholder)."""
        return self.id not in ("host", "")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ContainerInfo":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "mounts" in known:
            known["mounts"] = tuple(tuple(m) for m in known["mounts"] or ())
        return cls(**known)


HOST = ContainerInfo()
"""Every host cgroup resolves to this one shared object: do not mutate it."""

UNKNOWN = ContainerInfo(id="", complete=False)
"""The cgroup could not be placed (gone before vigil saw it): neither host nor a known container."""
