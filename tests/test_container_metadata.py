"""Metadata sources: OCI config.json annotations, containers/storage, the Docker API."""
import json
import shutil
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from vigil.state.containers import metadata as md
from vigil.state.containers.model import ContainerInfo

DATA = Path(__file__).parent / "data" / "oci"
CID = "4c0f1b3e9f5a7e2d8c6b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
SID = "b7e3a1c9d2f4e6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c8d0e2f4a6"
UID = "a3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


def load(name):
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize("ref,expect", [
    ("nginx", ("nginx", "", "")),
    ("nginx:1.25", ("nginx", "1.25", "")),
    ("docker.io/library/nginx:1.25.3", ("docker.io/library/nginx", "1.25.3", "")),
    ("localhost:5000/team/app", ("localhost:5000/team/app", "", "")),
    ("localhost:5000/team/app:v2", ("localhost:5000/team/app", "v2", "")),
    ("ghcr.io/acme/agent@sha256:" + "ab" * 32, ("ghcr.io/acme/agent", "", "sha256:" + "ab" * 32)),
    ("quay.io/a/b:1.0@sha256:" + "ef" * 32, ("quay.io/a/b", "1.0", "sha256:" + "ef" * 32)),
    ("sha256:" + "cd" * 32, ("", "", "")),
    ("cd" * 32, ("", "", "")),
    ("", ("", "", "")),
    (None, ("", "", "")),
    ("repo@notadigest", ("repo", "", "")),
])
def test_split_image(ref, expect):
    assert md.split_image(ref) == expect


def test_parse_time():
    assert md.parse_time_ns("1970-01-01T00:00:01Z") == 1_000_000_000
    assert md.parse_time_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert md.parse_time_ns("1970-01-01T02:00:01.000000001+02:00") == 1_000_000_001
    assert md.parse_time_ns("0001-01-01T00:00:00Z") == 0
    assert md.parse_time_ns("yesterday") == 0
    assert md.parse_time_ns(None) == 0


def test_containerd_cri_container():
    out = md.finish(md.parse_oci_config(load("containerd_cri_container.json")))
    assert out["runtime"] == "containerd"
    assert out["pod_name"] == "web-7d9f8b6c5d-x2k4p"
    assert out["namespace"] == "shop"
    assert out["pod_uid"] == UID
    assert out["k8s_container_name"] == "nginx"
    assert out["name"] == "nginx"
    assert out["container_type"] == "container"
    assert out["sandbox_id"] == SID
    assert (out["image_repository"], out["image_tag"]) == ("docker.io/library/nginx", "1.25.3")
    assert out["privileged"] is False


def test_containerd_cri_sandbox():
    out = md.parse_oci_config(load("containerd_cri_sandbox.json"))
    assert out["container_type"] == "sandbox"
    assert out["image"] == "registry.k8s.io/pause:3.9"
    assert out["k8s_container_name"] == "POD"


def test_containerd_privileged():
    out = md.finish(md.parse_oci_config(load("containerd_cri_privileged.json")))
    assert out["privileged"] is True
    assert out["image_digest"] == "sha256:" + "ab" * 32
    assert out["namespace"] == "kube-system"


def test_crio_container():
    out = md.finish(md.parse_oci_config(load("crio_container.json")))
    assert out["runtime"] == "cri-o"
    assert out["pod_name"] == "web-1" and out["namespace"] == "shop" and out["pod_uid"] == UID
    assert out["k8s_container_name"] == "nginx"
    assert out["image"] == "quay.io/acme/nginx:stable"
    assert out["sandbox_id"] == SID
    assert out["privileged"] is False
    assert out["start_time"] == md.parse_time_ns("2024-05-01T10:20:30.123456789Z")
    assert out["labels"]["io.kubernetes.pod.uid"] == UID


def test_podman_config():
    out = md.parse_oci_config(load("podman.json"))
    assert out["runtime"] == "podman"          # not cri-o, despite its io.kubernetes.cri-o.* keys
    assert out["pod_name"] == "web-1"
    assert out["privileged"] is False
    assert out["start_time"] > 0


def test_spec_privileged_heuristics():
    spec = load("containerd_cri_container.json")
    assert md.spec_privileged(spec) is False
    spec["linux"]["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
    assert md.spec_privileged(spec) is False          # devices but no CAP_SYS_ADMIN
    spec["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    assert md.spec_privileged(spec) is True
    spec["linux"]["resources"]["devices"] = [{"allow": True, "type": "c", "major": 10, "minor": 200,
                                              "access": "rwm"}]
    assert md.spec_privileged(spec) is False          # one device only
    assert md.spec_privileged({}) is False
    assert md.spec_privileged({"linux": "bogus"}) is None


def test_malformed_configs():
    for bad in ({}, {"annotations": None}, {"annotations": {"io.kubernetes.cri-o.Labels": "{not json"}},
                {"annotations": {"io.kubernetes.cri.sandbox-name": 5}}, [], None, "x"):
        md.parse_oci_config(bad)


def make_bundles(tmp_path):
    """A fake /run tree: podman static dir, CRI-O runroot, containerd task dir."""
    podman = tmp_path / "var/lib/containers/storage/overlay-containers"
    crio = tmp_path / "run/containers/storage/overlay-containers"
    ctrd = tmp_path / "run/containerd/io.containerd.runtime.v2.task"
    return podman, crio, ctrd


def bundle_source(tmp_path):
    podman, crio, ctrd = make_bundles(tmp_path)
    return md.BundleSource(
        templates=(("podman", str(podman) + "/{id}/userdata/config.json"),
                   ("cri-o", str(crio) + "/{id}/userdata/config.json")),
        containerd_dirs=(str(ctrd),))


def put(path: Path, src: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / src, path)


def test_bundle_source_containerd(tmp_path):
    src = bundle_source(tmp_path)
    put(tmp_path / f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/config.json",
        "containerd_cri_container.json")
    out = src.fetch(CID, "")
    assert out["runtime"] == "containerd" and out["pod_name"] == "web-7d9f8b6c5d-x2k4p"
    assert src.fetch("0" * 64, "") is None
    assert src.fetch("../../etc", "") is None


def test_bundle_source_docker_moby_namespace(tmp_path):
    src = bundle_source(tmp_path)
    put(tmp_path / f"run/containerd/io.containerd.runtime.v2.task/moby/{CID}/config.json", "podman.json")
    spec = json.loads((DATA / "podman.json").read_text())
    spec["annotations"] = {}
    (tmp_path / f"run/containerd/io.containerd.runtime.v2.task/moby/{CID}/config.json").write_text(json.dumps(spec))
    assert src.fetch(CID, "")["runtime"] == "docker"


def test_bundle_source_crio_pod_labels(tmp_path):
    src = bundle_source(tmp_path)
    put(tmp_path / f"run/containers/storage/overlay-containers/{CID}/userdata/config.json", "crio_container.json")
    put(tmp_path / f"run/containers/storage/overlay-containers/{SID}/userdata/config.json", "crio_sandbox.json")
    out = md.finish(src.fetch(CID, "cri-o"))
    assert out["pod_labels"] == {"app": "web", "tier": "frontend", "pod-template-hash": "7d9f8b6c5d"}
    assert out["namespace"] == "shop"


def test_storage_source(tmp_path):
    f = tmp_path / "containers.json"
    f.write_text(json.dumps([
        {"id": CID, "names": ["vtest2"], "image": "",
         "metadata": json.dumps({"image-name": "", "image-id": "", "name": "vtest2", "created-at": 1})},
        {"id": SID, "names": [f"k8s_nginx_web-1_shop_{UID}_0"], "image": "abc",
         "metadata": json.dumps({"pod-name": f"k8s_web-1_shop_{UID}_0", "pod-id": "f" * 64,
                                 "image-name": "quay.io/acme/nginx:stable",
                                 "name": f"k8s_nginx_web-1_shop_{UID}_0", "metadata-name": "nginx"})},
    ]))
    src = md.StorageSource(files=[str(f)])
    assert src.fetch(CID) == {"name": "vtest2"}
    out = src.fetch(SID)
    assert out["runtime"] == "cri-o" and out["k8s_container_name"] == "nginx"
    assert out["namespace"] == "shop" and out["pod_uid"] == UID
    assert out["image"] == "quay.io/acme/nginx:stable"
    assert src.fetch("nope") is None
    f.write_text("garbage")
    assert src.fetch(CID) is None


class FakeDocker:
    """A Docker Engine API stand-in on a unix socket."""

    def __init__(self, path, containers, images=None):
        self.path = path
        self.containers = containers
        self.images = images or {}
        self.requests = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                parts = self.path.split("/")
                body, code = None, 404
                if len(parts) == 4 and parts[1] == "containers" and parts[3] == "json":
                    body = outer.containers.get(parts[2])
                elif len(parts) == 4 and parts[1] == "images":
                    from urllib.parse import unquote
                    body = outer.images.get(unquote(parts[2]))
                if body is not None:
                    code = 200
                data = json.dumps(body if body is not None else {"message": "no such"}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def get_request(self):
                req, _ = super().get_request()
                return req, ("local", 0)

        self.server = S(path, H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_docker(tmp_path):
    inspect = load("docker_inspect.json")
    sandbox = {"Id": SID, "Name": "/k8s_POD_web-1_shop", "Config": {"Image": "registry.k8s.io/pause:3.9",
               "Labels": {"app": "web", "io.kubernetes.docker.type": "podsandbox",
                          "io.kubernetes.pod.name": "web-1", "annotation.kubernetes.io/config.seen": "x"}}}
    images = {"sha256:" + "cd" * 32: {"RepoDigests": ["nginx@sha256:" + "12" * 32]}}
    fd = FakeDocker(str(tmp_path / "docker.sock"), {CID: inspect, SID: sandbox}, images)
    yield fd
    fd.close()


def test_docker_api_source(fake_docker):
    src = md.DockerAPISource([fake_docker.path, "/nonexistent.sock"])
    out = md.finish(src.fetch(CID, "docker"))
    assert out["name"] == f"k8s_nginx_web-1_shop_{UID}_0"
    assert out["image"] == "nginx:1.25" and out["image_tag"] == "1.25"
    assert out["image_digest"] == "sha256:" + "12" * 32
    assert out["pod_name"] == "web-1" and out["namespace"] == "shop" and out["pod_uid"] == UID
    assert out["k8s_container_name"] == "nginx" and out["sandbox_id"] == SID
    assert out["pod_labels"] == {"app": "web"}
    assert out["privileged"] is False
    assert out["start_time"] == md.parse_time_ns("2024-05-01T08:20:31.25Z")
    assert src.fetch("0" * 64) is None


def test_fetcher_merges_cheapest_first(tmp_path, fake_docker):
    bsrc = bundle_source(tmp_path)
    put(tmp_path / f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/config.json",
        "containerd_cri_container.json")
    f = md.MetadataFetcher(sources=[bsrc, md.DockerAPISource([fake_docker.path])])
    out = f.fetch(CID, "")
    # the bundle said containerd and its pod name; docker's answers only fill gaps
    assert out["runtime"] == "containerd"
    assert out["pod_name"] == "web-7d9f8b6c5d-x2k4p"
    assert out["labels"]["maintainer"] == "NGINX Docker Maintainers"
    assert out["sources"] == ("oci-bundle", "docker-api")
    info = md.apply(ContainerInfo(id=CID, runtime="", complete=False), out)
    assert info.complete and info.runtime == "containerd" and info.image_tag == "1.25.3"


def test_fetcher_survives_broken_source():
    class Boom:
        name = "boom"

        def fetch(self, cid, runtime=""):
            raise RuntimeError("x")

    f = md.MetadataFetcher(sources=[Boom()])
    assert f.fetch(CID)["sources"] == ()
    assert f.errors == 1
