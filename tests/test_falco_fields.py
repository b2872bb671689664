"""Fields Falco's rules need, with libsinsp's meaning (engine level, real
resolver: `localhost` comes from /etc/hosts)."""
from __future__ import annotations

import errno
import time

from vigil.events import Event, Kind
from vigil.rules.engine import RuleEngine
from vigil.state.containers.metadata_bundle import parse_oci_config
from vigil.state.containers.model import ContainerInfo


def rule(cond: str) -> str:
    return f"- rule: R\n  desc: d\n  condition: {cond}\n  output: o %fd.sip.name\n  priority: WARNING\n"


def conn(daddr, ret=0, fd=3, pid=1, kind=Kind.CONNECT, proto="udp", dport=53):
    return Event(kind, pid=pid, comm="x", family="AF_INET", proto=proto, saddr="10.9.9.9",
                 sport=40000, daddr=daddr, dport=dport, ret=ret, fd=fd, syscall="connect")


def test_sip_name_matches_the_ips_a_rule_domain_resolves_to():
    eng = RuleEngine.from_text(rule("evt.type=connect and fd.sip.name=localhost"))
    eng.evaluate(conn("192.0.2.1"))        # the first lookup starts the resolver
    deadline = time.monotonic() + 10
    while eng.names.rounds == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert eng.evaluate(conn("127.0.0.1"))
    assert not eng.evaluate(conn("192.0.2.1"))
    a = eng.evaluate(conn("127.0.0.1", fd=4))[0]
    assert a.output == "o localhost"


def test_ip_name_fields_only_take_equality_and_in():
    import pytest
    from vigil.rules.loader import RulesError
    with pytest.raises(RulesError, match="can only be compared with"):
        RuleEngine.from_text(rule("evt.type=connect and fd.sip.name startswith local"))


def test_connected_and_name_changed():
    eng = RuleEngine.from_text(
        rule("evt.type=connect and fd.connected=true and fd.name_changed=true"))
    assert eng.evaluate(conn("192.0.2.1", ret=0))
    assert eng.evaluate(conn("192.0.2.2", ret=-errno.EINPROGRESS, fd=5))   # in progress counts
    assert not eng.evaluate(conn("192.0.2.3", ret=-errno.ECONNREFUSED, fd=6))
    assert not eng.evaluate(conn("192.0.2.1", ret=0))                        # same tuple again


def test_chmod_mode_names_and_failed_open_fd():
    eng = RuleEngine.from_text(rule('evt.type=fchmodat and evt.arg.mode contains "S_ISUID"') +
                               rule("evt.type=openat and fd.num=-1").replace("R\n", "O\n", 1),
                               )
    ch = Event(Kind.CHMOD, pid=1, comm="chmod", syscall="fchmodat", path="/tmp/x", mode=0o4755, ret=0)
    assert [a.rule for a in eng.evaluate(ch)] == ["R"]
    assert not eng.evaluate(Event(Kind.CHMOD, pid=1, comm="chmod", syscall="fchmodat", path="/tmp/x",
                                  mode=0o755, ret=0))
    op = Event(Kind.OPEN, pid=1, comm="cat", syscall="openat", path="/nope", flags=0, ret=-2)
    assert [a.rule for a in eng.evaluate(op)] == ["O"]


def test_mount_dest_by_source_glob():
    spec = {"mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/hetc", "type": "bind", "source": "/etc",
                        "options": ["rbind", "ro", "rprivate"]}],
            "annotations": {"io.container.manager": "libpod"}}
    fields = parse_oci_config(spec)
    c = ContainerInfo(id="a" * 64, mounts=fields["mounts"])
    eng = RuleEngine.from_text(
        rule('evt.type=execve and not container.mount.dest[/etc] in ("<NA>","N/A") '
             'and container.mount.dest[/proc*] = "<NA>"'))
    ex = Event(Kind.EXEC, pid=1, comm="sh", exe="/bin/sh", args=["sh"])
    ex.container = c
    assert eng.evaluate(ex)
    ex2 = Event(Kind.EXEC, pid=1, comm="sh", exe="/bin/sh", args=["sh"])
    ex2.container = ContainerInfo(id="b" * 64)
    assert not eng.evaluate(ex2)
    assert c.mounts == (("/etc", "/hetc", "ro", False, "rprivate"),)


def test_env_fields_and_the_kernel_want():
    """proc.env joins NAME=value with spaces, proc.env[NAME] is the value ("" when
    unset), proc.aenv[NAME] the nearest ancestor's; a process vigil did not see
    exec has its environment read from /proc; wants_env follows the rules."""
    import subprocess
    from vigil.state.proctable import ProcessTable
    pt = ProcessTable()
    eng = RuleEngine.from_text(
        "- rule: E\n  desc: d\n  condition: evt.type=execve and proc.env[HTTP_PROXY] != \"\"\n"
        "  output: o %proc.env|%proc.env[NOPE]|%proc.aenv[TOKEN]|%proc.aenv[1]\n"
        "  priority: WARNING\n", proctable=pt)
    assert eng.wants_env()
    parent = subprocess.Popen(["sleep", "30"], env={"TOKEN": "t0k", "PATH": "/usr/bin:/bin"})
    try:
        # Popen returns once exec has passed its point of no return; the new stack (and
        # with it /proc/<pid>/environ) is set up a moment later
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/proc/{parent.pid}/environ", "rb") as f:
                if b"TOKEN=" in f.read():
                    break
            time.sleep(0.005)
        pp = pt.lookup_or_read(parent.pid)            # from /proc: its real environment
        ev = Event(Kind.EXEC, pid=parent.pid + 100000, ppid=parent.pid, comm="curl", exe="/x/curl",
                   args=["curl"], env=["HTTP_PROXY=http://p:3128", "A=b c"], syscall="execve")
        ev.proc = pt.update(ev)
        a = eng.evaluate(ev)[0]
        assert a.output == "o HTTP_PROXY=http://p:3128 A=b c||t0k|TOKEN=t0k PATH=/usr/bin:/bin"
        assert pp.env == ["TOKEN=t0k", "PATH=/usr/bin:/bin"]
        quiet = Event(Kind.EXEC, pid=parent.pid + 100001, ppid=parent.pid, comm="curl", args=["curl"],
                      env=["NO_PROXY=x"], syscall="execve")
        quiet.proc = pt.update(quiet)
        assert not eng.evaluate(quiet)
        # not captured (no rule read it): <NA>, never a guess
        none = Event(Kind.EXEC, pid=parent.pid + 100002, ppid=0, comm="curl", args=["curl"],
                     syscall="execve")
        none.proc = pt.update(none)
        assert not eng.evaluate(none)
    finally:
        parent.kill()
        parent.wait()
    assert not RuleEngine.from_text(rule("evt.type=connect")).wants_env()
    assert RuleEngine.from_text(rule("evt.type=execve").replace("%fd.sip.name", "%proc.aenv")).wants_env()


def test_rule_names_resolved_once_primed():
    """The agent primes the cache when it takes the rules: the names resolve
    before any event asks (else the first connect would see none)."""
    eng = RuleEngine.from_text(rule("evt.type=connect and fd.sip.name=localhost"))
    assert eng.names.rounds == 0            # loading alone resolves nothing
    eng.names.prime()
    deadline = time.monotonic() + 10
    while eng.names.rounds == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert eng.evaluate(conn("127.0.0.1"))  # the very first lookup matches


def test_a_name_that_times_out_holds_back_only_itself():
    """fd.sip.name's resolver: a name whose lookup hangs (no DNS answers here) keeps
    one worker; the names /etc/hosts answers at once are resolved meanwhile, whatever
    their place in the sorted list."""
    import threading
    from vigil.state.dnsnames import NameCache
    gate = threading.Event()

    def resolve(name):
        if name.startswith("a-"):
            gate.wait(10)
            return frozenset()
        return frozenset({"10.96.0.1"}) if name == "c-api.local" else frozenset({"10.0.0.9"})
    nc = NameCache(resolve=resolve, workers=2)
    nc.watch(["a-slow.example", "b-fast.example", "c-api.local"])
    t = threading.Thread(target=nc.refresh_now, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not nc._by_ip.get("10.96.0.1"):
            time.sleep(0.01)
        assert nc._by_ip.get("10.96.0.1") == ("c-api.local",)
    finally:
        gate.set()
        t.join(5)


def test_names_in_the_hosts_file_are_known_at_once(tmp_path):
    """prime() (the agent taking the rules) reads the hosts file first: its names are
    resolved before the first connect even when every DNS lookup hangs."""
    import threading
    from vigil.state.dnsnames import NameCache
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.96.0.1 kubernetes.default.svc.cluster.local # api\n")
    gate = threading.Event()

    def resolve(name):
        gate.wait(10)
        return frozenset()
    nc = NameCache(resolve=resolve, hosts=str(hosts))
    nc.watch(["kubernetes.default.svc.cluster.local", "kubernetes.default.svc", "x.example"])
    try:
        nc.prime()
        assert nc._by_ip.get("10.96.0.1") == ("kubernetes.default.svc.cluster.local",)
        assert nc.names_for("10.96.0.1") == ("kubernetes.default.svc.cluster.local",)
    finally:
        gate.set()
