"""TLS in plaintext: the uprobes on OpenSSL's SSL_read/SSL_write (tls.bpf.c,
vigil.l7.tls) make HTTPS count exactly like plain HTTP.

Real parts: a Python HTTPS server (its ssl module links libssl.so.3, so its
inbound side is seen too) with a self-signed certificate made here, curl and
a Python client over keep-alive connections, a podman container whose curl
maps its own copy of libssl.so.3, and a library file that has no SSL_write.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zlib  # noqa: F401 -- maps libz here: the file test_bad_library copies
from collections import Counter
from pathlib import Path

import pytest

from vigil.l7 import tls_libs

import podman_env
from l7_env import HttpServer as Server, L7Pipeline

HOST_LIB = tls_libs.host_lib()
pytestmark = pytest.mark.skipif(HOST_LIB is None or not shutil.which("curl")
                                or not shutil.which("openssl"),
                                reason="needs libssl.so.3, curl and openssl")

# a keep-alive client in Python (SSL_read_ex/SSL_write_ex) over one connection
PY_CLIENT = textwrap.dedent('''
    import http.client, json, ssl, sys
    port, plan = int(sys.argv[1]), json.loads(sys.argv[2])
    ctx = ssl._create_unverified_context()
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    for method, path in plan:
        c.request(method, path, body=b"x" if method == "POST" else None)
        c.getresponse().read()
    c.close()
''')

PLAN = [("GET", "/status/200")] * 3 + [("GET", "/status/404")] * 2 + [("GET", "/status/503")]


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"),
                        "-out", str(d / "cert.pem")], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return str(d / "cert.pem"), str(d / "key.pem")


class L7Agent(L7Pipeline):
    """The sensors with L7 on (HTTP) and the pairing tracker, in this process."""

    def __init__(self):
        super().__init__(("http",), 4096, seed=True, l7_ringbuf_size=1 << 22,
                         l7_connections=4096, ringbuf_size=1 << 20)

    @property
    def tls(self):
        return self.pipeline.sensors.tls

    def pump(self, seconds: float = 0.0) -> None:
        """Read the rings (and run the TLS library checks) for a while."""
        deadline = time.monotonic() + seconds
        while True:
            self.pipeline.drain(settle=0)
            self.pipeline._tick(time.monotonic())
            if time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def of(self, tgid: int, direction: str) -> list:
        return [r for r in self.requests if r.tgid == tgid and r.direction == direction]

    def wait(self, tgid: int, direction: str, n: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.of(tgid, direction)) < n and time.monotonic() < deadline:
            self.pump(0.05)
        self.pump(0.2)          # nothing more may come
        return self.of(tgid, direction)


@pytest.fixture(scope="module")
def agent(bpf_objects):
    a = L7Agent()
    yield a
    a.stop()


def counts(reqs) -> Counter:
    return Counter((r.method, r.status) for r in reqs)


def expected(plan) -> Counter:
    return Counter((m, int(p.rsplit("/", 1)[1])) for m, p in plan)


def curl(port: int, plan, scheme="https", prefix=()):
    """One curl over one keep-alive connection for every URL of the plan."""
    urls = [f"{scheme}://127.0.0.1:{port}{p}" for _, p in plan]
    args = [*prefix, "curl", "-sk", "--http1.1"]
    for u in urls:
        args += ["-o", "/dev/null", u]
    p = subprocess.Popen(args)
    assert p.wait(60) == 0
    return p.pid


def test_curl_https_counted_like_plain_http(agent, cert):
    """N requests by status over HTTPS: the same exact counts as over plain HTTP,
    outbound (curl) and inbound (the Python server, through SSL_read_ex), with
    the TLS flag; the encrypted bytes are never taken for plaintext."""
    plain, tls = Server(), Server(cert)
    try:
        pid_plain = curl(plain.port, PLAN, "http")
        pid_tls = curl(tls.port, PLAN)
        want = expected(PLAN)
        out_plain = agent.wait(pid_plain, "outbound", len(PLAN))
        out_tls = agent.wait(pid_tls, "outbound", len(PLAN))
        in_tls = agent.wait(tls.pid, "inbound", len(PLAN))
        in_plain = agent.wait(plain.pid, "inbound", len(PLAN))
    finally:
        plain.stop()
        tls.stop()
    assert counts(out_plain) == want and not any(r.tls for r in out_plain)
    assert counts(out_tls) == want, out_tls
    assert counts(in_tls) == want, in_tls
    assert counts(in_plain) == want
    for r in out_tls + in_tls:
        assert r.tls and r.protocol == "http" and not r.closed
        assert r.path.startswith("/status/") and r.error == (r.status >= 500)
    assert {r.peer_port for r in out_tls} == {tls.port}
    assert {r.local_port for r in in_tls} == {tls.port}
    # one connection each way: curl kept it alive
    assert len({r.fd for r in out_tls}) == 1 and len({r.local_port for r in out_tls}) == 1
    assert agent.tls.libs.get(HOST_LIB.key) is not None


def test_openssl_s_server_both_sides(agent, cert, tmp_path):
    """curl against `openssl s_server -WWW` (which reads through an SSL BIO,
    not SSL_read: seen where OpenSSL's reads meet, ssl_read_internal)."""
    from l7_env import free_port
    (tmp_path / "index.html").write_text("hello\n")
    port = free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-quiet", "-WWW", "-accept", f"127.0.0.1:{port}",
                            "-cert", cert[0], "-key", cert[1]], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        podman_env.poll(lambda: subprocess.run(["curl", "-sk", "-o", "/dev/null",
                                                f"https://127.0.0.1:{port}/index.html"]
                                               ).returncode == 0, timeout=20)
        agent.pump(0.2)
        before = len(agent.of(srv.pid, "inbound"))
        plan = [("GET", "/index.html")] * 3
        pid = curl(port, plan)
        out = agent.wait(pid, "outbound", 3)
        inb = agent.wait(srv.pid, "inbound", before + 3)[before:]
    finally:
        srv.kill()
        srv.wait()
    assert counts(out) == counts(inb) == Counter({("GET", 200): 3})
    assert all(r.tls and r.path == "/index.html" for r in out + inb)


def test_python_client_ssl_ex_calls(agent, cert):
    """Python's ssl module (SSL_write_ex / SSL_read_ex) as the client, GET and POST."""
    import json
    srv = Server(cert)
    plan = [("GET", "/status/200"), ("POST", "/status/201"), ("POST", "/status/500"),
            ("GET", "/status/200")]
    try:
        p = subprocess.Popen([sys.executable, "-c", PY_CLIENT, str(srv.port), json.dumps(plan)])
        assert p.wait(60) == 0
        out = agent.wait(p.pid, "outbound", len(plan))
        inb = agent.wait(srv.pid, "inbound", len(plan))
    finally:
        srv.stop()
    assert counts(out) == expected(plan) == counts(inb)
    assert all(r.tls for r in out + inb)


def _load_copy(path: str, hold: float = 30.0):
    """A process that maps the library file at path (ctypes), until killed."""
    code = f"import ctypes, time; ctypes.CDLL({path!r}); print('ok', flush=True); time.sleep({hold})"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ok"
    return p


def test_identity_not_path(tmp_path):
    """One file reached by two paths is one library; a copy is another."""
    other = "/lib/x86_64-linux-gnu/libssl.so.3"
    if not os.path.exists(other) or os.path.realpath(other) == other:
        pytest.skip("no second path to the host's libssl.so.3")
    copy = tmp_path / "libssl.so.3"
    shutil.copy(HOST_LIB.path, copy)
    procs = [_load_copy(other), _load_copy(HOST_LIB.path), _load_copy(str(copy))]
    try:
        keys = [{lib.key for lib in tls_libs.process_libs(p.pid)} for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert keys[0] == keys[1] == {HOST_LIB.key}
    st = os.stat(copy)
    assert keys[2] == {(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)}
    line = "7f00-7f10 r-xp 00000000 fd:01 1234   /opt/x/libssl.so.3\n"
    assert tls_libs.parse_maps_line(line) == ((0xfd, 1, 1234), "/opt/x/libssl.so.3", "7f00-7f10")
    assert tls_libs.parse_maps_line(line.replace("\n", " (deleted)\n")) is None
    assert tls_libs.parse_maps_line(line.replace("libssl", "libcrypto")) is None
    assert tls_libs._overlay_layers("rw,lowerdir=/a:/b\\:c,upperdir=/u,workdir=/w") == \
        ["/u", "/a", "/b:c"]
    assert tls_libs._overlay_layers("rw,lowerdir+=/a,lowerdir+=/x\\040y,upperdir=rel") == \
        ["/a", "/x y"]


def test_overlay_copies_of_one_image_file_are_one_library(agent, tmp_path):
    """Two overlayfs mounts over one lower layer (two containers of one image):
    /proc/PID/maps names the file by each overlay's device, but it is one real
    file -- probed once; a copy-up in an upper layer is a file of its own."""
    lower = tmp_path / "lower"
    lower.mkdir()
    shutil.copy(HOST_LIB.path, lower / "libssl.so.3")
    mounts = []
    for i in (1, 2, 3):
        for d in ("u", "w", "m"):
            (tmp_path / f"{d}{i}").mkdir()
        if i == 3:          # a copy-up: the upper layer's own file hides the lower one
            shutil.copy(HOST_LIB.path, tmp_path / "u3" / "libssl.so.3")
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={lower},upperdir={tmp_path}/u{i},workdir={tmp_path}/w{i}",
                            str(tmp_path / f"m{i}")], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount overlayfs: {r.stderr.strip()}")
        mounts.append(str(tmp_path / f"m{i}"))
    procs = []
    try:
        procs = [_load_copy(f"{m}/libssl.so.3") for m in mounts]
        libs = [tls_libs.process_libs(p.pid) for p in procs]
        assert [len(x) for x in libs] == [1, 1, 1]
        assert libs[0][0].key != libs[1][0].key          # the overlays' devices
        st = os.stat(lower / "libssl.so.3")
        real = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        assert tls_libs.resolve(libs[0][0]).key == tls_libs.resolve(libs[1][0]).key == real
        up = os.stat(tmp_path / "u3" / "libssl.so.3")
        assert tls_libs.resolve(libs[2][0]).key == (os.major(up.st_dev), os.minor(up.st_dev),
                                                    up.st_ino)
        before = len(agent.tls.libs)
        assert agent.tls.add(libs[0][0]) and agent.tls.add(libs[1][0])
        assert len(agent.tls.libs) == before + 1 and real in agent.tls.libs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for m in mounts:
            subprocess.run(["umount", "-l", m], capture_output=True)


def test_bad_library_one_line_plain_unaffected(agent, tmp_path, caplog):
    """A "libssl.so.3" without SSL_write (here a copy of libz) mapped by two
    processes: one warning line, the file is not tried again, plain HTTP is
    counted as before."""
    libz = _lib_path("libz.so")
    if not libz:
        pytest.skip("no libz to pose as libssl")
    fake = tmp_path / "libssl.so.3"
    shutil.copy(libz, fake)
    procs = [_load_copy(str(fake)), _load_copy(str(fake))]
    srv = Server()
    try:
        with caplog.at_level(logging.WARNING, logger="vigil.l7.tls"):
            for p in procs:
                agent.tls.on_exec(p.pid, now=0.0)
            agent.pump(0.1)
        pid = curl(srv.port, PLAN, "http")
        out = agent.wait(pid, "outbound", len(PLAN))
    finally:
        srv.stop()
        for p in procs:
            p.kill()
            p.wait()
    lines = [r for r in caplog.records if str(fake) in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "SSL_write" in lines[0].getMessage()
    st = os.stat(fake)
    assert (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in agent.tls.refused
    assert not agent.tls.disabled
    assert counts(out) == expected(PLAN)


def _lib_path(name: str) -> str | None:
    with open("/proc/self/maps") as f:
        for line in f:
            if name in line:
                return line.split()[-1]
    return None


def _curl_rootfs(root: Path) -> str:
    """A busybox rootfs with the host's curl and copies of every library it
    links (libssl.so.3 among them: a file of the container's own)."""
    podman_env.make_rootfs(root, dirs=("usr", "usr/bin", "lib64", "lib", "lib/x86_64-linux-gnu"))
    shutil.copy("/usr/bin/curl", root / "usr" / "bin" / "curl")
    out = subprocess.run(["ldd", "/usr/bin/curl"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(os.path.realpath(path), dest)
    return str(root)


@pytest.mark.skipif(podman_env.skip_reason() is not None,
                    reason=str(podman_env.skip_reason()))
def test_container_own_libssl(agent, cert, tmp_path):
    """curl in a podman container maps its own copy of libssl.so.3: it is
    found when the container's processes exec, probed once (its own file, its
    own mount namespace), and its HTTPS requests are counted exactly.  The first
    process to map a new copy makes its first calls before the check (tens of
    ms after its exec): the container warms up with a slow request, not counted,
    while the copy is found and probed."""
    root = _curl_rootfs(tmp_path / "rootfs")
    st = os.stat(os.path.join(root, "lib/x86_64-linux-gnu/libssl.so.3"))
    key = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    assert key != HOST_LIB.key
    srv = Server(cert)
    script = (f"curl -sk -o /dev/null https://127.0.0.1:{srv.port}/slow/1500; "
              + " ".join(["curl -sk --http1.1"] + [f"-o /dev/null https://127.0.0.1:{srv.port}{p}"
                                                  for _, p in PLAN]))
    name = f"vigil-tls-{os.getpid()}"
    p = subprocess.Popen([podman_env.PODMAN, "run", "--rm", "--name", name, "--network", "host",
                          "--rootfs", root, "/bin/sh", "-c", script])
    try:
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            agent.pump(0.05)
        assert p.wait(5) == 0
        mine = lambda: [r for r in agent.requests if r.direction == "outbound"
                        and r.peer_port == srv.port and "/slow/" not in r.path]
        deadline = time.monotonic() + 10
        while len(mine()) < len(PLAN) and time.monotonic() < deadline:
            agent.pump(0.05)
        agent.pump(0.2)
        inb = [r for r in agent.of(srv.pid, "inbound") if "/slow/" not in r.path]
    finally:
        srv.stop()
        if p.poll() is None:
            podman_env.podman("rm", "-f", name)
            p.wait(30)
    lib = agent.tls.libs.get(key)
    assert lib is not None and lib.pid and lib.mntns and lib.mntns != tls_libs.mount_ns(os.getpid())
    out = mine()
    assert counts(out) == expected(PLAN) == counts(inb)
    assert all(r.tls and r.comm == "curl" for r in out)
    assert len({r.cgroup_id for r in out}) == 1 and out[0].cgroup_id != inb[0].cgroup_id


def test_https_red_metrics_of_vigil_run_through_prometheus(bpf_objects, cert):
    """`vigil run`: curl over HTTPS (from its own loopback address) gives the
    same exact vigil_http_requests_total by method and status, both sides, as
    Prometheus reads them."""
    import random
    from prom_env import PROMETHEUS, Prometheus, VigilAgent
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed")
    lean = [f"metrics.{m}=false" for m in ("tcp", "packets", "dns", "block_io", "runqueue")]
    agent = VigilAgent(["-v"] + [x for m in lean + ["l7.protocols=[http]"] for x in ("-o", m)])
    srv = Server(cert)
    src = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
    try:
        urls = [x for _, p in PLAN for x in ("-o", "/dev/null", f"https://127.0.0.1:{srv.port}{p}")]
        r = subprocess.run(["curl", "-sk", "--http1.1", "--interface", src, *urls], timeout=60)
        assert r.returncode == 0
        prom = Prometheus([agent.address])
        try:
            for sel in (f'direction="outbound",peer="127.0.0.1:{srv.port}"',
                        f'direction="inbound",peer="{src}"'):
                assert prom.wait_for(f"sum(vigil_http_requests_total{{{sel}}})",
                                     lambda v: v >= len(PLAN)) == len(PLAN)
                for (method, status), n in expected(PLAN).items():
                    q = f'sum(vigil_http_requests_total{{{sel},method="{method}",status="{status}"}})'
                    assert prom.value(q) == n, q
            # both sides' requests and responses went through the detector
            assert prom.value('vigil_l7_tls_calls_total{result="sent"}') >= 4 * len(PLAN)
            assert prom.value("vigil_l7_tls_libraries") >= 1
        finally:
            prom.stop()
    finally:
        srv.stop()
        err = agent.stop()
    assert "TLS: probing" in err


def test_tls_off_loads_no_uprobes_plain_counted(bpf_objects):
    """l7.tls: false (l7_tls_libraries 0): tls.bpf.c is not loaded, nothing is
    probed, plain HTTP is counted as ever."""
    l7 = L7Pipeline(("http",), 1024, seed=True, tls_libraries=0, l7_ringbuf_size=1 << 20,
                    l7_connections=4096, ringbuf_size=1 << 20)
    p, got = l7.pipeline, l7.requests
    srv = Server()
    try:
        assert p.sensors.tls is None and "tls" not in p.sensors.objects
        pid = curl(srv.port, PLAN, "http")
        deadline = time.monotonic() + 10
        while len([r for r in got if r.tgid == pid]) < len(PLAN) and time.monotonic() < deadline:
            p.drain(settle=0)
            time.sleep(0.05)
    finally:
        srv.stop()
        p.stop()
    assert counts(r for r in got if r.tgid == pid) == expected(PLAN)
