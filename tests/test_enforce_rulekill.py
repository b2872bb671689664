"""Rules that enforce: `enforce: kill` in a rules file, the loader's checks and
hints, and a live `vigil run` killing real processes (SIGKILL through a pidfd,
the delay reported), never a protected one nor a reused pid."""
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

from vigil.enforce.rulekill import RULE_KILLED, RuleKiller
from vigil.events import Event, Kind
from vigil.rules.engine import RuleEngine
from vigil.rules.loader import RulesError
from vigil.state.proctable import ProcInfo

VIGIL = str(Path(sys.executable).parent / "vigil")

SPAWN = """- macro: spawned_process
  condition: evt.type in (execve, execveat) and evt.dir = <
"""


def engine(text):
    return RuleEngine.from_text(SPAWN + text, "kill.yaml")


def rule(name, cond, extra="  enforce: kill\n"):
    return (f"- rule: {name}\n  desc: d\n  condition: {cond}\n  output: o %proc.name\n"
            f"  priority: WARNING\n{extra}")


# --- the loader --------------------------------------------------------------------------

def test_enforce_kill_is_read_and_unknown_values_are_errors_with_file_and_line():
    e = engine(rule("k", "spawned_process and proc.name = x and proc.pname = y"))
    assert e.kill_rules == {"k"} and e.rule("k").enforce == "kill"
    with pytest.raises(RulesError) as ei:
        engine(rule("k", "spawned_process", "  enforce: stop\n"))
    err = ei.value
    assert err.file == "kill.yaml" and err.line == 8
    assert "invalid enforce 'stop' (expected one of kill, none)" in str(err)
    with pytest.raises(RulesError, match="invalid enforce"):
        engine(rule("k", "spawned_process", "  enforce: [kill]\n"))


def test_an_override_turns_enforce_on_and_off():
    e = engine(rule("k", "spawned_process and proc.pname = y", "")
               + "- rule: k\n  enforce: kill\n  override: {enforce: replace}\n")
    assert e.kill_rules == {"k"}
    e = engine(rule("k", "spawned_process and proc.pname = y")
               + "- rule: k\n  enforce: none\n  override: {enforce: replace}\n")
    assert e.kill_rules == frozenset()


def hints(e):
    return [str(w) for w in e.warnings if "could be decided in the kernel" in str(w)]


def test_a_rule_the_kernel_could_decide_gets_the_policy_form_in_a_warning():
    e = engine(rule("No netcat", "spawned_process and proc.name in (nc, ncat) and "
                                 "container.id != host")
               + rule("web curl", "evt.type = connect and evt.dir = < and fd.rport = 80 and "
                                  "fd.sip = 10.0.0.1 and k8s.ns.name = web and "
                                  "proc.exepath = /usr/bin/curl")
               + rule("bin", "spawned_process and proc.exepath = /usr/bin/nc"))
    h = hints(e)
    assert len(h) == 3, h
    assert "kill.yaml:3: rule 'No netcat'" in h[0]
    assert ("{apiVersion: vigil.dev/v1, kind: VigilPolicy, metadata: {name: no-netcat}, spec: "
            "{selector: {}, exec: {deny: [{name: nc}, {name: ncat}]}}}") in h[0]
    assert ("spec: {selector: {namespaces: [web]}, egress: {deny: [{cidr: [10.0.0.1/32], "
            'ports: ["80"], protocol: any, process: {paths: [/usr/bin/curl]}}]}}') in h[1]
    assert "selector: {host: true}, exec: {deny: [{path: /usr/bin/nc}]}" in h[2]


def test_no_hint_when_the_kernel_cannot_say_it_or_the_rule_does_not_kill():
    e = engine(rule("a", "spawned_process and proc.name = nc and proc.pname = bash")
               + rule("b", "evt.type = connect and evt.dir = < and user.name = root")
               + rule("c", "spawned_process and proc.name = nc", "")
               + rule("d", "spawned_process and (proc.name = nc and proc.exepath = /x/nc)"))
    assert hints(e) == []


# --- the pid checks (real processes, events made to look stale) -----------------------

def sleeper():
    return subprocess.Popen(["sleep", "30"])


def event_for(p, start_ns=None, at=None):
    proc = ProcInfo(p.pid, comm="sleep", exe="/usr/bin/sleep",
                    start_time=start_ns if start_ns is not None else 0)
    ev = Event(Kind.EXEC, time=at if at is not None else time.time_ns(), pid=p.pid,
               comm="sleep", exe="/usr/bin/sleep")
    ev.proc = proc
    return ev


class _A:
    rule = "r"


def real_start_ns(pid):
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    boot = ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return boot + time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def test_a_process_whose_start_time_differs_is_not_killed():
    p = sleeper()
    try:
        k = RuleKiller()
        assert k.kill(event_for(p, start_ns=real_start_ns(p.pid) - 5_000_000_000), _A) is None
        # an event older than the process: its pid was someone else's
        assert k.kill(event_for(p, at=time.time_ns() - 60_000_000_000), _A) is None
        assert p.poll() is None and k.missed == 2 and k.kills == 0
        a = k.kill(event_for(p, start_ns=real_start_ns(p.pid)), _A)
        assert p.wait(5) == -signal.SIGKILL
        assert a.rule == RULE_KILLED and a.output_fields["vigil.rule"] == "r"
        assert a.output_fields["vigil.kill_delay_ms"] >= 0 and k.stats()["rule_kills"] == 1
    finally:
        p.kill()


def test_protected_names_vigil_itself_and_pid_1_are_never_killed():
    p = sleeper()
    try:
        k = RuleKiller(protected=("sleep",))
        assert k.kill(event_for(p), _A) is None
        me = Event(Kind.EXEC, time=time.time_ns(), pid=os.getpid(), comm="python")
        init = Event(Kind.EXEC, time=time.time_ns(), pid=1, comm="init")
        assert RuleKiller().kill(me, _A) is None and RuleKiller().kill(init, _A) is None
        assert p.poll() is None and k.skipped == 1
    finally:
        p.kill()


# --- live --------------------------------------------------------------------------------

LIVE_RULES = SPAWN + """
- rule: kill doomed
  desc: a process named vkill-doomed is killed
  condition: spawned_process and proc.name = vkill-doomed and proc.pname exists
  output: doomed %proc.name (pid %proc.pid)
  priority: WARNING
  enforce: kill
- rule: kill protected
  desc: names the protected list holds are never killed
  condition: spawned_process and proc.name = vkill-prot and proc.pname exists
  output: protected %proc.name
  priority: WARNING
  enforce: kill
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF)")
    tmp = tmp_path_factory.mktemp("rulekill")
    (tmp / "rules.yaml").write_text(LIVE_RULES)
    (tmp / "vigil.yaml").write_text("enforce: {protected: [vkill-prot]}\n")
    for name in ("vkill-doomed", "vkill-prot"):
        shutil.copy(shutil.which("sleep"), tmp / name)
    store = tmp / "alerts.db"
    err = open(tmp / "agent.err", "w")
    p = subprocess.Popen([VIGIL, "run", "-c", str(tmp / "vigil.yaml"), "-r", str(tmp / "rules.yaml"),
                          "--store", str(store), "--output", "json"],
                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    deadline = time.monotonic() + 60
    while "running with" not in (tmp / "agent.err").read_text():
        assert p.poll() is None and time.monotonic() < deadline, (tmp / "agent.err").read_text()
        time.sleep(0.2)
    time.sleep(1.0)
    yield tmp, store
    p.send_signal(signal.SIGINT)
    p.wait(20)
    err.close()
    text = (tmp / "agent.err").read_text()
    assert "rule kills: 1 " in text, text


def stored(store, rule):
    r = subprocess.run([VIGIL, "alerts", "--store", str(store), "--json", "--rule", rule,
                        "--limit", "0"], capture_output=True, text=True)
    return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


def wait_for(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    return fn()


def test_live_a_matched_process_is_killed_and_the_delay_reported(live):
    tmp, store = live
    p = subprocess.Popen([str(tmp / "vkill-doomed"), "30"])
    try:
        assert p.wait(15) == -signal.SIGKILL
    finally:
        p.kill()
    kills = wait_for(lambda: stored(store, RULE_KILLED))
    assert kills, (tmp / "agent.err").read_text()
    f = kills[0]["output_fields"]
    assert f["vigil.rule"] == "kill doomed" and f["proc.pid"] == p.pid
    assert f["proc.exepath"] == str(tmp / "vkill-doomed")
    assert 0 < f["vigil.kill_delay_ms"] < 5000
    assert wait_for(lambda: stored(store, "kill doomed"))
    assert "could be decided in the kernel" not in (tmp / "agent.err").read_text()


def test_live_a_protected_process_is_alerted_but_not_killed(live):
    tmp, store = live
    p = subprocess.Popen([str(tmp / "vkill-prot"), "1.5"])
    assert p.wait(15) == 0
    assert wait_for(lambda: stored(store, "kill protected"))
    assert not [a for a in stored(store, RULE_KILLED)
                if a["output_fields"].get("proc.pid") == p.pid]
