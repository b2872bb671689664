"""Evaluation: operators, fields, output formatting, evttype indexing, kinds and path prefixes."""
import os
import textwrap

import pytest

from vigil.state.containers.model import ContainerInfo
from vigil.events import Event, Kind
from vigil.state.proctable import ProcessTable, ProcInfo
from vigil.rules import RuleEngine
from vigil.rules import fields as F

T0 = 1_700_000_000_123_456_789
DATA = os.path.join(os.path.dirname(__file__), "data", "rules")


@pytest.fixture
def pt():
    t = ProcessTable()
    t.put(ProcInfo(1, 0, "systemd", "/usr/lib/systemd/systemd", ["/sbin/init", "splash"]))
    t.put(ProcInfo(10, 1, "containerd-shim", "/usr/bin/containerd-shim", ["containerd-shim", "-id", "x"]))
    t.put(ProcInfo(100, 10, "bash", "/bin/bash", ["bash", "-i"], tty="pts0"))
    t.put(ProcInfo(200, 100, "cat", "/usr/bin/cat", ["cat", "/etc/shadow"], cwd="/root", loginuid=1000))
    return t


WEB = ContainerInfo(id="0123456789abcdef0123", runtime="containerd", name="web",
                    image="docker.io/library/nginx:1.25", image_repository="docker.io/library/nginx",
                    image_tag="1.25", image_digest="sha256:abc", privileged=False, pod_name="web-0",
                    pod_uid="uid-1", namespace="prod", k8s_container_name="nginx",
                    labels={"app": "web", "tier": "fe"})


def mk(kind, pt=None, pid=200, container=None, **kw):
    """An event of pid; a comm= given stands for a process exec'd under that
    name (proc.name is the exec-time name, kept in the process table)."""
    d = dict(time=T0, pid=pid, tid=pid, ppid=100 if pid == 200 else 1, uid=0, gid=0, comm="cat")
    d.update(kw)
    ev = Event(kind, **d)
    if pt is not None:
        ev.proc = pt.get(pid)
        if ev.proc is not None and "comm" in kw and ev.proc.comm != kw["comm"]:
            ev.proc = ProcInfo.from_dict(dict(ev.proc.to_dict(), comm=kw["comm"]))
    ev.container = container
    return ev


def engine(cond, output="o", pt=None, **kw):
    text = textwrap.dedent(f"""
        - rule: R
          desc: d
          condition: {cond!r}
          output: {output!r}
          priority: WARNING
        """)
    return RuleEngine.from_text(text, "t.yaml", proctable=pt, **kw)


def hit(cond, ev, pt=None):
    return bool(engine(cond, pt=pt).evaluate(ev))


def value(field, ev, pt=None):
    eng = engine("evt.type exists", output=f"%{field}", pt=pt)
    eng.rules[0].kinds  # noqa
    text, fields = eng.format_output("R", ev)
    return fields[field], text


OPEN = dict(syscall="openat", path="/etc/shadow", flags=0, ret=3)


# ---------------------------------------------------------------- operators

@pytest.mark.parametrize("cond, expect", [
    ("fd.name = /etc/shadow", True),
    ("fd.name == /etc/shadow", True),
    ("fd.name != /etc/shadow", False),
    ("fd.name != /etc/passwd", True),
    ("fd.name contains shad", True),
    ("fd.name icontains SHAD", True),
    ("fd.name bcontains 736861", True),
    ("fd.name bstartswith 2f657463", True),
    ("fd.name bstartswith 2f657464", False),
    ("fd.name startswith /etc/", True),
    ("fd.name endswith dow", True),
    ("fd.name glob '/etc/*ad*'", True),
    ("fd.name glob '/etc/?hadow'", True),
    ("fd.name glob '/var/*'", False),
    ("fd.name iglob '/ETC/*'", True),
    ("fd.name pmatch (/etc)", True),
    ("fd.name pmatch (/et)", False),
    ("fd.name pmatch (/usr, /etc/shadow)", True),
    ("fd.name pmatch (/e*)", True),
    ("fd.name in (/etc/passwd, /etc/shadow)", True),
    ("fd.name in (/etc/passwd)", False),
    ("fd.name intersects (/etc/shadow)", True),
    ("fd.name regex '/etc/s.*'", True),
    ("fd.name regex 'etc'", False),
    ("fd.num < 4", True),
    ("fd.num <= 3", True),
    ("fd.num > 3", False),
    ("fd.num >= 3", True),
    ("fd.num = 3", True),
    ("fd.num in (1, 2, 3)", True),
    ("fd.name exists", True),
    ("proc.pname exists", False),
    ("proc.pname != bash", False),
    ("not proc.pname = bash", True),
    ("tolower(proc.name) = cat", True),
    ("toupper(proc.name) = CAT", True),
    ("basename(fd.name) = shadow", True),
    ("len(fd.name) = 11", True),
    ("len(fd.name) > 20", False),
    ("fd.filename = val(fd.filename)", True),
    ("fd.name = val(proc.name)", False),
    ("proc.pid > val(proc.ppid)", True),
    ("evt.is_open_read = true and evt.is_open_write = false", True),
    ("evt.failed = false and evt.res = SUCCESS and evt.rawres = 3", True),
])
def test_operators(cond, expect):
    ev = mk(Kind.OPEN, **OPEN)
    assert hit(cond, ev) is expect, cond


def test_b64_transformer():
    ev = mk(Kind.EXEC, comm="sh", exe="/bin/sh", args=["sh", "Y2F0IC9ldGMvc2hhZG93"])
    assert hit("b64(proc.args) contains /etc/shadow", ev)


def test_missing_values_never_match_comparisons():
    ev = mk(Kind.OPEN, **OPEN)  # no proc, no proctable
    for cond in ("proc.pname = x", "proc.pname != x", "proc.pname contains x",
                 "proc.aname[3] in (a, b)", "proc.apid[1] > 0", "fd.sip = 1.2.3.4"):
        assert not hit(cond, ev), cond


# ---------------------------------------------------------------- fields

def test_process_fields(pt):
    ev = mk(Kind.OPEN, pt=pt, **OPEN)
    checks = {
        "proc.name": "cat", "proc.exe": "cat", "proc.exepath": "/usr/bin/cat",
        "proc.cmdline": "cat /etc/shadow", "proc.args": "/etc/shadow", "proc.pid": 200,
        "proc.ppid": 100, "proc.pname": "bash", "proc.pcmdline": "bash -i", "proc.pexe": "bash",
        "proc.pexepath": "/bin/bash", "proc.aname[0]": "cat", "proc.aname[1]": "bash",
        "proc.aname[2]": "containerd-shim", "proc.aname[3]": "systemd", "proc.aname[4]": None,
        "proc.apid[2]": 10, "proc.aexepath[3]": "/usr/lib/systemd/systemd", "proc.aexe[3]": "/sbin/init",
        "proc.acmdline[1]": "bash -i", "proc.cwd": "/root/", "proc.tty": 0, "thread.tid": 200,
        "user.uid": 0, "user.name": "root", "user.loginuid": 1000, "group.gid": 0, "group.name": "root",
        "proc.env": None, "proc.vpid": None, "proc.is_exe_from_memfd": False,
        "proc.is_exe_upper_layer": False, "proc.loginshellid": 100, "proc.cmdnargs": 1,
    }
    for f, want in checks.items():
        assert value(f, ev, pt)[0] == want, f


def test_ancestor_any_match(pt):
    ev = mk(Kind.OPEN, pt=pt, **OPEN)
    assert hit("proc.aname = systemd", ev, pt)
    assert hit("proc.aname in (containerd-shim)", ev, pt)
    assert not hit("proc.aname = cat", ev, pt)  # ancestors exclude the process itself
    assert hit("proc.aname != nope", ev, pt)
    assert not hit("proc.aname != bash", ev, pt)
    assert hit("proc.apid = 1", ev, pt)


def test_exec_fields_from_event(pt):
    ev = mk(Kind.EXEC, pt=pt, pid=300, ppid=100, comm="python3", exe="/usr/bin/python3.11",
            args=["python3", "-c", "print(1)"], cwd="/tmp", tty="pts3", loginuid=-1)
    assert value("proc.exe", ev, pt)[0] == "python3"
    assert value("proc.exepath", ev, pt)[0] == "/usr/bin/python3.11"
    assert value("proc.cmdline", ev, pt)[0] == "python3 -c print(1)"
    assert value("proc.pname", ev, pt)[0] == "bash"
    assert value("proc.tty", ev, pt)[0] == 34819
    assert value("user.loginuid", ev, pt)[0] == -1
    assert value("evt.type", ev)[0] == "execve"
    assert hit("evt.type = execve and evt.dir = < and proc.tty != 0", ev, pt)
    assert hit("proc.is_exe_from_memfd = true", mk(Kind.EXEC, exe="/memfd:x (deleted)", args=["x"]))


UPPER_LAYER_RULE = """
- rule: R
  desc: d
  condition: evt.type=execve and proc.is_exe_upper_layer=true
  output: o
  priority: INFO
"""


def test_upper_layer_hook():
    eng = RuleEngine.from_text(
        UPPER_LAYER_RULE, written_paths=lambda cid, path: (cid, path) == (WEB.id, "/tmp/dropper"))
    assert eng.evaluate(mk(Kind.EXEC, exe="/tmp/dropper", args=["dropper"], container=WEB))
    assert not eng.evaluate(mk(Kind.EXEC, exe="/bin/ls", args=["ls"], container=WEB))
    eng.written_paths = {"/bin/ls"}
    assert eng.evaluate(mk(Kind.EXEC, exe="/bin/ls", args=["ls"], container=WEB))


def test_upper_layer_from_exe_ctime():
    eng = RuleEngine.from_text(UPPER_LAYER_RULE)
    c = ContainerInfo(id="a" * 64, start_time=1_700_000_000 * 10**9)
    assert eng.evaluate(mk(Kind.EXEC, exe="/tmp/x", args=["x"], exe_ctime=1_700_000_100, container=c))
    assert not eng.evaluate(mk(Kind.EXEC, exe="/bin/ls", args=["ls"], exe_ctime=1_600_000_000, container=c))
    assert not eng.evaluate(mk(Kind.EXEC, exe="/tmp/x", args=["x"], exe_ctime=1_700_000_100))


def test_open_flag_fields():
    ev = mk(Kind.OPEN, syscall="openat", path="/tmp/x", flags=0o1101 | 0o2000000, mode=0o755, ret=4)
    assert value("evt.arg.flags", ev)[0] == "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC"
    assert value("evt.rawarg.flags", ev)[0] == 0o2001101
    assert value("evt.arg.mode", ev)[0] == "0755"
    for f, want in [("evt.is_open_write", True), ("evt.is_open_read", False),
                    ("evt.is_open_create", True), ("evt.is_open_exec", True),
                    ("fd.typechar", "f"), ("fd.type", "file"), ("fd.directory", "/tmp"),
                    ("fd.filename", "x"), ("fd.num", 4), ("evt.category", "file")]:
        assert value(f, ev)[0] == want, f
    assert hit("evt.arg.flags contains O_TRUNC", ev)
    failed = mk(Kind.OPEN, syscall="open", path="/nope", flags=0, ret=-2)
    assert value("evt.res", failed)[0] == "ENOENT"
    assert value("evt.failed", failed)[0] is True
    assert value("evt.type", failed)[0] == "open"
    assert not hit("evt.type=openat", failed)
    creat = mk(Kind.OPEN, syscall="creat", path="/tmp/y", flags=0, ret=5, mode=0o644)
    assert value("evt.is_open_write", creat)[0] is True
    d = mk(Kind.OPEN, syscall="openat", path="/etc", flags=0o200000, ret=3)
    assert value("fd.typechar", d)[0] == "d"


def test_network_fields():
    conn = mk(Kind.CONNECT, syscall="connect", family="AF_INET", proto="tcp", saddr="10.0.0.5",
              sport=43210, daddr="93.184.216.34", dport=443, ret=0, fd=5)
    want = {"fd.name": "10.0.0.5:43210->93.184.216.34:443", "fd.cip": "10.0.0.5", "fd.cport": 43210,
            "fd.sip": "93.184.216.34", "fd.sport": 443, "fd.lip": "10.0.0.5", "fd.rip": "93.184.216.34",
            "fd.lport": 43210, "fd.rport": 443, "fd.l4proto": "tcp", "fd.typechar": "4",
            "fd.type": "ipv4", "fd.sockfamily": "ip", "fd.num": 5, "evt.type": "connect"}
    for f, w in want.items():
        assert value(f, conn)[0] == w, f
    assert hit("fd.snet = 93.184.0.0/16", conn)
    assert hit("fd.net = 10.0.0.0/8", conn)
    assert not hit("fd.cnet = 192.168.0.0/16", conn)
    assert hit("fd.sip in (1.1.1.1, 93.184.216.34)", conn)
    assert hit("not fd.snet in (127.0.0.0/8, 10.0.0.0/8)", conn)
    assert hit("fd.port = 443 and fd.ip = 10.0.0.5", conn)

    acc = mk(Kind.ACCEPT, syscall="accept4", family="AF_INET6", proto="tcp", saddr="::1", sport=80,
             daddr="::1", dport=5555, ret=7)
    assert value("fd.name", acc)[0] == "::1:5555->::1:80"
    assert value("fd.sport", acc)[0] == 80 and value("fd.cport", acc)[0] == 5555
    assert value("fd.typechar", acc)[0] == "6"
    assert value("fd.num", acc)[0] == 7
    assert hit("evt.type in (accept, accept4) and fd.is_server = true", acc)
    assert hit("fd.sip = 0:0:0:0:0:0:0:1", acc)

    unix = mk(Kind.CONNECT, family="AF_UNIX", daddr="/var/run/docker.sock", ret=0)
    assert value("fd.name", unix)[0] == "/var/run/docker.sock"
    assert value("fd.typechar", unix)[0] == "u"
    assert value("fd.sip", unix)[0] is None

    dns = mk(Kind.DNS, syscall="sendto", family="AF_INET", proto="udp", saddr="10.0.0.5", sport=5353,
             daddr="10.96.0.10", dport=53, query="evil.example.com", qtype="A")
    assert hit("evt.type in (sendto, sendmsg) and fd.sport = 53 and fd.l4proto = udp", dns)
    assert value("dns.query", dns)[0] == "evil.example.com"

    dup = mk(Kind.DUP, syscall="dup2", fd=3, newfd=1, fd_type="ipv4", family="AF_INET", saddr="10.0.0.5",
             sport=1, daddr="6.6.6.6", dport=4444)
    assert hit("evt.type in (dup, dup2, dup3) and evt.rawres in (0, 1, 2) and fd.type in (ipv4, ipv6)", dup)


def test_fs_and_misc_fields():
    ren = mk(Kind.RENAME, syscall="renameat2", path="/tmp/a", path2="/usr/bin/a", ret=0)
    assert value("fs.path.source", ren)[0] == "/tmp/a"
    assert value("fs.path.target", ren)[0] == "/usr/bin/a"
    assert value("fs.path.name", ren)[0] is None
    assert value("evt.type", ren)[0] == "renameat2"
    sym = mk(Kind.SYMLINK, syscall="symlinkat", path="/etc/shadow", path2="/tmp/s", ret=0)
    assert hit("evt.type in (symlink, symlinkat) and fs.path.source = /etc/shadow", sym)
    assert value("evt.arg.target", sym)[0] == "/etc/shadow"
    assert value("evt.arg.linkpath", sym)[0] == "/tmp/s"
    unl = mk(Kind.UNLINK, syscall="unlinkat", path="/var/log/auth.log", ret=0)
    assert hit("evt.type in (unlink, unlinkat) and fs.path.name startswith /var/log", unl)
    pt_ = mk(Kind.PTRACE, request=16, target_pid=1234, ret=0)
    assert value("evt.arg.request", pt_)[0] == "PTRACE_ATTACH"
    assert hit("evt.type=ptrace and evt.dir=> and evt.arg.request contains PTRACE_ATTACH", pt_)
    assert hit("evt.type=ptrace and evt.dir=<", pt_)
    mod = mk(Kind.MODULE, syscall="finit_module", ret=0)
    assert hit("evt.type in (init_module, finit_module) and evt.dir=<", mod)
    assert not hit("evt.type in (init_module, finit_module) and evt.dir=>", mod)
    su = mk(Kind.SETUID, new_uid=0, ret=0, uid=1000)
    assert hit("evt.type=setuid and evt.arg.uid = 0 and user.uid != 0", su)
    ex = mk(Kind.EXIT, exit_code=1)
    assert value("evt.type", ex)[0] == "procexit"
    fk = mk(Kind.FORK, child_pid=999)
    assert value("evt.type", fk)[0] == "clone"
    mfd = mk(Kind.MEMFD, path="payload", ret=3)
    assert hit("evt.type=memfd_create and evt.arg.name = payload", mfd)


def test_time_fields():
    ev = mk(Kind.OPEN, **OPEN)
    assert value("evt.rawtime", ev)[0] == T0
    assert value("evt.time.iso8601", ev)[0] == "2023-11-14T22:13:20.123456789Z"
    v, text = value("evt.time", ev)
    assert v == T0 and text.endswith(":13:20.123456789") and len(text) == 18
    assert value("evt.rawtime.s", ev)[0] == T0 // 10**9
    assert value("evt.dir", ev)[0] == "<"
    assert value("evt.hostname", ev)[0]


def test_container_and_k8s_fields():
    ev = mk(Kind.OPEN, container=WEB, **OPEN)
    want = {"container.id": "0123456789ab", "container.full_id": WEB.id, "container.name": "web",
            "container.image": "docker.io/library/nginx:1.25",
            "container.image.repository": "docker.io/library/nginx", "container.image.tag": "1.25",
            "container.image.digest": "sha256:abc", "container.privileged": False,
            "container.type": "containerd", "k8s.ns.name": "prod", "k8s.pod.name": "web-0",
            "k8s.pod.uid": "uid-1", "k8s.pod.label[app]": "web", "k8s.pod.label[nope]": None,
            "k8s.pod.labels": "app:web, tier:fe", "k8s.container.name": "nginx"}
    for f, w in want.items():
        assert value(f, ev)[0] == w, f
    host = mk(Kind.OPEN, **OPEN)
    assert value("container.id", host)[0] == "host"
    assert value("container.name", host)[0] == "host"
    assert value("container.image", host)[0] is None
    assert value("k8s.ns.name", host)[0] is None
    assert hit("container.id != host and k8s.pod.label[tier] = fe", ev)
    assert not hit("container.id != host", host)
    assert hit("container.privileged = false", ev)


# ---------------------------------------------------------------- output formatting

def test_output_formatting_and_na(pt):
    eng = engine("evt.type = openat",
                 output="File %fd.name opened by %proc.name (parent=%proc.pname gp=%proc.aname[2] "
                        "pod=%k8s.pod.name lower=%tolower(proc.name) up=%(toupper(proc.name)) "
                        "pct=100%% user=%user.name.)", pt=pt)
    ev = mk(Kind.OPEN, pt=pt, **OPEN)
    (a,) = eng.evaluate(ev)
    assert a.output == ("File /etc/shadow opened by cat (parent=bash gp=containerd-shim pod=<NA> "
                        "lower=cat up=CAT pct=100% user=root.)")
    assert a.output_fields == {"fd.name": "/etc/shadow", "proc.name": "cat", "proc.pname": "bash",
                               "proc.aname[2]": "containerd-shim", "k8s.pod.name": None,
                               "tolower(proc.name)": "cat", "toupper(proc.name)": "CAT",
                               "user.name": "root"}
    assert a.rule == "R" and a.priority == "warning" and a.time == T0 and a.event is ev
    j = a.to_falco_json()
    assert j["priority"] == "Warning" and j["output_fields"]["k8s.pod.name"] is None


def test_output_without_proctable_prints_na():
    eng = engine("evt.type = openat", output="%proc.pname %proc.aname[3] %container.image %evt.arg.request")
    (a,) = eng.evaluate(mk(Kind.OPEN, **OPEN))
    assert a.output == "<NA> <NA> <NA> <NA>"


def test_bool_rendering():
    eng = engine("evt.type = openat", output="%evt.is_open_read %evt.failed")
    (a,) = eng.evaluate(mk(Kind.OPEN, **OPEN))
    assert a.output == "true false"
    assert a.output_fields == {"evt.is_open_read": True, "evt.failed": False}


# ---------------------------------------------------------------- evttype indexing / kinds / prefixes

def kinds_of(cond):
    return {k.label for k in engine(cond).required_kinds()}


@pytest.mark.parametrize("cond, kinds", [
    ("evt.type = execve", {"exec"}),
    ("evt.type in (open, openat) and fd.name = x", {"open"}),
    ("evt.type = connect or evt.type = accept4", {"connect", "accept"}),
    ("evt.type in (open, connect) and evt.type = connect", {"connect"}),
    ("not evt.type = procexit and evt.type in (procexit, clone)", {"fork"}),
    ("evt.type = execve and evt.type = clone", set()),
    ("evt.type = execve and evt.dir = >", set()),
    ("evt.type = sendfile", set()),
    ("not (evt.type != openat)", {"open"}),
    # every kind but exit and those without Falco types (cgroup bookkeeping, failed execs,
    # the L7 chunks)
    ("evt.type != procexit and proc.name = x", set(F.KIND_TYPES) - {Kind.EXIT, Kind.CGROUP_MKDIR,
                                                                    Kind.CGROUP_RMDIR,
                                                                    Kind.EXECFAIL, Kind.L7}),
])
def test_required_kinds(cond, kinds):
    want = {k.label if isinstance(k, Kind) else k for k in kinds}
    assert kinds_of(cond) == want


def test_rules_only_see_their_kinds():
    eng = engine("evt.type = execve")
    assert eng.evaluate(mk(Kind.OPEN, **OPEN)) == []
    assert eng._matchers[Kind.OPEN] is None


@pytest.mark.parametrize("cond, prefixes", [
    ("evt.type = openat and fd.name startswith /etc/", ["/etc/"]),
    ("evt.type = openat and fd.name in (/etc/shadow, /etc/sudoers)", ["/etc/shadow", "/etc/sudoers"]),
    ("evt.type = openat and fd.directory = /root/.ssh", ["/root/.ssh/"]),
    ("evt.type = openat and fd.name pmatch (/etc, /usr/bin)", ["/etc", "/usr/bin"]),
    ("evt.type = openat and (fd.name startswith /etc or fd.name glob '/home/*/.ssh/*')", ["/etc", "/home/"]),
    ("evt.type = openat and fd.name startswith /etc and fd.name startswith /etc/ssh", ["/etc/ssh"]),
    ("evt.type = openat and fd.name endswith .key", None),
    ("evt.type = openat and not fd.name startswith /proc", None),
    ("evt.type = openat and (fd.name startswith /etc or proc.name = x)", None),
    ("(evt.type = openat and fd.name startswith /etc) or (evt.type = execve and proc.name = x)", ["/etc"]),
    ("evt.type = execve", []),
    ("proc.name = cat and fd.name startswith /var", ["/var"]),
    ("evt.type = openat and fd.name startswith /", None),
])
def test_open_path_prefixes(cond, prefixes):
    assert engine(cond).open_path_prefixes() == prefixes


def test_open_prefixes_union_over_rules():
    eng = RuleEngine.from_text("""
- rule: A
  desc: d
  condition: evt.type=openat and fd.name startswith /etc
  output: o
  priority: INFO
- rule: B
  desc: d
  condition: evt.type=openat and fd.name startswith /etc/ssh
  output: o
  priority: INFO
- rule: C
  desc: d
  condition: evt.type=openat and fd.directory in (/root/.aws, /var/run/secrets)
  output: o
  priority: INFO
""")
    assert eng.open_path_prefixes() == ["/etc", "/root/.aws/", "/var/run/secrets/"]


def test_broken_extractor_does_not_break_other_rules():
    eng = RuleEngine.from_text("""
- rule: Bad
  desc: d
  condition: evt.type=openat and proc.pid > val(fd.name)
  output: o
  priority: INFO
- rule: Good
  desc: d
  condition: evt.type=openat
  output: o
  priority: INFO
""")
    assert [a.rule for a in eng.evaluate(mk(Kind.OPEN, **OPEN))] == ["Good"]


# ---------------------------------------------------------------- realistic ruleset

def sample_engine(pt, *extra, **kw):
    files = [os.path.join(DATA, "sample_rules.yaml")] + [os.path.join(DATA, f) for f in extra]
    return RuleEngine.from_files(files, proctable=pt, **kw)


def test_sample_ruleset_loads(pt):
    eng = sample_engine(pt)
    assert [r.name for r in eng.rules] == ["Terminal shell in container", "Read sensitive file untrusted",
                                           "Write below etc", "Outbound connection to C2",
                                           "Kernel module loaded", "Trace attach"]
    assert not eng.rule("Kernel module loaded").enabled
    assert {k.label for k in eng.required_kinds()} == {"exec", "open", "connect", "ptrace"}
    assert eng.open_path_prefixes() == ["/etc"]
    assert ("K8s audit rule", "source k8s_audit") in eng.skipped


def test_sample_ruleset_alerts(pt):
    eng = sample_engine(pt)
    shell = mk(Kind.EXEC, pt=pt, pid=100, ppid=10, comm="bash", exe="/bin/bash", args=["bash"],
               tty="pts0", container=WEB)
    (a,) = eng.evaluate(shell)
    assert a.rule == "Terminal shell in container" and a.priority == "notice"
    assert "shell=bash parent=containerd-shim" in a.output
    assert "terminal=34816 container_id=0123456789ab image=docker.io/library/nginx" in a.output
    assert a.output_fields["proc.tty"] == 34816
    assert eng.evaluate(mk(Kind.EXEC, pt=pt, pid=100, ppid=10, comm="bash", exe="/bin/bash",
                           args=["bash"], tty="", container=WEB)) == []
    assert eng.evaluate(mk(Kind.EXEC, pt=pt, pid=100, ppid=10, comm="bash", exe="/bin/bash",
                           args=["bash"], tty="pts0")) == []  # host

    read = mk(Kind.OPEN, pt=pt, **OPEN)
    (a,) = eng.evaluate(read)
    assert a.rule == "Read sensitive file untrusted"
    assert "file=/etc/shadow user=root process=cat cmdline=cat /etc/shadow gparent=containerd-shim" in a.output
    assert eng.evaluate(mk(Kind.OPEN, pt=pt, comm="sshd", **OPEN)) == []
    assert eng.evaluate(mk(Kind.OPEN, pt=pt, comm="nginx", syscall="openat", path="/etc/pam.d/common",
                           flags=0, ret=3)) == []
    assert eng.evaluate(mk(Kind.OPEN, pt=pt, comm="vim", syscall="openat", path="/etc/pam.d/common",
                           flags=0, ret=3))[0].rule == "Read sensitive file untrusted"
    backup = ContainerInfo(id="f" * 64, image_repository="registry.local/backup-agent")
    assert eng.evaluate(mk(Kind.OPEN, pt=pt, container=backup, **OPEN)) == []
    assert eng.evaluate(mk(Kind.OPEN, pt=pt, syscall="openat", path="/etc/shadow", flags=0, ret=-13)) == []

    write = mk(Kind.OPEN, pt=pt, syscall="openat", path="/etc/hosts", flags=0o1101, ret=3)
    (a,) = eng.evaluate(write)
    assert a.rule == "Write below etc" and a.priority == "error"
    assert "flags=O_WRONLY|O_CREAT|O_TRUNC" in a.output
    assert eng.evaluate(mk(Kind.OPEN, pt=pt, comm="dpkg", syscall="openat", path="/etc/hosts",
                           flags=1, ret=3)) == []

    c2 = mk(Kind.CONNECT, pt=pt, family="AF_INET", proto="tcp", saddr="10.1.1.1", sport=40000,
            daddr="6.6.6.6", dport=4444, ret=0, container=WEB)
    assert [x.rule for x in eng.evaluate(c2)] == ["Outbound connection to C2"]
    inprog = mk(Kind.CONNECT, pt=pt, family="AF_INET", proto="tcp", saddr="10.1.1.1", sport=40000,
                daddr="6.6.6.6", dport=1337, ret=-115, container=WEB)
    assert [x.rule for x in eng.evaluate(inprog)] == ["Outbound connection to C2"]
    local = mk(Kind.CONNECT, pt=pt, family="AF_INET", proto="tcp", saddr="127.0.0.1", sport=40000,
               daddr="127.0.0.1", dport=4444, ret=0, container=WEB)
    assert eng.evaluate(local) == []

    tr = mk(Kind.PTRACE, pt=pt, request=0x4206, target_pid=1, ret=0)
    (a,) = eng.evaluate(tr)
    assert a.output == "ptrace attach (proc=cat target=1)"
    assert eng.evaluate(mk(Kind.MODULE, pt=pt, syscall="init_module", ret=0)) == []


def test_sample_ruleset_with_overrides(pt):
    eng = sample_engine(pt, "sample_overrides.yaml")
    assert eng.rule("Kernel module loaded").enabled
    assert eng.rule("Write below etc").priority == "warning"
    fish = mk(Kind.EXEC, pt=pt, pid=100, ppid=10, comm="fish", exe="/usr/bin/fish", args=["fish"],
              tty="pts0", container=WEB)
    assert eng.evaluate(fish)[0].rule == "Terminal shell in container"
    sidecar = ContainerInfo(id="e" * 64, name="sidecar")
    assert eng.evaluate(mk(Kind.EXEC, pt=pt, pid=100, ppid=10, comm="fish", exe="/usr/bin/fish",
                           args=["fish"], tty="pts0", container=sidecar)) == []
    assert eng.evaluate(mk(Kind.OPEN, pt=pt, comm="backup-agent", **OPEN)) == []
    assert eng.evaluate(mk(Kind.OPEN, pt=pt, comm="pip", syscall="openat", path="/etc/x",
                           flags=1, ret=3)) == []
    (a,) = eng.evaluate(mk(Kind.OPEN, pt=pt, syscall="openat", path="/etc/x", flags=1, ret=3))
    assert a.output == "Write below etc by cat (file=/etc/x)" and a.priority == "warning"
    c2 = dict(family="AF_INET", proto="tcp", saddr="10.1.1.1", sport=40000, daddr="6.6.6.6",
              dport=4444, ret=0, container=WEB)
    assert eng.evaluate(mk(Kind.CONNECT, pt=pt, comm="curl", **c2)) == []
    assert eng.evaluate(mk(Kind.CONNECT, pt=pt, comm="nc", **c2))
    assert eng.evaluate(mk(Kind.MODULE, pt=pt, syscall="init_module", ret=0))[0].rule == \
        "Kernel module loaded"


def test_block_scalar_output_is_one_line():
    from vigil.events import Event, Kind
    from vigil.rules.engine import RuleEngine
    eng = RuleEngine.from_text(
        "- rule: folded\n  desc: d\n  condition: evt.type = execve\n"
        "  output: >\n    hello %proc.name\n  priority: INFO\n")
    ev = Event(Kind.EXEC, pid=1, tid=1, ppid=0, uid=0, gid=0, comm="sh", exe="/bin/sh",
               args=["sh"], time=1)
    (alert,) = eng.evaluate(ev)
    assert alert.output == "hello sh"
