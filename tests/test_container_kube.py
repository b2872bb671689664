"""Kubernetes pod cache against a tiny fake API server on 127.0.0.1."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from vigil.state.containers.kube import KubePodCache, owner_of, pod_fields
from vigil.state.containers.metadata import MetadataFetcher

UID1 = "a3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
UID2 = "11111111-2222-3333-4444-555555555555"


def pod(uid, name, ns="shop", labels=None, owner=None, rv="1", statuses=None):
    meta = {"uid": uid, "name": name, "namespace": ns, "labels": labels or {}, "resourceVersion": rv}
    if owner:
        meta["ownerReferences"] = [dict(owner, controller=True)]
    return {"metadata": meta, "spec": {"nodeName": "node-a"},
            "status": {"containerStatuses": statuses or []}}


POD1 = pod(UID1, "web-7d9f8b6c5d-x2k4p", labels={"app": "web", "pod-template-hash": "7d9f8b6c5d"},
           owner={"kind": "ReplicaSet", "name": "web-7d9f8b6c5d"},
           statuses=[{"name": "nginx", "image": "docker.io/library/nginx:1.25.3",
                      "imageID": "docker.io/library/nginx@sha256:" + "ab" * 32}])
POD2 = pod(UID2, "agent-abcde", ns="kube-system", labels={"app": "agent"},
           owner={"kind": "DaemonSet", "name": "agent"}, rv="5")


class FakeAPI:
    def __init__(self):
        self.requests = []
        self.auth = []
        self.watch_events = [{"type": "ADDED", "object": POD2},
                             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "6"}}}]
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                u = urlparse(self.path)
                q = parse_qs(u.query)
                outer.requests.append((u.path, q))
                outer.auth.append(self.headers.get("Authorization"))
                if u.path != "/api/v1/pods" or q.get("fieldSelector") != ["spec.nodeName=node-a"]:
                    self.send_error(404)
                    return
                if q.get("watch") == ["1"]:
                    if q.get("resourceVersion") != ["3"] or len([r for r in outer.requests if r[1].get("watch")]) > 1:
                        time.sleep(0.2)
                        body = b""
                    else:
                        time.sleep(0.3)
                        body = b"".join(json.dumps(e).encode() + b"\n" for e in outer.watch_events)
                else:
                    body = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": "3"},
                                       "items": [POD1]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    a = FakeAPI()
    yield a
    a.close()


def test_owner_and_fields():
    assert owner_of(POD1) == ("Deployment", "web")
    assert owner_of(POD2) == ("DaemonSet", "agent")
    assert owner_of({"metadata": {}}) == ("", "")
    f = pod_fields(POD1, "nginx")
    assert f["pod_labels"] == {"app": "web", "pod-template-hash": "7d9f8b6c5d"}
    assert f["image_digest"] == "sha256:" + "ab" * 32
    assert f["namespace"] == "shop" and f["owner_name"] == "web"


def test_list_and_watch(api):
    kc = KubePodCache(api.url, "node-a", token="s3cret", watch_timeout=5, lookup_wait=5)
    kc.start()
    try:
        assert kc.synced.wait(5)
        assert kc.lookup(UID1, "nginx")["owner_kind"] == "Deployment"
        # POD2 arrives by the watch a little later: lookup waits for it
        f = kc.lookup(UID2, "agent")
        assert f and f["namespace"] == "kube-system" and f["owner_kind"] == "DaemonSet"
        kc.lookup_wait = 0.01
        assert kc.lookup("nope") is None and kc.lookup("") is None
    finally:
        kc.stop()
    assert all(a == "Bearer s3cret" for a in api.auth)
    watch_reqs = [q for p, q in api.requests if q.get("watch")]
    assert watch_reqs and watch_reqs[0]["resourceVersion"] == ["3"]


def test_lookup_times_out_quickly(api):
    kc = KubePodCache(api.url, "node-a", lookup_wait=0.05)
    kc.list_pods()
    t0 = time.monotonic()
    assert kc.lookup(UID2) is None
    assert time.monotonic() - t0 < 1


def test_fetcher_uses_kube(api):
    kc = KubePodCache(api.url, "node-a", lookup_wait=0.1)
    kc.list_pods()

    class Bundle:
        name = "oci-bundle"

        def fetch(self, cid, runtime=""):
            return {"runtime": "containerd", "k8s_container_name": "nginx", "pod_uid": UID1,
                    "image": "docker.io/library/nginx:1.25.3"}

    out = MetadataFetcher(sources=[Bundle()], kube=kc).fetch("c" * 64)
    assert out["owner_kind"] == "Deployment" and out["owner_name"] == "web"
    assert out["pod_labels"]["app"] == "web"
    assert out["image_digest"] == "sha256:" + "ab" * 32
    assert out["sources"] == ("oci-bundle", "kubernetes")


def test_from_env(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert KubePodCache.from_env() is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv("NODE_NAME", "node-z")
    kc = KubePodCache.from_env()
    assert kc.base_url == "https://10.0.0.1:6443" and kc.node_name == "node-z"
