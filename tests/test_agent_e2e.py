"""End to end: one real `vigil run` for the whole module (JSON on stdout, SQLite
store, rotating file output, webhook to a local receiver, rate limiting,
min_priority), driven by real processes; then SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from vigil.alerts.alert import format_time

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import (FALCO_KEYS, RFC3339_NS, AgentProc, Receiver, bpf_link_ids,  # noqa: E402
                         count_of, require_kernel, rule, store_alerts, system_link_ids,
                         wait_until, write_config, write_rules)

TOKEN = f"vigil-e2e-{uuid.uuid4().hex[:8]}"
FILE_MAX = 1500


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_kernel()
    e = Env()
    d = e.dir = tmp_path_factory.mktemp("agent-e2e")
    e.listener = socket.socket()
    e.listener.bind(("127.0.0.1", 0))
    e.listener.listen(16)
    e.port = e.listener.getsockname()[1]
    e.receiver = Receiver()
    e.rules = write_rules(d / "rules.yaml", [
        rule("E2E marker read",
             f"evt.type in (open, openat, openat2) and fd.name startswith {d}/read-",
             "E2E read (file=%fd.name cmdline=%proc.cmdline pid=%proc.pid ppid=%proc.ppid "
             "user=%user.name)", "WARNING", ["e2e", "filesystem"]),
        rule("E2E marker exec",
             f"evt.type = execve and evt.dir = < and proc.name = echo and proc.args contains {TOKEN}",
             "E2E exec (cmdline=%proc.cmdline pid=%proc.pid exe=%proc.exepath)", "NOTICE",
             ["e2e", "process"]),
        rule("E2E connect",
             f"evt.type = connect and fd.rport = {e.port}",
             "E2E connect (connection=%fd.name rport=%fd.rport cmdline=%proc.cmdline)", "ERROR",
             ["e2e", "network"]),
        rule("E2E debug only",
             f"evt.type in (open, openat) and fd.name startswith {d}/low-",
             "E2E low (file=%fd.name)", "DEBUG"),
        rule("E2E burst",
             f"evt.type in (open, openat) and fd.name startswith {d}/burst-",
             "E2E burst (file=%fd.name pid=%proc.pid)", "WARNING"),
    ])
    e.db = d / "alerts.db"
    e.file = d / "alerts.jsonl"
    cfg = write_config(d / "vigil.yaml", {
        "rules": [str(e.rules)],
        "min_priority": "info",
        "outputs": {
            "stdout": {"format": "json"},
            "file": {"path": str(e.file), "max_bytes": FILE_MAX, "backups": 50},
            "webhook": {"url": e.receiver.url, "backoff": 0.1, "max_backoff": 0.5},
        },
        "store": {"path": str(e.db)},
        "rate_limit": {"window": "1s"},
    })
    for name in ("read-1", "read-2", "low-1", "burst-1"):
        (d / name).write_text("x\n")
    e.links_before = system_link_ids()
    e.agent = AgentProc(["run", "-c", cfg], d)
    e.links = bpf_link_ids(e.agent.pid)
    yield e
    e.agent.kill()
    e.receiver.close()
    e.listener.close()


def _cat(path) -> int:
    p = subprocess.run(["cat", str(path)], capture_output=True)
    assert p.returncode == 0
    return p


def test_startup_line_names_rules_and_kinds(env):
    err = env.agent.stderr()
    # the DEBUG rule is below min_priority: 4 of 5 rules are loaded
    assert "vigil: running with 4 rules; event kinds:" in err
    kinds = err.split("event kinds: ", 1)[1].split()[0].split(",")
    assert {"exec", "open", "connect"} <= set(kinds)
    assert env.links, "the agent holds no BPF links"


def test_open_alert_exact_falco_json(env):
    path = env.dir / "read-1"
    p = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL)
    p.wait()
    (a,) = env.agent.wait_alerts("E2E marker read", pred=lambda a: a["output_fields"]["proc.pid"] == p.pid)
    assert set(a) == FALCO_KEYS
    assert RFC3339_NS.match(a["time"]), a["time"]
    assert a["priority"] == "Warning"
    assert a["source"] == "syscall"
    assert a["hostname"] == socket.gethostname()
    assert a["tags"] == ["e2e", "filesystem"]
    assert a["output_fields"] == {
        "evt.time": a["output_fields"]["evt.time"],
        "fd.name": str(path),
        "proc.cmdline": f"cat {path}",
        "proc.pid": p.pid,
        "proc.ppid": os.getpid(),
        "user.name": "root",
    }
    assert format_time(a["output_fields"]["evt.time"]) == a["time"]   # Falco's evt.time: ns
    assert a["output"] == (f"{a['time']}: Warning E2E read (file={path} cmdline=cat {path} "
                           f"pid={p.pid} ppid={os.getpid()} user=root)")
    # the very same alert is in the store (written before any output)
    stored = store_alerts(env.db, "--rule", "E2E marker read")
    assert a in stored


def test_exec_alert(env):
    p = subprocess.Popen(["/bin/echo", TOKEN], stdout=subprocess.DEVNULL)
    p.wait()
    (a,) = env.agent.wait_alerts("E2E marker exec")
    assert a["priority"] == "Notice"
    assert a["output_fields"]["proc.cmdline"] == f"echo {TOKEN}"
    assert a["output_fields"]["proc.pid"] == p.pid
    assert a["output_fields"]["proc.exepath"] == os.path.realpath("/bin/echo") or \
        a["output_fields"]["proc.exepath"] == "/bin/echo"
    assert a["tags"] == ["e2e", "process"]


def test_connect_alert(env):
    code = f"import socket; socket.create_connection(('127.0.0.1', {env.port})).close()"
    p = subprocess.Popen([sys.executable, "-c", code])
    assert p.wait(10) == 0
    conn, _ = env.listener.accept()
    conn.close()
    (a,) = env.agent.wait_alerts("E2E connect")
    assert a["priority"] == "Error"
    of = a["output_fields"]
    assert of["fd.rport"] == env.port
    assert of["fd.name"].startswith("127.0.0.1:") and of["fd.name"].endswith(f"->127.0.0.1:{env.port}")
    assert of["proc.cmdline"].endswith(code)


def test_min_priority_drops_lower_rule(env):
    _cat(env.dir / "low-1")
    # a later event that does alert: once it is out, the earlier one was judged
    p = subprocess.Popen(["cat", str(env.dir / "read-2")], stdout=subprocess.DEVNULL)
    p.wait()
    env.agent.wait_alerts("E2E marker read", pred=lambda a: a["output_fields"]["proc.pid"] == p.pid)
    assert env.agent.alerts("E2E debug only") == []
    assert store_alerts(env.db, "--rule", "E2E debug only") == []


def test_rate_limit_folds_burst_without_loss(env):
    path = env.dir / "burst-1"
    code = f"for _ in range(50): open({str(path)!r}).close()"
    p = subprocess.Popen([sys.executable, "-c", code])
    assert p.wait(10) == 0

    def total():
        got = env.agent.alerts("E2E burst")
        return got if sum(map(count_of, got)) >= 50 else None
    got = wait_until(total, 8, what="50 burst alerts counted")
    assert sum(map(count_of, got)) == 50
    assert len(got) < 50
    assert any(count_of(a) > 1 for a in got)
    assert all(a["output_fields"]["proc.pid"] == p.pid for a in got)
    stored = store_alerts(env.db, "--rule", "E2E burst", "--limit", "0")
    assert sum(map(count_of, stored)) == 50
    assert sorted(map(json.dumps, stored)) == sorted(map(json.dumps, got))


def test_store_filters(env):
    # needs the alerts of the tests above (read, exec, connect)
    env.agent.wait_alerts("E2E connect")
    env.agent.wait_alerts("E2E marker exec")
    mine = {"E2E marker read", "E2E marker exec", "E2E connect", "E2E burst"}
    everything = store_alerts(env.db, "--limit", "0")
    assert {a["rule"] for a in everything} == mine
    # newest first
    times = [a["time"] for a in everything]
    assert times == sorted(times, reverse=True)
    assert {a["rule"] for a in store_alerts(env.db, "--priority", "error")} == {"E2E connect"}
    assert {a["rule"] for a in store_alerts(env.db, "--priority", "warning", "--limit", "0")} == \
        {"E2E marker read", "E2E connect", "E2E burst"}
    assert {a["rule"] for a in store_alerts(env.db, "--priority", "notice", "--limit", "0")} == mine
    assert store_alerts(env.db, "--limit", "1") == everything[:1]
    assert len(store_alerts(env.db, "--since", "1h", "--limit", "0")) == len(everything)
    assert store_alerts(env.db, "--since", "2200-01-01T00:00:00Z") == []
    oldest = everything[-1]["time"]
    assert store_alerts(env.db, "--since", oldest, "--limit", "0")[-1] == everything[-1]
    # host processes are stored with container id "host"
    assert len(store_alerts(env.db, "--container", "host", "--limit", "0")) == len(everything)
    assert store_alerts(env.db, "--container", "0123456789ab") == []
    # every alert on stdout is in the store, field for field
    live = env.agent.json_lines()
    assert sorted(map(json.dumps, live)) == sorted(map(json.dumps, everything))


def test_webhook_receives_same_alerts(env):
    live = env.agent.json_lines()
    wait_until(lambda: len(env.receiver.received()) >= len(live), 8,
               what="webhook deliveries")
    got = env.receiver.received()
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, live))
    for a in got:
        assert set(a) == FALCO_KEYS
    assert env.receiver.paths[0] == "/"
    assert env.receiver.headers[0].get("Content-Type") == "application/json"


def test_file_output_rotates_and_keeps_every_alert(env):
    live = env.agent.json_lines()
    files = sorted(env.dir.glob("alerts.jsonl*"))

    def lines():
        out = []
        for f in sorted(env.dir.glob("alerts.jsonl*")):
            out += [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
        return out if len(out) >= len(live) else None
    got = wait_until(lines, 5, what="file output lines")
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, live))
    files = sorted(env.dir.glob("alerts.jsonl*"))
    assert len(files) >= 2, "no rotation happened"
    for f in files:
        # a rotated file is never past max_bytes (unless it holds a single big line)
        text = f.read_text()
        assert len(text.encode()) <= FILE_MAX or text.count("\n") == 1


def test_sigterm_exits_zero_and_detaches(env):
    links = env.links
    assert links <= system_link_ids()
    rc = env.agent.stop(signal.SIGTERM)
    assert rc == 0, env.agent.stderr()
    assert env.agent.stop_seconds < 2.5, env.agent.stop_seconds
    assert not (links & system_link_ids()), "BPF links left behind"
    assert "Traceback" not in env.agent.stderr()
