"""Falco's own rules, unchanged, against the real kernel: per file one `vigil
run` agent (that file and the ones before it, `rule_matching: all` so every
rule that matches says so), and for each rule that can fire on this node a real
process doing the behaviour it describes plus a benign look-alike that must
stay quiet.  Each behaviour carries a unique marker that shows in the alert's
output (command line, file name or executable path).

What this node cannot do (load kernel modules) is replayed from a recorded
capture.  docs/FALCO.md lists the rules that cannot fire here and why.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from falco_files import INCUBATING, SANDBOX, STABLE, falco_files
from test_default_rules import AgentRun

ROOT = Path(__file__).resolve().parent.parent
VIGIL = str(Path(sys.executable).parent / "vigil")
CAPTURES = ROOT / "tests" / "data" / "captures"
PY = "/usr/bin/python3"          # the system python: copies of it run as "nginx", "sshd" ...

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the agent needs root")


def mark() -> str:
    return "vf" + uuid.uuid4().hex[:10]


class Cases(list):
    """The (rule, trigger marker, benign marker) cases check() reads."""

    def new(self, rule: str) -> tuple:
        """Fresh markers for a case of rule: (the trigger's, the benign look-alike's)."""
        m, q = mark(), mark()
        self.append((rule, m, q))
        return m, q


class FalcoAgent(AgentRun):
    """AgentRun with Falco's rules: the fence is a symlink to /etc/shadow
    (Create Symlink Over Sensitive Files), alerts are found by a marker in
    their output."""

    def fence(self) -> None:
        link = self.fence_dir / mark()
        os.symlink("/etc/shadow", link)
        try:
            self.wait_for_mark("Create Symlink Over Sensitive Files", link.name)
        finally:
            link.unlink()

    def marked(self, rule, m) -> list:
        return [a for a in self.alerts() if a["rule"] == rule and m in a["output"]]

    def wait_for_mark(self, rule, m, timeout=60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = self.marked(rule, m)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited:\n{self.err.read_text()}")
            if time.monotonic() >= deadline:
                seen = sorted({a["rule"] for a in self.alerts()})
                raise AssertionError(f"no alert {rule!r} marked {m}; rules seen: {seen}")
            time.sleep(0.05)


def start_agent(files, d: Path) -> FalcoAgent:
    cfg = d / "vigil.yaml"
    cfg.write_text("rule_matching: all\nrate_limit:\n  window: 0\n")
    out, err, store = d / "alerts.json", d / "agent.err", d / "alerts.db"
    fence_dir = d / "fences"
    fence_dir.mkdir()
    args = [a for f in files for a in ("-r", str(f))]
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([VIGIL, "run", "-c", str(cfg), *args, "--output", "json",
                                 "--store", str(store)], stdout=fo, stderr=fe, cwd=str(d))
    deadline = time.monotonic() + 60
    while b"running with" not in err.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"agent did not start:\n{err.read_text()}")
        time.sleep(0.05)
    return FalcoAgent(proc, out, err, store, fence_dir)


def stop_agent(a: FalcoAgent) -> None:
    a.proc.send_signal(signal.SIGTERM)
    try:
        a.proc.wait(15)
    except subprocess.TimeoutExpired:
        a.proc.kill()
        a.proc.wait()


def sh(cmd: str, **kw) -> None:
    subprocess.run(["sh", "-c", cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=30, **kw)


def run(*argv, **kw) -> None:
    subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
                   **kw)


def py(code: str, *args) -> None:
    """python3 runs `code` (its parent is python, not a shell)."""
    run(PY, "-c", code, *args)


def shell_from(program: str, m: str, q: str) -> None:
    """program runs a shell (marked m); python runs the same (marked q)."""
    run(program, "-c", f"import os; os.system('true {m}')")
    py(f"import os; os.system('true {q}')")


def missing_dir(path: str, made: list, mode: int = 0o777) -> None:
    """Make the directory path if the node lacks it, noted in made (the test
    removes those at its end)."""
    p = Path(path)
    if not p.exists():
        p.mkdir(mode=mode)
        made.append(p)


def spawn(*argv) -> None:
    """Run argv as a child of python (not of a shell)."""
    py("import subprocess, sys; subprocess.run(sys.argv[1:])", *argv)


@pytest.fixture
def work(tmp_path_factory):
    d = Path("/tmp") / ("vigil-falco-" + uuid.uuid4().hex[:8])
    d.mkdir()
    for name, src in (("nginx", PY), ("sshd", PY), ("postgres", PY), ("xmrig", "/bin/true"),
                      ("xmr", "/bin/true"), ("nmap", "/bin/true"), ("nmapx", "/bin/true"),
                      ("sudo", "/bin/true"), ("nc", "/bin/true"), ("curl", "/bin/true")):
        shutil.copy(src, d / name)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def check(agent: FalcoAgent, cases, timeout: float = 120.0) -> None:
    """cases: (rule, trigger marker, benign marker), after the actions ran.
    The agent may lag behind on a busy machine (Falco's rules want every
    open): all triggers share one deadline."""
    deadline = time.monotonic() + timeout
    missing = list(cases)
    while missing and time.monotonic() < deadline and agent.proc.poll() is None:
        missing = [c for c in missing if not agent.marked(c[0], c[1])]
        time.sleep(0.2)
    problems = [f"{rule}: no alert marked {hit}" for rule, hit, _ in missing]
    try:
        agent.fence()
    except AssertionError as e:
        problems.append(f"{e}\nagent log: {agent.err.read_text()[-3000:]}")
    for rule, hit, quiet in cases:
        if quiet and agent.marked(rule, quiet):
            problems.append(f"{rule}: the benign look-alike {quiet} alerted")
    if problems:
        problems.append("rules seen: " + ", ".join(sorted({a["rule"] for a in agent.alerts()})))
    assert not problems, "\n".join(problems)
    if os.environ.get("VIGIL_TEST_VERBOSE"):
        for rule, hit, _ in cases:
            print("FIRED", rule, agent.marked(rule, hit)[0]["output"][:160])


# --------------------------------------------------------------- stable

def test_stable_rules_fire(work, tmp_path):
    agent = start_agent(falco_files(STABLE), tmp_path)
    try:
        cases = Cases()
        m, q = cases.new("Directory traversal monitored file read")
        spawn("cat", "/tmp/../../etc/passwd", f"/nonexistent/{m}")
        spawn("cat", "/etc/passwd", f"/nonexistent/{q}")

        m, q = cases.new("Read sensitive file untrusted")
        spawn("cat", "/etc/shadow", f"/nonexistent/{m}")
        spawn("cat", "/etc/hostname", f"/nonexistent/{q}")

        m, q = cases.new("Read sensitive file trusted after startup")
        old = subprocess.Popen([str(work / "nginx"), "-c",
                                "import time; time.sleep(6); open('/etc/shadow').read()", m])
        run(str(work / "nginx"), "-c", "open('/etc/shadow').read()", q)

        m, q = cases.new("Run shell untrusted")
        shell_from(str(work / "nginx"), m, q)

        m, q = cases.new("System user interactive")
        setuid_sh = "import os, sys; os.setuid(65534); os.system('true ' + sys.argv[1])"
        run(str(work / "sshd"), "-c", setuid_sh, m)
        py(setuid_sh, q)

        m, q = cases.new("Search Private Keys or Passwords")
        run("grep", "-r", "BEGIN RSA PRIVATE", str(work / m))
        run("grep", "-r", "BEGIN CERTIFICATE", str(work / q))

        m, q = cases.new("Clear Log Activities")
        py("import sys; open(sys.argv[1], 'w')", f"/var/log/{m}.log")
        py("import sys; open(sys.argv[1], 'a')", f"/var/log/{q}.log")
        for x in (m, q):
            Path(f"/var/log/{x}.log").unlink(missing_ok=True)

        m, q = cases.new("Remove Bulk Data from Disk")
        for x in (m, q):
            (work / x).write_text("x")
        run("shred", "-u", str(work / m))
        run("rm", str(work / q))

        m, q = cases.new("Create Symlink Over Sensitive Files")
        run("ln", "-s", "/etc/shadow", str(work / m))
        run("ln", "-s", "/etc/hostname", str(work / q))

        m, q = cases.new("Create Hardlink Over Sensitive Files")
        run("ln", "/etc/shadow", str(work / m))
        run("ln", "/etc/hostname", str(work / q))
        for x in (m, q):
            (work / x).unlink(missing_ok=True)

        m, q = cases.new("PTRACE attached to process")
        attach = ("import ctypes, os, subprocess, sys, time\n"
                  "c = subprocess.Popen(['sleep', '5'])\ntime.sleep(0.2)\n"
                  "libc = ctypes.CDLL(None)\n"
                  "if sys.argv[2] == 'attach': libc.ptrace(16, c.pid, 0, 0); time.sleep(0.1)\n"
                  "c.kill(); c.wait()\n")
        py(attach, m, "attach")
        py(attach, q, "look")

        m, q = cases.new("PTRACE anti-debug attempt")
        py("import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)", m)
        py("import ctypes; ctypes.CDLL(None).getpid()", q)

        m, q = cases.new("Find AWS Credentials")
        run("find", str(work), "-path", f"{work}/{m}/.aws/credentials")
        run("find", str(work), "-name", q)

        m, q = cases.new("Execution from /dev/shm")
        shm = Path("/dev/shm") / m
        shutil.copy("/bin/true", shm)
        shutil.copy("/bin/true", work / q)
        try:
            run(str(shm))
        finally:
            shm.unlink()
        run(str(work / q))

        m, q = cases.new("Fileless execution via memfd_create")
        memfd = ("import os, sys\nf = os.memfd_create('x')\n"
                 "os.write(f, open('/bin/true', 'rb').read())\n"
                 "os.execv(f'/proc/self/fd/{f}', ['x', sys.argv[1]])\n")
        py(memfd, m)
        py("import os, sys; os.execv('/bin/true', ['x', sys.argv[1]])", q)

        old.wait(20)
        check(agent, cases)
    finally:
        stop_agent(agent)


def test_stable_module_injection_replayed():
    """No module support on this kernel: a recorded capture stands in.  The
    container process with CAP_SYS_MODULE alerts; one without it does not."""
    files = falco_files(STABLE)
    r = subprocess.run([VIGIL, "replay", str(CAPTURES / "falco_module_injection.jsonl"),
                        "-r", str(files[0]), "--output", "json"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    inj = [a for a in alerts if a["rule"] == "Linux Kernel Module Injection Detected"]
    assert len(inj) == 1, alerts
    assert "/tmp/vigil-test-rootkit.ko" in inj[0]["output"]
    assert not any("vigil-test-tame" in a["output"] for a in alerts)


# --------------------------------------------------------------- incubating

def test_incubating_rules_fire(work, tmp_path):
    agent = start_agent(falco_files(INCUBATING), tmp_path)
    made = []
    try:
        cases = Cases()
        m, q = cases.new("Modify Shell Configuration File")
        py("import sys; open('/root/.bashrc', 'a')", m)
        py("import sys; open('/root/.bashrc').read()", q)

        m, q = cases.new("Schedule Cron Jobs")
        run("touch", f"/etc/cron.d/{m}")
        Path(f"/etc/cron.d/{m}").unlink(missing_ok=True)
        run("cat", "/etc/crontab", q)

        m, q = cases.new("Read ssh information")
        missing_dir("/root/.ssh", made, mode=0o700)
        run("ls", "/root/.ssh", m)
        run("ls", "/root", q)

        m, q = cases.new("DB program spawned process")
        shell_from(str(work / "postgres"), m, q)

        m, q = cases.new("Change thread namespace")
        py("import ctypes, os; ctypes.CDLL(None).setns(os.open('/proc/self/ns/net', 0), 0)", m)
        run("nsenter", "-t", "1", "-n", "true", q)       # nsenter on the host is expected

        m, q = cases.new("Non sudo setuid")
        py("import os; os.setuid(65534); os.setuid(0)", m)
        py("import os; os.setuid(0)", q)

        m, q = cases.new("User mgmt binaries")
        run("usermod", "-h", m)
        run("useradd", "-D", q)

        m, q = cases.new("Create files below dev")
        py("import sys; open(sys.argv[1], 'w')", f"/dev/{m}")
        Path(f"/dev/{m}").unlink(missing_ok=True)
        py("import sys; open('/dev/null', 'w')", q)

        m, q = cases.new("Delete or rename shell history")
        (work / f"{m}_bash_history").write_text("x")
        (work / f"{q}_history.txt").write_text("x")
        run("rm", str(work / f"{m}_bash_history"))
        run("rm", str(work / f"{q}_history.txt"))

        m, q = cases.new("Set Setuid or Setgid bit")
        for x in (m, q):
            (work / x).write_text("x")
        run("chmod", "u+s", str(work / m))
        run("chmod", "755", str(work / q))

        m, q = cases.new("Launch Suspicious Network Tool on Host")
        run(str(work / "nmap"), m)
        run(str(work / "nmapx"), q)

        m, q = cases.new("BPF Program Not Profiled")
        py("import ctypes; ctypes.CDLL(None).syscall(321, 5, 0, 0)", m)     # BPF_PROG_LOAD
        py("import ctypes; ctypes.CDLL(None).syscall(321, 0, 0, 0)", q)     # BPF_MAP_CREATE

        m, q = cases.new("Backdoored library loaded into SSHD (CVE-2024-3094)")
        lib = "import sys; open(sys.argv[2], 'w+')"
        run(str(work / "sshd"), "-c", lib, m, str(work / "liblzma.so.5.6.0"))
        py(lib, q, str(work / "liblzma.so.5.6.0"))

        m, q = cases.new("Adding ssh keys to authorized_keys")
        keys = Path("/root/.ssh/authorized_keys")
        had_keys = keys.exists()
        py("open('/root/.ssh/authorized_keys', 'a')", m)
        if not had_keys:
            keys.unlink(missing_ok=True)
        py("import os; os.path.exists('/root/.ssh/authorized_keys')", q)

        # proc.env: the environment the kernel sent with the exec
        proxy, q = cases.new("Program run with disallowed http proxy env")
        base = {"PATH": "/usr/bin:/bin"}
        run(str(work / "curl"), proxy, env={**base, "HTTP_PROXY": "http://192.0.2.9:3128"})
        run(str(work / "curl"), q, env={**base, "NO_PROXY": "localhost"})

        m, q = cases.new("Potential Local Privilege Escalation via Environment Variables Misuse")
        run("/bin/true", m, env={**base, "GLIBC_TUNABLES": "glibc.malloc.check=0"})
        run("/bin/true", q, env={**base, "GLIBC_TUNING": "1"})

        check(agent, cases)
        env_alert = agent.marked("Program run with disallowed http proxy env", proxy)[0]
        assert "env=PATH=/usr/bin:/bin HTTP_PROXY=http://192.0.2.9:3128 " in env_alert["output"]
    finally:
        stop_agent(agent)
        for p in made:
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------- sandbox

def test_sandbox_rules_fire(work, tmp_path):
    agent = start_agent(falco_files(SANDBOX), tmp_path)
    made = []
    try:
        cases = Cases()
        for rule, where in (("Write below binary dir", "/usr/bin"),
                            ("Write below monitored dir", "/usr/local/bin"),
                            ("Write below etc", "/etc"), ("Write below root", "/root")):
            m, q = cases.new(rule)
            run("touch", f"{where}/{m}")
            Path(f"{where}/{m}").unlink(missing_ok=True)
            run("touch", str(work / q))

        m, q = cases.new("Modify binary dirs")
        run("touch", f"/usr/bin/{m}a")
        run("mv", f"/usr/bin/{m}a", f"/usr/bin/{m}b")
        Path(f"/usr/bin/{m}b").unlink(missing_ok=True)
        (work / f"{q}a").write_text("x")
        run("mv", str(work / f"{q}a"), str(work / f"{q}b"))

        m, q = cases.new("Mkdir binary dirs")
        run("mkdir", f"/usr/bin/{m}")
        run("rmdir", f"/usr/bin/{m}")
        run("mkdir", str(work / q))

        m, q = cases.new("Update Package Repository")
        missing_dir("/etc/yum.repos.d", made)
        run("touch", f"/etc/yum.repos.d/{m}.repo")
        Path(f"/etc/yum.repos.d/{m}.repo").unlink(missing_ok=True)
        run("cat", "/etc/hostname", q)

        m, q = cases.new("Write below rpm database")
        missing_dir("/var/lib/rpm", made)
        run("touch", f"/var/lib/rpm/{m}")
        Path(f"/var/lib/rpm/{m}").unlink(missing_ok=True)
        run("touch", str(work / q))

        m, q = cases.new("Basic Interactive Reconnaissance")
        # id typed at a pty's shell prompt leads its process group; inside sh -c it does not.
        # `exec` so that id is the group leader whatever $SHELL script(1) starts (dash forks
        # even for a single command; CI runs with SHELL unset, i.e. /bin/sh)
        run("script", "-qc", f"exec id {m}", "/dev/null")
        run("script", "-qc", f"sh -c 'id {q}; true'", "/dev/null")

        m, q = cases.new("Detect crypto miners using the Stratum protocol")
        sh(f"echo stratum+tcp://pool:3333 {m} >/dev/null")
        sh(f"echo tcp://pool:3333 {q} >/dev/null")

        m, q = cases.new("Known Cryptominer Process Executed")
        run(str(work / "xmrig"), m)
        run(str(work / "xmr"), q)

        m, q = cases.new("Sudo Potential Privilege Escalation")
        run(str(work / "sudo"), "-s", m, "x\\")
        run(str(work / "sudo"), "-s", q, "x")

        m, q = cases.new("Polkit Local Privilege Escalation Vulnerability (CVE-2021-4034)")
        for x in (m, q):
            (work / x).mkdir()
            shutil.copy("/bin/true", work / x / "pkexec")
        run(str(work / m / "pkexec"))
        run(str(work / q / "pkexec"), "--version")

        m, q = cases.new("Unprivileged Delegation of Page Faults Handling to a Userspace Process")
        uffd = "import ctypes; ctypes.CDLL(None).syscall(323, 0)"
        run("setpriv", "--reuid", "65534", "--clear-groups", PY, "-c", uffd, m)
        py(uffd, q)

        m, q = cases.new("Netcat/Socat Remote Code Execution on Host")
        run(str(work / "nc"), "-e", "/bin/sh", m)
        run(str(work / "nc"), "-z", q)

        web = "import subprocess, sys; subprocess.run(sys.argv[1:])"
        m, q = cases.new("Web Server Spawned Shell")
        run(str(work / "nginx"), "-c", web, "sh", "-c", f"true {m}")
        run(str(work / "nginx"), "-c", web, "sh", "-c", f"/usr/bin/true {q}")

        m, q = cases.new("Web Server Spawned Suspicious Child Process")
        run(str(work / "nginx"), "-c", web, "id", m)
        run(str(work / "nginx"), "-c", web, "true", q)

        m, q = cases.new("Reverse Shell from Web Server")
        run(str(work / "nginx"), "-c", web, "bash", "-i", "-c", f"true {m}")
        run(str(work / "nginx"), "-c", web, "bash", "-c", f"true {q}")

        check(agent, cases)
    finally:
        stop_agent(agent)
        for p in made:
            shutil.rmtree(p, ignore_errors=True)
