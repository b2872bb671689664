"""SIGHUP reloads the rules of a running agent: new rules fire (including a
rule that needs a new event kind, which restarts the sensors, and a new open
path prefix filtered in the kernel); a broken rules file is reported with
file:line and the last good rules keep firing."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import (AgentProc, bpf_link_ids, require_kernel, rule,  # noqa: E402
                         system_link_ids, wait_until, write_config, write_rules)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    require_kernel()
    d = tmp_path_factory.mktemp("agent-reload")
    rules = write_rules(d / "rules.yaml", [
        rule("Reload A", f"evt.type in (open, openat) and fd.name startswith {d}/a-",
             "A (file=%fd.name pid=%proc.pid)"),
    ])
    # SIGHUP alone: the file watcher (tests/test_config_watch.py) would reload too
    cfg = write_config(d / "vigil.yaml", {"rate_limit": {"window": 0}, "store": {"enabled": False},
                                          "outputs": {"stdout": {"format": "json"}},
                                          "watch_config_files": False})
    for n in ("a-1", "c-1"):
        (d / n).write_text("x")
    a = AgentProc(["run", "-c", cfg, "-r", rules, "-v"], d, ready="vigil: running with")
    a.dir, a.rules = d, rules
    a.links_first = bpf_link_ids(a.pid)
    yield a
    a.kill()


def _open(path) -> int:
    p = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL)
    p.wait()
    return p.pid


def _connect_refused(port: int) -> int:
    code = (f"import socket\ntry: socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "except OSError: pass")
    p = subprocess.Popen([sys.executable, "-c", code])
    p.wait()
    return p.pid


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fires(agent, rule_name, pid, timeout=5.0):
    return agent.wait_alerts(rule_name, timeout=timeout,
                             pred=lambda a: a["output_fields"].get("proc.pid") == pid)


def test_initial_rule_fires(agent):
    _fires(agent, "Reload A", _open(agent.dir / "a-1"))
    assert "event kinds:" in agent.stderr() and "connect" not in \
        agent.stderr().split("event kinds:", 1)[1].splitlines()[0]


def test_sighup_adds_rules_new_kind_and_prefix(agent):
    d = agent.dir
    port = _free_port()
    agent.port = port
    write_rules(agent.rules, [
        rule("Reload A", f"evt.type in (open, openat) and fd.name startswith {d}/a-",
             "A (file=%fd.name pid=%proc.pid)"),
        rule("Reload B", f"evt.type = connect and fd.rport = {port}",
             "B (connection=%fd.name pid=%proc.pid)", "ERROR"),
        rule("Reload C", f"evt.type in (open, openat) and fd.name startswith {d}/c-",
             "C (file=%fd.name pid=%proc.pid)", "NOTICE"),
    ])
    mark = len(agent.stderr())
    agent.send(signal.SIGHUP)
    agent.wait_stderr("rules reloaded: 3 rules", start=mark)
    # connect is a new kind: the sensors are restarted with its programs (every
    # sensor's, the l7 one's too: seconds on a loaded machine)
    wait_until(lambda: "attached for kinds" in agent.stderr()[mark:]
               and "connect" in agent.stderr()[mark:], 20, what="sensor restart")
    _fires(agent, "Reload C", _open(d / "c-1"))
    _fires(agent, "Reload A", _open(d / "a-1"))
    (b,) = _fires(agent, "Reload B", _connect_refused(port))
    assert b["priority"] == "Error"
    assert b["output_fields"]["fd.name"].endswith(f"->127.0.0.1:{port}")
    assert agent.proc.poll() is None
    assert "Traceback" not in agent.stderr()
    # the first sensors' links are gone, new ones are held
    agent.links_second = bpf_link_ids(agent.pid)
    assert agent.links_second and not (agent.links_first & agent.links_second)
    assert not (agent.links_first & system_link_ids())


def test_sighup_with_broken_rules_keeps_last_good(agent):
    d = agent.dir
    good = agent.rules.read_text()
    broken = good + (
        "\n- rule: Broken\n"
        "  desc: broken\n"
        "  condition: evt.type = connect and proc.nosuchfield = 1\n"
        "  output: broken\n"
        "  priority: WARNING\n")
    agent.rules.write_text(broken)
    bad_line = broken.splitlines().index("  condition: evt.type = connect and proc.nosuchfield = 1") + 1
    mark = len(agent.stderr())
    agent.send(signal.SIGHUP)
    err = agent.wait_stderr("rules reload failed", start=mark)[mark:]
    assert f"{agent.rules}:{bad_line}:" in err
    assert "proc.nosuchfield" in err
    assert agent.proc.poll() is None
    # the last good rules (A, B, C) still fire
    _fires(agent, "Reload A", _open(d / "a-1"))
    _fires(agent, "Reload C", _open(d / "c-1"))
    _fires(agent, "Reload B", _connect_refused(agent.port))


def test_sighup_with_unparsable_yaml_and_missing_file(agent):
    d = agent.dir
    agent.rules.write_text("- rule: X\n  condition: [unclosed\n")
    mark = len(agent.stderr())
    agent.send(signal.SIGHUP)
    err = agent.wait_stderr("rules reload failed", start=mark)[mark:]
    assert str(agent.rules) in err
    agent.rules.unlink()
    mark = len(agent.stderr())
    agent.send(signal.SIGHUP)
    agent.wait_stderr("rules reload failed", start=mark)
    _fires(agent, "Reload A", _open(d / "a-1"))
    assert agent.proc.poll() is None


def test_sigterm_after_reloads(agent):
    links = bpf_link_ids(agent.pid)
    assert agent.stop(signal.SIGTERM) == 0, agent.stderr()
    assert agent.stop_seconds < 2.5
    assert not (links & system_link_ids())
    assert '"reloads": 1' in agent.stderr() and '"reload_errors": 3' in agent.stderr()
    assert "Traceback" not in agent.stderr()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_signal_while_starting(tmp_path, sig):
    """A signal that arrives while the sensors load: SIGHUP does not kill the
    agent (it reloads once running), SIGTERM stops it cleanly (exit 0)."""
    require_kernel()
    rules = write_rules(tmp_path / "rules.yaml", [
        rule("Start A", f"evt.type in (open, openat) and fd.name startswith {tmp_path}/a-",
             "A (file=%fd.name pid=%proc.pid)")])
    cfg = write_config(tmp_path / "vigil.yaml", {"store": {"enabled": False},
                                                 "outputs": {"stdout": {"format": "json"}}})
    (tmp_path / "a-1").write_text("x")
    # "loaded N rules" is logged inside start(), before the BPF programs load
    a = AgentProc(["run", "-c", cfg, "-r", rules, "-v"], tmp_path, ready="loaded 1 rules")
    try:
        a.send(sig)
        if sig == signal.SIGHUP:
            a.wait_stderr("rules reloaded: 1 rules", timeout=10)
            _fires(a, "Start A", _open(tmp_path / "a-1"))
            assert a.stop(signal.SIGTERM) == 0
        else:
            assert a.wait(10) == 0, a.stderr()
            assert "running with" in a.stderr()
        assert "Traceback" not in a.stderr()
    finally:
        a.kill()
