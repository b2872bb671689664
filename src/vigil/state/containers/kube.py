"""Optional Kubernetes API enrichment: a cache of this node's pods.

Lists and then watches ``/api/v1/pods?fieldSelector=spec.nodeName=<node>`` with
the pod's service-account token (in-cluster, when ``KUBERNETES_SERVICE_HOST``
is set), keyed by pod uid.  ``lookup(pod_uid, container_name)`` gives pod
labels, the owning workload (a ReplicaSet's Deployment), namespace/name and
the container's image digest.  The metadata fetcher calls it from the
resolver's worker thread, never on the event path.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Optional

import requests

from vigil.state.containers.metadata import split_image

log = logging.getLogger(__name__)

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def owner_of(pod: dict) -> tuple:
    """(kind, name) of the workload that owns a pod; a ReplicaSet made by a Deployment
    (``<deployment>-<pod-template-hash>``) is reported as the Deployment."""
    meta = pod.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    ref = next((r for r in refs if isinstance(r, dict) and r.get("controller")), None)
    if ref is None and refs and isinstance(refs[0], dict):
        ref = refs[0]
    if ref is None:
        return "", ""
    kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
    labels = meta.get("labels") or {}
    h = labels.get("pod-template-hash")
    if kind == "ReplicaSet" and h and name.endswith("-" + h):
        return "Deployment", name[: -len(h) - 1]
    return kind, name


def pod_fields(pod: dict, container_name: str = "") -> dict:
    meta = pod.get("metadata") or {}
    out = {"pod_name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
           "pod_uid": meta.get("uid", ""), "pod_labels": dict(meta.get("labels") or {})}
    out["owner_kind"], out["owner_name"] = owner_of(pod)
    status = pod.get("status") or {}
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []) \
            + (status.get("ephemeralContainerStatuses") or []):
        if isinstance(cs, dict) and cs.get("name") == container_name and container_name:
            if cs.get("image"):
                out["image"] = cs["image"]
            iid = str(cs.get("imageID") or "")
            digest = split_image(iid.split("://", 1)[-1])[2]
            if digest:
                out["image_digest"] = digest
            break
    return {k: v for k, v in out.items() if v}


class KubePodCache:
    def __init__(self, base_url: str, node_name: str, token: Optional[str] = None,
                 ca_file: Optional[str] = None, session: Optional[requests.Session] = None,
                 watch_timeout: int = 300, lookup_wait: float = 1.0, deleted_grace: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.node_name = node_name
        self.session = session or requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.verify = ca_file if ca_file else True
        self.watch_timeout = watch_timeout
        self.lookup_wait = lookup_wait
        self.deleted_grace = deleted_grace
        self._pods: dict = {}               # uid -> pod
        self._deleted: dict = {}            # uid -> monotonic time of deletion
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.synced = threading.Event()
        self.errors = 0
        self.relists = 0

    @classmethod
    def from_env(cls, node_name: Optional[str] = None, **kw) -> Optional["KubePodCache"]:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if not host:
            return None
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        try:
            with open(f"{SA_DIR}/token") as f:
                token = f.read().strip()
        except OSError:
            token = None
        ca = f"{SA_DIR}/ca.crt" if os.path.exists(f"{SA_DIR}/ca.crt") else None
        node = node_name or os.environ.get("NODE_NAME") or os.environ.get("KUBERNETES_NODE_NAME") \
            or socket.gethostname()
        return cls(f"https://{host}:{port}", node, token=token, ca_file=ca, **kw)

    # --- API ---------------------------------------------------------------------------
    def _url(self) -> str:
        return f"{self.base_url}/api/v1/pods"

    def _params(self, **extra) -> dict:
        p = {"fieldSelector": f"spec.nodeName={self.node_name}"}
        p.update(extra)
        return p

    def list_pods(self) -> str:
        """Full list; replaces the cache; returns the resourceVersion to watch from."""
        r = self.session.get(self._url(), params=self._params(), verify=self.verify, timeout=30)
        r.raise_for_status()
        body = r.json()
        pods = {}
        for pod in body.get("items") or []:
            uid = (pod.get("metadata") or {}).get("uid")
            if uid:
                pods[uid] = pod
        with self._cond:
            self._pods = pods
            self._cond.notify_all()
        self.relists += 1
        self.synced.set()
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def watch(self, resource_version: str) -> Optional[str]:
        """One watch request; returns the last resourceVersion, or None if a relist is needed."""
        params = self._params(watch="1", resourceVersion=resource_version,
                              timeoutSeconds=str(self.watch_timeout), allowWatchBookmarks="true")
        with self.session.get(self._url(), params=params, verify=self.verify, stream=True,
                              timeout=(10, self.watch_timeout + 30)) as r:
            if r.status_code == 410:
                return None
            r.raise_for_status()
            rv = resource_version
            for line in r.iter_lines():
                if self._stop.is_set():
                    break
                if not line:
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                typ, obj = ev.get("type"), ev.get("object") or {}
                if typ == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    continue
                meta = obj.get("metadata") or {}
                rv = str(meta.get("resourceVersion") or rv)
                if typ == "BOOKMARK":
                    continue
                uid = meta.get("uid")
                if not uid:
                    continue
                with self._cond:
                    if typ in ("ADDED", "MODIFIED"):
                        self._pods[uid] = obj
                        self._deleted.pop(uid, None)
                    elif typ == "DELETED":
                        # keep it a while: late events from its containers still resolve
                        self._pods[uid] = obj
                        self._deleted[uid] = time.monotonic()
                    self._cond.notify_all()
            self._gc()
            return rv

    def _gc(self) -> None:
        now = time.monotonic()
        with self._cond:
            for uid, t in list(self._deleted.items()):
                if now - t > self.deleted_grace:
                    del self._deleted[uid]
                    self._pods.pop(uid, None)

    def run(self) -> None:
        backoff = 1.0
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self.list_pods()
                rv = self.watch(rv)
                backoff = 1.0
            except (requests.RequestException, ValueError) as e:
                self.errors += 1
                log.warning("kubernetes pod watch: %s", e)
                rv = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="vigil-kube-pods", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    # --- lookups ---------------------------------------------------------------------
    def get(self, pod_uid: str) -> Optional[dict]:
        return self._pods.get(pod_uid)

    def lookup(self, pod_uid: str, container_name: str = "") -> Optional[dict]:
        """Fields for a container of the pod; waits up to ``lookup_wait`` for a pod the
        watch has not delivered yet (called off the event path)."""
        if not pod_uid:
            return None
        deadline = time.monotonic() + self.lookup_wait
        with self._cond:
            pod = self._pods.get(pod_uid)
            while pod is None and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
                pod = self._pods.get(pod_uid)
        if pod is None:
            return None
        return pod_fields(pod, container_name)

    def __len__(self) -> int:
        return len(self._pods)
