"""Container metadata from the Docker Engine API over a unix socket (docker, or
podman's compatible service): name, image, labels, privileged, start time."""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
from typing import Iterable, Optional
from urllib.parse import quote

from vigil.host_paths import host_path
from vigil.state.containers.metadata_values import (DIGEST_RE, K8S_DOCKER_TYPE, K8S_FIELDS, K8S_SANDBOX_ID, inspect_mounts,
                                                     drop_empty, parse_time_ns, pod_labels_from, split_image,
                                                     str_dict)

log = logging.getLogger(__name__)

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
    for s in map(host_path, DOCKER_SOCKETS):     # the host's, as VIGIL_HOST_ROOT says
        if s not in out:
            out.append(s)
    return tuple(out)


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
    labels = str_dict(cfg.get("Labels") if isinstance(cfg, dict) else None)
    if labels:
        out["labels"] = labels
    if isinstance(host, dict) and isinstance(host.get("Privileged"), bool):
        out["privileged"] = host["Privileged"]
    if isinstance(state, dict):
        st = parse_time_ns(state.get("StartedAt"))
        if st:
            out["start_time"] = st
    for key, field in K8S_FIELDS + ((K8S_SANDBOX_ID, "sandbox_id"),):
        if labels.get(key):
            out[field] = labels[key]
    if labels.get(K8S_DOCKER_TYPE) == "podsandbox":
        out["container_type"] = "sandbox"
        out["pod_labels"] = pod_labels_from(labels)
    elif labels.get(K8S_DOCKER_TYPE) == "container":
        out["container_type"] = "container"
    mounts = inspect_mounts(d.get("Mounts"))
    if mounts:
        out["mounts"] = mounts
    image_id = d.get("Image")
    if isinstance(image_id, str) and DIGEST_RE.match(image_id):
        out["_image_id"] = image_id
    return drop_empty(out)


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

    def _object(self, sock: str, what: str, ident: str) -> Optional[dict]:
        """``GET /<what>/<ident>/json`` on `sock`: the object, or None when the API has
        none.  A failure to talk to the API raises OSError or HTTPException."""
        status, d = unix_get_json(sock, f"/{what}/{quote(ident, safe='')}/json", self.timeout)
        return d if status == 200 and isinstance(d, dict) else None

    def _follow_up(self, sock: str, what: str, ident: str) -> Optional[dict]:
        """:meth:`_object` for a second question about a container already found: a
        failure is only a missing answer."""
        try:
            return self._object(sock, what, ident)
        except (OSError, http.client.HTTPException):
            return None

    def fetch(self, cid: str, runtime: str = "") -> Optional[dict]:
        for sock in self._live_sockets():
            try:
                d = self._object(sock, "containers", cid)
            except (OSError, http.client.HTTPException) as e:
                self.errors += 1
                log.debug("docker api %s: %s", sock, e)
                continue
            if d is None or d.get("Id") != cid:
                continue
            out = parse_docker_inspect(d)
            out["_socket"] = sock
            image_id = out.pop("_image_id", None)
            if self.image_digests and image_id and not split_image(out.get("image", ""))[2]:
                img = self._follow_up(sock, "images", image_id)
                for rd in (img or {}).get("RepoDigests") or []:
                    if isinstance(rd, str) and "@" in rd:
                        out["image_digest"] = rd.split("@", 1)[1]
                        break
            sid = out.get("sandbox_id")
            if sid and sid != cid and "pod_labels" not in out:
                # kubelet (dockershim / cri-dockerd) keeps the pod's labels on the sandbox
                sb = self._follow_up(sock, "containers", sid)
                if sb is not None:
                    pl = pod_labels_from(str_dict((sb.get("Config") or {}).get("Labels")))
                    if pl:
                        out["pod_labels"] = pl
            return out
        return None
