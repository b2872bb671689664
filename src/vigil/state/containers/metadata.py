"""Container metadata sources, cheapest first.

1. The OCI bundle ``config.json`` the runtime wrote for runc (annotations, and
   privilege from the spec).  containerd's CRI plugin puts the pod's name,
   namespace and uid there as ``io.kubernetes.cri.*`` annotations, CRI-O puts
   ``io.kubernetes.pod.*`` / ``io.kubernetes.cri-o.*``, podman its
   ``io.podman.annotations.*`` and whatever ``--annotation`` said
   (:mod:`.metadata_bundle`).
2. containers/storage's ``containers.json`` (podman, CRI-O): names, image name
   (:mod:`.metadata_storage`).
3. The Docker Engine API over a unix socket (docker, or podman's compatible
   service): name, image, labels (kubelet's ``io.kubernetes.*`` labels with
   dockershim / cri-dockerd, podman ``--label``), privileged, start time
   (:mod:`.metadata_docker`).
4. ``podman inspect`` as a last resort (slow: a process per container;
   :mod:`.metadata_podman`).
5. Optionally a Kubernetes pod cache (:mod:`vigil.state.containers.kube`): pod labels,
   owner, image digest.

Every source returns a plain dict of :class:`ContainerInfo` field values; the
first source to give a field wins, label dicts are merged.  The keys and value
parsers the sources share are in :mod:`.metadata_values`; this module runs the
sources and merges their answers.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional

from vigil.state.containers.metadata_bundle import (BUNDLE_TEMPLATES, CONTAINERD_TASK_DIRS, BundleSource,
                                                     containerd_task_dirs, parse_oci_config, spec_privileged)
from vigil.state.containers.metadata_docker import (DOCKER_SOCKETS, DockerAPISource, api_sockets,
                                                     parse_docker_inspect, unix_get_json)
from vigil.state.containers.metadata_podman import PodmanCLISource
from vigil.state.containers.metadata_storage import STORAGE_FILES, StorageSource
from vigil.state.containers.metadata_values import K8S_FIELDS, parse_time_ns, pod_labels_from, split_image
from vigil.state.containers.model import ContainerInfo

__all__ = ["MetadataFetcher", "apply", "finish", "merge_into",
           "BundleSource", "StorageSource", "DockerAPISource", "PodmanCLISource",
           "BUNDLE_TEMPLATES", "CONTAINERD_TASK_DIRS", "STORAGE_FILES", "DOCKER_SOCKETS",
           "api_sockets", "containerd_task_dirs", "parse_oci_config", "spec_privileged",
           "parse_docker_inspect", "unix_get_json", "parse_time_ns", "pod_labels_from", "split_image"]

log = logging.getLogger(__name__)


_SCALARS = ("runtime", "name", "image", "image_repository", "image_tag", "image_digest",
            "start_time", "pod_uid", "pod_name", "namespace", "k8s_container_name",
            "sandbox_id", "container_type", "owner_kind", "owner_name", "qos")


def merge_into(dst: dict, src: dict) -> None:
    """Fill what ``dst`` lacks from ``src``; label dicts merge (``dst`` wins per key)."""
    for k in _SCALARS:
        v = src.get(k)
        if v not in (None, "", 0) and dst.get(k) in (None, "", 0):
            dst[k] = v
    if dst.get("privileged") is None and isinstance(src.get("privileged"), bool):
        dst["privileged"] = src["privileged"]
    if src.get("mounts") and not dst.get("mounts"):
        dst["mounts"] = tuple(src["mounts"])
    for k in ("labels", "pod_labels", "annotations"):
        v = src.get(k)
        if isinstance(v, dict) and v:
            cur = dict(dst.get(k) or {})
            for lk, lv in v.items():
                cur.setdefault(lk, lv)
            dst[k] = bounded_annotations(cur) if k == "annotations" else cur


ANNOTATIONS_MAX = 64           # kept per container
ANNOTATION_KEY_MAX = 253
ANNOTATION_VALUE_MAX = 1024


def bounded_annotations(ann: dict) -> dict:
    """The annotations a ContainerInfo keeps: at most ANNOTATIONS_MAX, keys of at most 253
    characters and values of at most 1 KiB (longer ones, such as CRI-O's JSON blobs, are
    dropped: nothing selects on them)."""
    out = {}
    for k, v in ann.items():
        if len(out) >= ANNOTATIONS_MAX:
            break
        if isinstance(k, str) and isinstance(v, str) and len(k) <= ANNOTATION_KEY_MAX \
                and len(v) <= ANNOTATION_VALUE_MAX:
            out[k] = v
    return out


def finish(fields: dict) -> dict:
    """Derived fields: image split, k8s fields out of labels, a name if there is none."""
    labels = fields.get("labels") or {}
    for key, field in K8S_FIELDS:
        if not fields.get(field) and labels.get(key):
            fields[field] = labels[key]
    img = fields.get("image") or ""
    repo, tag, digest = split_image(img)
    if not fields.get("image_repository"):
        fields["image_repository"] = repo
    if not fields.get("image_tag"):
        fields["image_tag"] = tag
    if not fields.get("image_digest"):
        fields["image_digest"] = digest
    if not fields.get("name") and fields.get("k8s_container_name"):
        fields["name"] = fields["k8s_container_name"]
    return fields


class MetadataFetcher:
    """Runs the sources in order for one container id; returns a merged field dict."""

    def __init__(self, sources: Optional[list] = None, kube=None,
                 podman_cli: bool = True, docker_sockets: Optional[Iterable[str]] = None):
        if sources is None:
            sources = [BundleSource(), StorageSource(), DockerAPISource(docker_sockets)]
            if podman_cli:
                sources.append(PodmanCLISource())
        self.sources = sources
        self.kube = kube
        self.errors = 0

    # sources that only read local files: their answer is published at once, before the
    # slower ones (API sockets, the podman CLI) run
    FAST = (BundleSource, StorageSource)
    supports_partial = True

    def fetch_fast(self, cid: str, runtime: str = "") -> dict:
        """What the local-file sources know now (no API socket, no CLI): read the moment a
        container's cgroup appears, while its runtime state is surely there (a container
        that runs for a few milliseconds has its bundle removed before a queued fetch)."""
        fields: dict = {}
        used = []
        for src in self.sources:
            if not isinstance(src, self.FAST):
                continue
            try:
                got = src.fetch(cid, fields.get("runtime") or runtime)
            except Exception as e:
                self.errors += 1
                log.debug("metadata source %s failed for %s: %s", getattr(src, "name", src), cid, e)
                continue
            if got:
                used.append(getattr(src, "name", type(src).__name__))
                merge_into(fields, got)
        if not used:
            return {}
        fields["sources"] = tuple(used)
        return finish(fields)

    def fetch(self, cid: str, runtime: str = "", pod_uid: str = "",
              on_partial: Optional[Callable[[dict], None]] = None) -> dict:
        """Merged fields from every source.  ``on_partial(fields)`` is called once with what
        the local-file sources gave, before the first slow source runs (so a short-lived
        container's events held meanwhile already carry its name and annotations)."""
        fields: dict = {}
        used = []
        partial_sent = on_partial is None
        for src in self.sources:
            if not partial_sent and not isinstance(src, self.FAST):
                partial_sent = True
                if used:
                    try:
                        on_partial(finish(dict(fields, sources=tuple(used))))
                    except Exception as e:  # pragma: no cover - listener bug
                        log.warning("partial metadata callback failed: %s", e)
            if isinstance(src, PodmanCLISource):
                # the CLI is slow: only when nothing told us a name or labels and it is podman's
                rt = fields.get("runtime") or runtime
                if rt != "podman" or ("name" in fields and "labels" in fields):
                    continue
                if any(s == DockerAPISource.name for s in used):
                    continue
            try:
                got = src.fetch(cid, fields.get("runtime") or runtime)
            except Exception as e:  # a broken source must not take the resolver down
                self.errors += 1
                log.debug("metadata source %s failed for %s: %s", getattr(src, "name", src), cid, e)
                continue
            if got:
                used.append(getattr(src, "name", type(src).__name__))
                merge_into(fields, got)
        if self.kube is not None:
            uid = fields.get("pod_uid") or pod_uid
            if uid:
                try:
                    got = self.kube.lookup(uid, fields.get("k8s_container_name", ""))
                except Exception as e:
                    self.errors += 1
                    log.debug("kube lookup failed: %s", e)
                    got = None
                if got:
                    used.append("kubernetes")
                    merge_into(fields, got)
        fields["sources"] = tuple(used)
        return finish(fields)


def apply(info: ContainerInfo, fields: dict, complete: bool = True) -> ContainerInfo:
    """A new ContainerInfo: ``info`` plus the fetched fields (path-derived values win for
    id and runtime; metadata wins for pod uid only when the path had none)."""
    merged = info.to_dict()
    merge_into(merged, fields)
    # a fetch that found nothing (the runtime's state gone) keeps what a partial one knew
    merged["sources"] = tuple(fields.get("sources") or info.sources or ())
    merged["complete"] = complete
    return ContainerInfo.from_dict(finish(merged))
