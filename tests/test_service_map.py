"""The service map end to end: real podman containers (a busybox httpd server and a
wget client, labelled as pods), real host processes, real traffic; exact edge counts
through the agent's /metrics, `vigil services`, a real Prometheus (every dashboard
expression), and `vigil top`'s HTTP columns."""
from __future__ import annotations

import subprocess
import uuid

import pytest

from conftest import VIGIL, closed_port
from podman_env import make_rootfs, podman, poll, skip_reason

PODMAN_SKIP = skip_reason()


def pod_labels(pod, ns, container):
    return ["--label", f"io.kubernetes.pod.name={pod}", "--label",
            f"io.kubernetes.pod.namespace={ns}", "--label",
            f"io.kubernetes.container.name={container}"]


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    """A server pod (shop/web: busybox httpd on 8080) and a client pod (shop/shopper:
    sleeps; `podman exec` runs its requests), with their IPs."""
    if PODMAN_SKIP:
        pytest.skip(PODMAN_SKIP)
    root = make_rootfs(tmp_path_factory.mktemp("svc-rootfs"),
                       ("sh", "httpd", "wget", "sleep", "echo", "cat"), dirs=("www", "www/cgi-bin"))
    with open(f"{root}/www/index.html", "w") as f:
        f.write("hello\n")
    tag = uuid.uuid4().hex[:8]
    server, client = f"vigil-svc-web-{tag}", f"vigil-svc-shopper-{tag}"
    r = podman("run", "-d", "--name", server, *pod_labels("web", "shop", "httpd"), "--rootfs",
               root, "/bin/httpd", "-f", "-p", "8080", "-h", "/www")
    assert r.returncode == 0, r.stderr
    r = podman("run", "-d", "--name", client, *pod_labels("shopper", "shop", "wget"),
               "--rootfs", root, "/bin/sleep", "600")
    assert r.returncode == 0, r.stderr
    ips = {n: podman("inspect", "-f", "{{.NetworkSettings.IPAddress}}", n).stdout.strip()
           for n in (server, client)}
    try:
        yield {"server": server, "client": client, "server_ip": ips[server],
               "client_ip": ips[client], "rootfs": root}
    finally:
        podman("rm", "-f", "-t", "0", server, client)


def test_a_peer_ip_on_this_node_names_its_pod(pods):
    from vigil.l7.identity import Identities
    from vigil.state.containers.resolver import ContainerResolver
    with ContainerResolver() as r:
        r.seed()
        cid = podman("inspect", "-f", "{{.Id}}", pods["server"]).stdout.strip()
        assert poll(lambda: (r.containers().get(cid) or None) and r.containers()[cid].complete,
                    15)
        ids = Identities(r)
        me = ("", "host/pytest", "host")
        assert ids.peer(pods["server_ip"], "host", me) == ("shop", "web")
        assert ids.peer(pods["client_ip"], "host", me) == ("shop", "shopper")
        assert ids.peer("127.0.0.1", "host", me) == ("", "host")
        assert ids.peer("203.0.113.9", "host", me) == ("", "203.0.113.0/24")


def test_services_without_an_agent_is_one_error_line():
    r = subprocess.run([VIGIL, "services", "--interval", "100ms", "--metrics-url",
                        f"127.0.0.1:{closed_port()}"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("vigil: error: no vigil agent answers at http://127.0.0.1:")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([VIGIL, "services", "--interval", "0"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "must be more than 0" in r.stderr


