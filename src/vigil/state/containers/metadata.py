"""Container metadata sources, cheapest first.

1. The OCI bundle ``config.json`` the runtime wrote for runc (annotations, and
   privilege from the spec).  containerd's CRI plugin puts the pod's name,
   namespace and uid there as ``io.kubernetes.cri.*`` annotations, CRI-O puts
   ``io.kubernetes.pod.*`` / ``io.kubernetes.cri-o.*``, podman its
   ``io.podman.annotations.*`` and whatever ``--annotation`` said.
2. containers/storage's ``containers.json`` (podman, CRI-O): names, image name.
3. The Docker Engine API over a unix socket (docker, or podman's compatible
   service): name, image, labels (kubelet's ``io.kubernetes.*`` labels with
   dockershim / cri-dockerd, podman ``--label``), privileged, start time.
4. ``podman inspect`` as a last resort (slow: a process per container).
5. Optionally a Kubernetes pod cache (:mod:`vigil.container.kube`): pod labels,
   owner, image digest.

Every source returns a plain dict of :class:`ContainerInfo` field values; the
first source to give a field wins, label dicts are merged.
"""
from __future__ import annotations

import calendar
import http.client
import json
import logging
import os
import re
import socket
import subprocess
from typing import Callable, Iterable, Optional
from urllib.parse import quote

from vigil.state.containers.model import ContainerInfo

log = logging.getLogger(__name__)

# --- where runtimes keep bundles ---------------------------------------------------------

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
STORAGE_FILES = (
    "/var/lib/containers/storage/overlay-containers/containers.json",
    "/var/lib/containers/storage/vfs-containers/containers.json",
)
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")


def api_sockets(env=None) -> tuple:
    """The Docker-compatible API sockets to ask: ``CONTAINER_HOST`` (podman's variable) and
    ``DOCKER_HOST`` when they name a ``unix://`` socket, then the well-known paths."""
    env = os.environ if env is None else env
    out = []
    for var in ("CONTAINER_HOST", "DOCKER_HOST"):
        v = env.get(var) or ""
        if v.startswith("unix://") and len(v) > len("unix://"):
            out.append(v[len("unix://"):])
    for s in DOCKER_SOCKETS:
        if s not in out:
            out.append(s)
    return tuple(out)

# kubelet's labels on containers (dockershim, cri-dockerd; CRI-O mirrors them as annotations)
K8S_POD_NAME = "io.kubernetes.pod.name"
K8S_POD_NS = "io.kubernetes.pod.namespace"
K8S_POD_UID = "io.kubernetes.pod.uid"
K8S_CONTAINER_NAME = "io.kubernetes.container.name"
K8S_SANDBOX_ID = "io.kubernetes.sandbox.id"
K8S_DOCKER_TYPE = "io.kubernetes.docker.type"      # podsandbox | container
# kubelet's keys -> ContainerInfo fields (as labels, or mirrored as annotations)
_K8S_FIELDS = ((K8S_POD_NAME, "pod_name"), (K8S_POD_NS, "namespace"),
               (K8S_POD_UID, "pod_uid"), (K8S_CONTAINER_NAME, "k8s_container_name"))

# containerd CRI plugin annotations
CRI = "io.kubernetes.cri."
# CRI-O annotations
CRIO = "io.kubernetes.cri-o."

_HEX_ID_RE = re.compile(r"^[0-9a-f]{12,64}$")
_DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[+._-][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")


# --- small parsers -----------------------------------------------------------------------

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
        if not _DIGEST_RE.match(digest):
            digest = ""
    if _DIGEST_RE.match(ref) or re.fullmatch(r"[0-9a-f]{64}", ref):
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


def _truthy(v) -> Optional[bool]:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        if v.strip().lower() in ("true", "1", "yes"):
            return True
        if v.strip().lower() in ("false", "0", "no"):
            return False
    return None


def _json_dict(s) -> dict:
    if isinstance(s, dict):
        return s
    if not isinstance(s, str) or not s:
        return {}
    try:
        v = json.loads(s)
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def _str_dict(d) -> dict:
    if not isinstance(d, dict):
        return {}
    return {str(k): str(v) for k, v in d.items() if v is not None}


def pod_labels_from(labels: dict) -> dict:
    """Pod labels out of a sandbox's labels: drop kubelet's own bookkeeping keys."""
    return {k: v for k, v in labels.items()
            if not k.startswith("io.kubernetes.") and not k.startswith("annotation.")}


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
    ann = _str_dict(spec.get("annotations"))
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
        priv = _truthy(ann.get("io.podman.annotations.privileged"))
        if priv is not None:
            out["privileged"] = priv
    if any(k.startswith(CRIO) for k in ann) and ann.get("io.container.manager") != "libpod":
        # podman also writes a couple of io.kubernetes.cri-o.* keys; the manager key tells
        runtime = runtime or "cri-o"
        out.setdefault("pod_name", ann.get(CRIO + "KubeName", ""))
        out["container_type"] = ann.get(CRIO + "ContainerType", "")
        out["sandbox_id"] = ann.get(CRIO + "SandboxID", "")
        out["image"] = ann.get(CRIO + "ImageName", "")
        priv = _truthy(ann.get(CRIO + "Privileged"))
        if priv is not None:
            out["privileged"] = priv
        crio_labels = _str_dict(_json_dict(ann.get(CRIO + "Labels")))
        labels.update(crio_labels)
        md = _json_dict(ann.get(CRIO + "Metadata"))
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
    for key, field in _K8S_FIELDS:
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
    out["runtime"] = runtime
    out["annotations"] = ann
    return {k: v for k, v in out.items() if v not in ("", None) or k == "privileged" and v is not None}


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, "rb") as f:
            data = f.read(16 * 1024 * 1024)
        v = json.loads(data)
    except (OSError, ValueError):
        return None
    return v if isinstance(v, dict) else None


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
        self.templates = tuple(templates)
        self.containerd_dirs = containerd_task_dirs() if containerd_dirs is None \
            else tuple(containerd_dirs)

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
        spec = _read_json(path)
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
                sspec = _read_json(sb[1])
                if sspec:
                    sann = _str_dict(sspec.get("annotations"))
                    pl = pod_labels_from(_str_dict(_json_dict(sann.get(CRIO + "Labels"))))
                    if pl:
                        out["pod_labels"] = pl
        return out


# --- source: containers/storage ------------------------------------------------------------

class StorageSource:
    """containers/storage's containers.json (podman and CRI-O share it)."""
    name = "containers-storage"

    def __init__(self, files=STORAGE_FILES):
        self.files = tuple(files)
        self._cache: dict = {}          # path -> (mtime_ns, size, {id: entry})

    def _load(self, path: str) -> dict:
        try:
            st = os.stat(path)
        except OSError:
            return {}
        c = self._cache.get(path)
        if c and c[0] == st.st_mtime_ns and c[1] == st.st_size:
            return c[2]
        data = None
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            data = None
        idx = {}
        if isinstance(data, list):
            for e in data:
                if isinstance(e, dict) and isinstance(e.get("id"), str):
                    idx[e["id"]] = e
        self._cache[path] = (st.st_mtime_ns, st.st_size, idx)
        return idx

    def fetch(self, cid: str, runtime: str = "") -> Optional[dict]:
        for p in self.files:
            e = self._load(p).get(cid)
            if e is None:
                continue
            out: dict = {}
            names = e.get("names") or []
            md = _json_dict(e.get("metadata"))
            if md.get("pod-name") or md.get("pod-id"):
                # CRI-O: metadata name is kubelet's k8s_<container>_<pod>_<ns>_<uid>_<n>
                out["runtime"] = "cri-o"
                if md.get("metadata-name"):
                    out["k8s_container_name"] = str(md["metadata-name"])
                if md.get("pod-name"):
                    out["pod_name"] = str(md["pod-name"])
                if md.get("pod-id") and md.get("pod-id") != cid:
                    out["sandbox_id"] = str(md["pod-id"])
                name = md.get("name") or (names[0] if names else "")
                if isinstance(name, str) and name.startswith("k8s_"):
                    parts = name.split("_")
                    if len(parts) >= 6:
                        out.setdefault("k8s_container_name", parts[1])
                        out.setdefault("pod_name", parts[2])
                        out["namespace"] = parts[3]
                        out["pod_uid"] = parts[4]
                out["name"] = out.get("k8s_container_name", "") or str(name)
            else:
                if names:
                    out["name"] = str(names[0])
                elif md.get("name"):
                    out["name"] = str(md["name"])
            img = md.get("image-name") or ""
            if img:
                out["image"] = str(img)
            return {k: v for k, v in out.items() if v}
        return None


# --- source: Docker Engine API -------------------------------------------------------------

class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


def unix_get_json(sock_path: str, url: str, timeout: float = 2.0):
    """GET over a unix socket; (status, parsed json or None)."""
    conn = _UnixHTTPConnection(sock_path, timeout)
    try:
        conn.request("GET", url, headers={"Accept": "application/json"})
        r = conn.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body) if body else None
        except ValueError:
            return r.status, None
    finally:
        conn.close()


def parse_docker_inspect(d: dict) -> dict:
    """Fields from ``GET /containers/<id>/json`` (docker or podman's compat API)."""
    out: dict = {}
    if not isinstance(d, dict):
        return out
    cfg = d.get("Config") or {}
    host = d.get("HostConfig") or {}
    state = d.get("State") or {}
    name = d.get("Name") or ""
    if isinstance(name, str):
        out["name"] = name.lstrip("/")
    img = cfg.get("Image") if isinstance(cfg, dict) else ""
    if isinstance(img, str) and img:
        out["image"] = img
    labels = _str_dict(cfg.get("Labels") if isinstance(cfg, dict) else None)
    if labels:
        out["labels"] = labels
    if isinstance(host, dict) and isinstance(host.get("Privileged"), bool):
        out["privileged"] = host["Privileged"]
    if isinstance(state, dict):
        st = parse_time_ns(state.get("StartedAt"))
        if st:
            out["start_time"] = st
    for key, field in _K8S_FIELDS + ((K8S_SANDBOX_ID, "sandbox_id"),):
        if labels.get(key):
            out[field] = labels[key]
    if labels.get(K8S_DOCKER_TYPE) == "podsandbox":
        out["container_type"] = "sandbox"
        out["pod_labels"] = pod_labels_from(labels)
    elif labels.get(K8S_DOCKER_TYPE) == "container":
        out["container_type"] = "container"
    image_id = d.get("Image")
    if isinstance(image_id, str) and _DIGEST_RE.match(image_id):
        out["_image_id"] = image_id
    return {k: v for k, v in out.items() if v not in ("", None)}


class DockerAPISource:
    name = "docker-api"

    def __init__(self, sockets: Optional[Iterable[str]] = None, timeout: float = 2.0,
                 image_digests: bool = True):
        self.sockets = api_sockets() if sockets is None else tuple(sockets)
        self.timeout = timeout
        self.image_digests = image_digests
        self.errors = 0

    def _live_sockets(self):
        for s in self.sockets:
            if os.path.exists(s):
                yield s

    def available(self) -> bool:
        return any(True for _ in self._live_sockets())

    def fetch(self, cid: str, runtime: str = "") -> Optional[dict]:
        for sock in self._live_sockets():
            try:
                status, d = unix_get_json(sock, f"/containers/{quote(cid, safe='')}/json", self.timeout)
            except (OSError, http.client.HTTPException) as e:
                self.errors += 1
                log.debug("docker api %s: %s", sock, e)
                continue
            if status != 200 or not isinstance(d, dict) or d.get("Id") != cid:
                continue
            out = parse_docker_inspect(d)
            out["_socket"] = sock
            image_id = out.pop("_image_id", None)
            if self.image_digests and image_id and not split_image(out.get("image", ""))[2]:
                try:
                    st, img = unix_get_json(sock, f"/images/{quote(image_id, safe='')}/json", self.timeout)
                except (OSError, http.client.HTTPException):
                    st, img = 0, None
                if st == 200 and isinstance(img, dict):
                    for rd in img.get("RepoDigests") or []:
                        if isinstance(rd, str) and "@" in rd:
                            out["image_digest"] = rd.split("@", 1)[1]
                            break
            sid = out.get("sandbox_id")
            if sid and sid != cid and "pod_labels" not in out:
                # kubelet (dockershim / cri-dockerd) keeps the pod's labels on the sandbox
                try:
                    st, sb = unix_get_json(sock, f"/containers/{quote(sid, safe='')}/json", self.timeout)
                except (OSError, http.client.HTTPException):
                    st, sb = 0, None
                if st == 200 and isinstance(sb, dict):
                    pl = pod_labels_from(_str_dict((sb.get("Config") or {}).get("Labels")))
                    if pl:
                        out["pod_labels"] = pl
            return out
        return None


# --- source: podman CLI --------------------------------------------------------------------

class PodmanCLISource:
    """``podman inspect``: a process per container, so only when nothing cheaper answered."""
    name = "podman-cli"

    def __init__(self, binary: str = "podman", timeout: float = 10.0):
        self.binary = binary
        self.timeout = timeout

    def fetch(self, cid: str, runtime: str = "") -> Optional[dict]:
        if runtime not in ("", "podman"):
            return None
        try:
            r = subprocess.run([self.binary, "container", "inspect", "--format", "json", cid],
                               capture_output=True, timeout=self.timeout, text=True)
        except (OSError, subprocess.SubprocessError):
            return None
        if r.returncode != 0:
            return None
        try:
            data = json.loads(r.stdout)
        except ValueError:
            return None
        if isinstance(data, list):
            data = data[0] if data else None
        if not isinstance(data, dict) or data.get("Id") != cid:
            return None
        out = parse_docker_inspect(data)
        out.pop("_image_id", None)
        # podman's native inspect: ImageName / ImageDigest / Config.Annotations
        if data.get("ImageName"):
            out["image"] = data["ImageName"]
        if isinstance(data.get("ImageDigest"), str) and _DIGEST_RE.match(data["ImageDigest"]):
            out["image_digest"] = data["ImageDigest"]
        if isinstance(data.get("HostConfig"), dict) and isinstance(data["HostConfig"].get("Privileged"), bool):
            out["privileged"] = data["HostConfig"]["Privileged"]
        out["runtime"] = "podman"
        return {k: v for k, v in out.items() if v not in ("", None)}


# --- putting it together -------------------------------------------------------------------

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
    for k in ("labels", "pod_labels"):
        v = src.get(k)
        if isinstance(v, dict) and v:
            cur = dict(dst.get(k) or {})
            for lk, lv in v.items():
                cur.setdefault(lk, lv)
            dst[k] = cur


def finish(fields: dict) -> dict:
    """Derived fields: image split, k8s fields out of labels, a name if there is none."""
    labels = fields.get("labels") or {}
    for key, field in _K8S_FIELDS:
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
    merged["sources"] = tuple(fields.get("sources") or ())
    merged["complete"] = complete
    return ContainerInfo.from_dict(finish(merged))
