"""Falco's rules about containers (and the host network ones), unchanged,
against the real kernel: one `vigil run` agent with the three files stacked
(stable, incubating, sandbox; `rule_matching: all`), three podman `--rootfs`
busybox containers run side by side, each doing several behaviours, and a
benign look-alike for each rule that must stay quiet.  Each behaviour carries
a marker that shows in its alert's output.

* P: `--privileged`, the host's /proc mounted (a sensitive mount), no tty;
  a link-local address on a veth pair inside its own network namespace (a
  metadata-service connect under way that never leaves it);
* N: plain (podman's default capabilities), `-t`, the host's /usr mounted
  read-only (a python for sockets; not a sensitive mount);
* T: `--cap-add SYS_ADMIN`, its entry point is `tar` (what `kubectl cp` runs).

All use an overlay over the shared rootfs (`--rootfs DIR:O`): what a container
writes is in the upper layer, so an executable it drops is
`proc.is_exe_upper_layer`.  The agent runs in a private mount namespace whose
/etc/hosts names kubernetes.default.svc.cluster.local (fd.sip.name resolves
forward), so the node's own /etc/hosts is not touched.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from falco_files import SANDBOX, falco_files
from podman_env import PODMAN, make_rootfs, tools_missing
from test_falco_rules_fire import PY, VIGIL, FalcoAgent, check, mark, run, stop_agent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the agent and podman need root")

K8S_API = "10.96.0.1"        # what the agent's /etc/hosts gives kubernetes.default.svc.cluster.local
# busybox applets, and names busybox does not have (it says so, but the exec happened)
META = ("import socket, sys; s = socket.socket(); s.setblocking(False); "
        "s.connect_ex((sys.argv[1], 80))")
TOOLS = ("sh", "cat", "ls", "cp", "mkdir", "echo", "true", "sleep", "nc", "mount", "unshare",
         "tar", "wget", "base64", "ip", "apk", "scp", "kubectl", "debugfs")


def host_ip() -> str | None:
    """The node's own non-loopback IPv4 address (the source of its default route)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.254", 9))
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


TEST_NET = "198.51.100.7"      # TEST-NET-2: no host answers it


def outbound_in_progress() -> bool:
    """A TCP connect to a public address gets under way (a default route)."""
    s = socket.socket()
    s.setblocking(False)
    try:
        return s.connect_ex((TEST_NET, 4444)) in (0, errno.EINPROGRESS)
    finally:
        s.close()


def start_agent_private_hosts(files, d: Path) -> FalcoAgent:
    """`vigil run` in its own mount namespace, /etc/hosts replaced there only."""
    hosts = d / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() +
                     f"\n{K8S_API} kubernetes.default.svc.cluster.local\n")
    cfg = d / "vigil.yaml"
    cfg.write_text("rule_matching: all\nrate_limit:\n  window: 0\nmetrics:\n  address: ''\n")
    out, err, store = d / "alerts.json", d / "agent.err", d / "alerts.db"
    fence_dir = d / "fences"
    fence_dir.mkdir()
    args = " ".join(f"-r '{f}'" for f in files)
    script = (f"mount --bind '{hosts}' /etc/hosts && exec '{VIGIL}' run -c '{cfg}' {args} "
              f"--output json --store '{store}'")
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                stdout=fo, stderr=fe, cwd=str(d))
    agent = FalcoAgent(proc, out, err, store, fence_dir)
    deadline = time.monotonic() + 60
    while b"running with" not in err.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"agent did not start:\n{err.read_text()}")
        time.sleep(0.05)
    return agent


def build_rootfs(root: Path, m: dict) -> None:
    """The shared lower layer: busybox, a python named npm (a node package
    manager that runs a network tool), the containers' scripts, and the files
    the behaviours read.  Busybox's sh runs an applet named bare through
    /proc/self/exe (proc.name "exe" at the exec, for Falco too): the rules that
    look at the exec get the applet by its path."""
    make_rootfs(root, TOOLS, dirs=("usr", "run", "srv", "hostfs", "hostfsx", "t"),
                links={"lib": "usr/lib", "lib64": "usr/lib64"})
    shutil.copy(os.path.realpath(PY), root / "bin" / "npm")
    (root / "srv" / m["T"]).write_text("artifact\n")
    (root / "srv" / m["tar_q"]).write_text("artifact\n")
    (root / "hostfs" / m["hostfs"]).write_text("x\n")
    (root / "hostfsx" / m["hostfs_q"]).write_text("x\n")
    py = "/usr/bin/python3 -c"
    n = [
        # Netcat Remote Code Execution in Container / Launch Suspicious Network Tool
        f"/bin/nc -e /bin/true 127.0.0.1 9 {m['nc_e']}",
        f"/bin/nc 127.0.0.1 9 {m['nc_q']}",
        # Network Tool Executed During NPM Package Install
        f"npm -c 'import subprocess; subprocess.run([\"nc\", \"127.0.0.1\", \"9\", \"{m['npm']}\"])'",
        # Packet socket created in container (EPERM without CAP_NET_RAW: the call is the behaviour)
        f"{py} 'import socket\ntry: socket.socket(17, 3)\nexcept OSError: pass' {m['packet']}",
        f"{py} 'import socket; socket.socket(2, 2)' {m['packet_q']}",
        # Redirect STDOUT/STDIN to Network Connection in Container
        f"{py} 'import os, socket; s = socket.socket(2, 2); os.dup2(s.fileno(), 1)' {m['dup']}",
        f"{py} 'import os, socket; s = socket.socket(2, 2); os.dup2(s.fileno(), 5)' {m['dup_q']}",
        # Contact K8S API Server From Container (no route with --network none: the connect is it)
        f"{py} 'import socket; socket.socket().connect_ex((\"{K8S_API}\", 443))' {m['k8s']}",
        f"{py} 'import socket; socket.socket().connect_ex((\"10.96.0.2\", 443))' {m['k8s_q']}",
        # Launch Package Management Process / Remote File Copy / Ingress Remote File Copy /
        # Kubernetes Client Tool, in Container
        f"apk {m['apk']}", f"scp {m['scp']}", f"/bin/wget -q -T 1 http://127.0.0.1:9/{m['wget']}",
        f"kubectl {m['kubectl']}",
        # Decoding Payload in Container
        f"echo eA== | /bin/base64 -d - {m['b64']}", f"echo x | /bin/base64 - {m['b64_q']}",
        # Read environment variable from /proc files
        f"cat /proc/self/environ /nonexistent/{m['environ']}",
        f"cat /proc/self/status /nonexistent/{m['environ_q']}",
        # Container Access to Host Sensitive Paths
        f"cat /hostfs/{m['hostfs']}", f"cat /hostfsx/{m['hostfs_q']}",
        # Change namespace privileges via unshare (no CAP_SYS_ADMIN here)
        f"/bin/unshare -U true {m['unshare']}",
        # privileged-only rules: the look-alikes, unprivileged
        f"debugfs {m['debugfs_q']}", f"mkdir -p /tmp/{m['ra_q']}",
        f"echo 1 > /tmp/{m['ra_q']}/release_agent", f"/bin/mount -t tmpfs none /mnt/{m['mount_q']}",
        # Drop and execute new binary in container: written here (upper layer), run
        f"mkdir /tmp/{m['drop']}", f"cp /bin/busybox /tmp/{m['drop']}/ls",
        f"/tmp/{m['drop']}/ls /tmp >/dev/null", f"ls /nonexistent/{m['drop_q']}",
    ]
    p = [
        f"debugfs {m['debugfs']}",
        f"mkdir -p /tmp/{m['ra']}", f"echo 1 > /tmp/{m['ra']}/release_agent",
        f"mkdir -p /mnt/{m['mount']}", f"/bin/mount -t tmpfs none /mnt/{m['mount']}",
        f"/bin/unshare -m true {m['unshare_q']}",                       # CAP_SYS_ADMIN: expected
        f"/bin/tar cf /dev/null /srv/{m['tar_q']}",                      # tar from a shell, not kubectl cp
        # Contact EC2 Instance Metadata Service / cloud metadata service From Container:
        # a link-local address on a veth pair whose both ends are in the container's
        # network namespace (nothing leaves it): the connect is under way (EINPROGRESS)
        "/bin/ip link add v0 type veth", "/bin/ip addr add 169.254.0.2/16 dev v0",
        "/bin/ip link set v0 up",
        f"/usr/bin/python3 -c '{META}' 169.254.169.254 {m['meta']}",
        f"/usr/bin/python3 -c '{META}' 169.254.10.10 {m['meta_q']}",
    ]
    for name, lines in (("n.sh", n), ("p.sh", p)):
        (root / "t" / name).write_text("\n".join(f"{x} >/dev/null 2>&1" if ">" not in x else
                                                 f"{x} 2>/dev/null" for x in lines) + "\ntrue\n")


@pytest.fixture(scope="module")
def ctx():
    why = tools_missing()
    if why:
        pytest.skip(why)
    files = falco_files(SANDBOX)
    keys = ("N", "P", "T", "nc_e", "nc_q", "npm", "packet", "packet_q", "dup", "dup_q", "k8s",
            "k8s_q", "apk", "scp", "wget", "kubectl", "b64", "b64_q", "environ", "environ_q",
            "hostfs", "hostfs_q", "unshare", "unshare_q", "debugfs", "debugfs_q", "ra", "ra_q",
            "mount", "mount_q", "drop", "drop_q", "tar_q", "meta", "meta_q")
    m = {k: mark() for k in keys}
    # not below pytest's tmp dirs: other sessions on this machine rotate those away
    base = Path("/tmp") / ("vigil-falco-ct-" + uuid.uuid4().hex[:8])
    base.mkdir()
    root = base / "rootfs"
    build_rootfs(root, m)
    agent = start_agent_private_hosts(files, base)
    tag = uuid.uuid4().hex[:8]
    names = {k: f"vigil-falco-{k.lower()}-{tag}" for k in "NPT"}
    runs = {
        "P": ["--privileged", "-v", "/proc:/hostproc:ro", "-v", "/usr:/usr:ro",
              "--rootfs", f"{root}:O",
              "/bin/sh", "/t/p.sh", m["P"]],
        "N": ["-t", "-v", "/usr:/usr:ro", "--rootfs", f"{root}:O", "/bin/sh", "/t/n.sh", m["N"]],
        "T": ["--cap-add", "SYS_ADMIN", "--rootfs", f"{root}:O", "/bin/tar", "cf", "/dev/null",
              f"/srv/{m['T']}"],
    }
    # PATH: busybox's tools, not the host's from the /usr mount
    procs = {k: subprocess.Popen([PODMAN, "run", "--rm", "--name", names[k], "--network", "none",
                                  "-e", "PATH=/bin", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for k, args in runs.items()}
    try:
        for k, p in procs.items():
            _out, err = p.communicate(timeout=120)
            assert p.returncode == 0, f"container {k}: {err}"
        yield agent, m
    finally:
        for k, p in procs.items():
            if p.poll() is None:
                subprocess.run([PODMAN, "rm", "-f", names[k]], capture_output=True, timeout=60)
                p.kill()
        stop_agent(agent)
        if not os.environ.get("VIGIL_TEST_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


def test_container_rules_fire(ctx, tmp_path):
    agent, m = ctx
    work = tmp_path
    for tool in ("nc", "apk", "scp", "wget", "kubectl"):
        shutil.copy("/bin/true", work / tool)
    host_q = {t: mark() for t in ("nc", "apk", "scp", "wget", "kubectl")}
    for tool, q in host_q.items():          # the same tools on the host: not in a container
        run(str(work / tool), q)
    cases = [
        ("Terminal shell in container", m["N"], m["P"]),
        ("Launch Privileged Container", m["P"], m["N"]),
        ("Launch Excessively Capable Container", m["T"], m["N"]),
        ("Launch Sensitive Mount Container", m["P"], m["N"]),
        ("Exfiltrating Artifacts via Kubernetes Control Plane", m["T"], m["tar_q"]),
        ("Netcat Remote Code Execution in Container", m["nc_e"], m["nc_q"]),
        ("Launch Suspicious Network Tool in Container", m["nc_q"], host_q["nc"]),
        ("Network Tool Executed During NPM Package Install", m["npm"], m["nc_q"]),
        ("Packet socket created in container", m["packet"], m["packet_q"]),
        ("Redirect STDOUT/STDIN to Network Connection in Container", m["dup"], m["dup_q"]),
        ("Contact K8S API Server From Container", m["k8s"], m["k8s_q"]),
        ("Launch Package Management Process in Container", m["apk"], host_q["apk"]),
        ("Launch Remote File Copy Tools in Container", m["scp"], host_q["scp"]),
        ("Launch Ingress Remote File Copy Tools in Container", m["wget"], host_q["wget"]),
        ("Kubernetes Client Tool Launched in Container", m["kubectl"], host_q["kubectl"]),
        ("Decoding Payload in Container", m["b64"], m["b64_q"]),
        ("Read environment variable from /proc files", m["environ"], m["environ_q"]),
        ("Container Access to Host Sensitive Paths", m["hostfs"], m["hostfs_q"]),
        ("Change namespace privileges via unshare", m["unshare"], m["unshare_q"]),
        ("Debugfs Launched in Privileged Container", m["debugfs"], m["debugfs_q"]),
        ("Detect release_agent File Container Escapes", m["ra"], m["ra_q"]),
        ("Mount Launched in Privileged Container", m["mount"], m["mount_q"]),
        ("Drop and execute new binary in container", m["drop"], m["drop_q"]),
        ("Contact EC2 Instance Metadata Service From Container", m["meta"], m["meta_q"]),
        ("Contact cloud metadata service from container", m["meta"], m["meta_q"]),
    ]
    check(agent, cases)


def test_host_network_rules_fire(ctx):
    """System procs network activity (a shell connecting out) and Unexpected UDP
    Traffic, to the node's own address (not loopback, which the rules leave
    out); Disallowed SSH Connection Non Standard Port when the node has a route out."""
    agent, _m = ctx
    ip = host_ip()
    if ip is None:
        pytest.skip("no non-loopback IPv4 address")
    srv = socket.socket()
    srv.bind((ip, 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    clients = []
    try:
        m, q = mark(), mark()
        bash = shutil.which("bash") or "/bin/bash"
        run(bash, "-c", f"exec 3<>/dev/tcp/{ip}/{port}; true {m}")
        run(PY, "-c", f"import socket; socket.create_connection(('{ip}', {port}))", q)
        cases = [("System procs network activity", m, q)]
        m, q = mark(), mark()
        udp = "import socket, sys; socket.socket(2, 2).connect((sys.argv[1], int(sys.argv[2])))"
        run(PY, "-c", udp, ip, "9999", m)
        run(PY, "-c", udp, ip, "53", q)
        cases.append(("Unexpected UDP Traffic", m, q))
        ssh = shutil.which("ssh")
        if ssh and outbound_in_progress():
            # an ssh client to a documentation address (TEST-NET-2) on a port Falco
            # calls non-standard for ssh: the connect is under way when the rule judges
            # it; look-alike: the same to loopback, which the rule leaves out
            m, q = mark(), mark()
            opts = ["-o", "ConnectTimeout=1", "-o", "BatchMode=yes", "-o",
                    "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-p", "4444"]
            clients = [subprocess.Popen([ssh, *opts, f"{x}@{ip}"], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                       for x, ip in ((m, TEST_NET), (q, "127.0.0.1"))]
            cases.append(("Disallowed SSH Connection Non Standard Port", m, q))
        check(agent, cases)
    finally:
        srv.close()
        for c in clients:
            c.kill()
            c.wait()
