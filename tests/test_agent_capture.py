"""Capture and replay: a live `vigil run --capture F1` and a `vigil capture -o
F2.gz` watch the same behaviour; `vigil replay` of either file with the same
rules gives exactly the live agent's alerts (rule, output, output_fields)."""
from __future__ import annotations

import gzip
import json
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import (AgentProc, require_kernel, rule, store_alerts, vigil,  # noqa: E402
                         wait_until, write_config, write_rules)

TOKEN = f"vigil-cap-{uuid.uuid4().hex[:8]}"
RULE_NAMES = {"Cap read", "Cap exec", "Cap connect"}


def _key(a: dict) -> tuple:
    return (a["rule"], a["output"], json.dumps(a["output_fields"], sort_keys=True))


def _match(a: dict) -> tuple:
    """What the rule matched, without the time: two vigil processes convert
    the kernel's monotonic clock to wall time each with its own offset."""
    fields = {k: v for k, v in a["output_fields"].items() if k != "evt.time"}
    return (a["rule"], a["output"].split(": ", 1)[1], json.dumps(fields, sort_keys=True))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    require_kernel()
    d = tmp_path_factory.mktemp("agent-capture")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    rules = write_rules(d / "rules.yaml", [
        rule("Cap read", f"evt.type in (open, openat) and fd.name startswith {d}/read-",
             "read (file=%fd.name cmdline=%proc.cmdline pid=%proc.pid parent=%proc.pname "
             "gparent=%proc.aname[2] user=%user.name container=%container.id)"),
        rule("Cap exec", f"evt.type = execve and evt.dir = < and proc.args contains {TOKEN}",
             "exec (cmdline=%proc.cmdline pid=%proc.pid ppid=%proc.ppid parent=%proc.pname "
             "exe=%proc.exepath tty=%proc.tty)", "NOTICE"),
        rule("Cap connect", f"evt.type = connect and fd.rport = {port}",
             "connect (connection=%fd.name proto=%fd.l4proto cmdline=%proc.cmdline)", "ERROR"),
    ])
    cfg = write_config(d / "vigil.yaml", {
        "rate_limit": {"window": 0}, "store": {"enabled": False},
        "outputs": {"stdout": {"format": "json"}}})
    for n in ("read-1", "read-2"):
        (d / n).write_text("x")
    live_cap, raw_cap = d / "live.jsonl", d / "raw.jsonl.gz"
    cap = AgentProc(["capture", "-o", raw_cap], d, name="capture", ready="vigil: capturing")
    try:
        agent = AgentProc(["run", "-c", cfg, "-r", rules, "--capture", live_cap], d,
                          ready="vigil: running with")
    except BaseException:
        cap.kill()
        raise
    try:
        # the behaviour, with some ancestry: pytest -> sh -> cat, and a connect
        subprocess.run(["cat", str(d / "read-1")], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(["sh", "-c", f"cat {d}/read-2 >/dev/null; /bin/echo {TOKEN} >/dev/null"],
                       check=True)
        subprocess.run(["/bin/echo", TOKEN], stdout=subprocess.DEVNULL, check=True)
        subprocess.run([sys.executable, "-c",
                        f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"],
                       check=True)
        wait_until(lambda: len(agent.alerts()) >= 6, 8, what="6 live alerts")
        assert agent.stop(signal.SIGINT) == 0, agent.stderr()
        assert cap.stop(signal.SIGINT) == 0, cap.stderr()
    finally:
        agent.kill()
        cap.kill()
        listener.close()
    yield {"dir": d, "rules": rules, "cfg": cfg, "live": agent.json_lines(),
           "live_cap": live_cap, "raw_cap": raw_cap, "capture": cap}


def _replay(s, path, *extra) -> list:
    r = vigil("replay", path, "-c", s["cfg"], "-r", s["rules"], "--output", "json", *extra)
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]


def test_live_alerts(session):
    live = session["live"]
    assert {a["rule"] for a in live} == RULE_NAMES
    # sh -c "... echo TOKEN" matches the exec rule too: 2 reads, 3 execs, 1 connect
    assert len(live) == 6
    reads = [a for a in live if a["rule"] == "Cap read"]
    parents = sorted(a["output_fields"]["proc.pname"] for a in reads)
    assert parents[1] == "sh"
    for a in reads:
        assert a["output_fields"]["container.id"] == "host"


def test_replay_of_live_capture_matches_live(session):
    replayed = _replay(session, session["live_cap"])
    assert sorted(map(_key, replayed)) == sorted(map(_key, session["live"]))
    # the whole Falco JSON, time included
    assert sorted(map(json.dumps, replayed)) == sorted(map(json.dumps, session["live"]))


def test_replay_of_vigil_capture_matches_live(session):
    assert "vigil: captured" in session["capture"].stderr()
    with gzip.open(session["raw_cap"], "rt") as f:
        header = json.loads(f.readline())
    assert header["vigil_capture"] == 1 and header["procs"]
    replayed = _replay(session, session["raw_cap"])
    assert sorted(map(_match, replayed)) == sorted(map(_match, session["live"]))


def test_replay_into_store_and_min_priority(session, tmp_path):
    db = tmp_path / "replay.db"
    replayed = _replay(session, session["live_cap"], "--store", db)
    stored = store_alerts(db, "--limit", "0")
    assert sorted(map(json.dumps, stored)) == sorted(map(json.dumps, replayed))
    only_errors = _replay(session, session["live_cap"], "--min-priority", "error")
    assert {a["rule"] for a in only_errors} == {"Cap connect"}


def test_replay_text_and_verbose_count(session):
    r = vigil("replay", session["live_cap"], "-c", session["cfg"], "-r", session["rules"],
              "--output", "text", "-v")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sorted(lines) == sorted(a["output"] for a in session["live"])
    n = sum(1 for l in open(session["live_cap"]) if l.startswith('{"e"'))
    assert f"vigil: replayed {n} events" in r.stderr


# --- rate limiting: replay folds as live did -------------------------------------------

@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """A live run with rate limiting on (a window longer than the test) where one
    identical alert fires three times: live gives it once, then folded (count 2)."""
    require_kernel()
    d = tmp_path_factory.mktemp("agent-capture-limited")
    rules = write_rules(d / "rules.yaml", [
        rule("Cap burst", f"evt.type in (open, openat) and fd.name = {d}/burst",
             "burst (file=%fd.name)"),
        rule("Cap other", f"evt.type in (open, openat) and fd.name = {d}/other",
             "other (file=%fd.name pid=%proc.pid)"),
    ])
    cfg = write_config(d / "vigil.yaml", {
        "rate_limit": {"window": "10m"}, "store": {"enabled": False},
        "outputs": {"stdout": {"format": "json"}}})
    (d / "burst").write_text("x")
    (d / "other").write_text("x")
    live_cap = d / "live.jsonl"
    agent = AgentProc(["run", "-c", cfg, "-r", rules, "--capture", live_cap], d,
                      ready="vigil: running with")
    try:
        for _ in range(3):
            subprocess.run(["cat", str(d / "burst")], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(["cat", str(d / "other")], stdout=subprocess.DEVNULL, check=True)
        wait_until(lambda: len(agent.alerts()) >= 2, 8, what="2 live alerts")
        assert agent.stop(signal.SIGINT) == 0, agent.stderr()   # flushes the folded alert
    finally:
        agent.kill()
    yield {"rules": rules, "cfg": cfg, "live": agent.json_lines(), "live_cap": live_cap}


def test_live_run_with_rate_limit_folds(limited):
    live = limited["live"]
    burst = [a for a in live if a["rule"] == "Cap burst"]
    assert len(live) == 3 and len(burst) == 2
    assert sorted(a["output_fields"].get("vigil.repeat_count", 1) for a in burst) == [1, 2]


def test_replay_with_rate_limit_gives_the_live_alerts(limited):
    replayed = _replay(limited, limited["live_cap"])
    assert sorted(map(json.dumps, replayed)) == sorted(map(json.dumps, limited["live"]))


def test_replay_turns_every_live_only_output_off(limited, tmp_path):
    from vigil.alerts.outputs.registry import live_only_names, output_types
    assert live_only_names() == ["file", "syslog", "webhook"]
    assert not output_types()["stdout"].live_only
    log = tmp_path / "alerts.jsonl"
    cfg = write_config(tmp_path / "vigil.yaml", {
        "store": {"enabled": False}, "outputs": {"file": {"path": str(log)},
                                                 "webhook": {"url": "http://127.0.0.1:9/"}}})
    r = vigil("replay", limited["live_cap"], "-c", cfg, "-r", limited["rules"], "--output", "json")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3 and not log.exists()
