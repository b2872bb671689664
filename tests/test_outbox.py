"""The alert store as a durable outbox, and the agent's files on disk.

* A webhook receiver down for 60 s (VIGIL_TEST_WEBHOOK_DOWN_SECONDS to
  shorten a local run) while 20 alerts fire, with an agent restart in the
  middle: once it is back, all 20 are delivered (at-least-once; every alert
  carries a stable id, the same in the store and in every delivery of it).
* An agent killed with SIGKILL while its receiver is down: the next agent on
  the same store delivers what the first could not.
  The webhook keeps its default `max_retries`: giving up after a few retries
  is exactly how alerts were lost.
* Files the agent creates (store and its -wal/-shm, the JSON-lines file and
  its rotations, the capture) are 0600 and the directories it creates 0700,
  whatever the umask; a symlink planted where one of them goes is never
  followed (the agent refuses with a clear error, or replaces it: the file the
  link points to is untouched either way).
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import (AgentProc, Receiver, require_kernel, rule, store_alerts,  # noqa: E402
                         wait_until, write_config, write_rules)

# the key of the stable alert id in the Falco JSON alert (store, webhook body);
# Falcosidekick's payload calls it "uuid"
ALERT_ID_KEY = "uuid"
DOWN_SECONDS = float(os.environ.get("VIGIL_TEST_WEBHOOK_DOWN_SECONDS", "60"))
MARKER = "Outbox marker"


def setup_dir(d: Path, receiver: Receiver) -> Path:
    write_rules(d / "rules.yaml", [
        rule(MARKER, f"evt.type in (open, openat) and evt.is_open_read = true "
                     f"and fd.name startswith {d}/ob-",
             "Outbox marker opened (file=%fd.name pid=%proc.pid)", "CRITICAL"),
    ])
    return write_config(d / "vigil.yaml", {
        "rules": [str(d / "rules.yaml")],
        "outputs": {"stdout": {"format": "json"},
                    "webhook": {"url": receiver.url, "backoff": 0.2, "max_backoff": 1.0,
                                "timeout": 1}},
        "store": {"path": str(d / "alerts.db")},
    })


def fire(d: Path, agent: AgentProc, first: int, n: int) -> None:
    """n alerts, one per marker file ob-<i>, seen on the agent's stdout."""
    for i in range(first, first + n):
        f = d / f"ob-{i}"
        f.write_text("x")
        subprocess.run(["cat", str(f)], stdout=subprocess.DEVNULL, check=True)
    names = {str(d / f"ob-{i}") for i in range(first, first + n)}
    wait_until(lambda: names <= {a["output_fields"].get("fd.name") for a in agent.alerts(MARKER)},
               10, what=f"alerts {first}..{first + n - 1}")


def delivered(receiver: Receiver) -> dict:
    """{alert id: [bodies]} of the marker alerts the receiver got."""
    out: dict = {}
    for b in receiver.received(MARKER):
        out.setdefault(b.get(ALERT_ID_KEY), []).append(b)
    return out


def check_deliveries(d: Path, receiver: Receiver, n: int, timeout: float) -> None:
    files = {str(d / f"ob-{i}") for i in range(n)}

    def all_there():
        got = {b["output_fields"].get("fd.name") for b in receiver.received(MARKER)}
        return files <= got
    try:
        wait_until(all_there, timeout, interval=0.2, what="every alert delivered")
    except AssertionError:
        got = {b["output_fields"].get("fd.name") for b in receiver.received(MARKER)}
        raise AssertionError(f"{len(files - got)} of {n} alerts never delivered: "
                             f"{sorted(files - got)}") from None
    by_id = delivered(receiver)
    assert None not in by_id, f"a delivered alert has no {ALERT_ID_KEY!r} key"
    assert len(by_id) == n, f"{len(by_id)} distinct ids for {n} alerts"
    for aid, bodies in by_id.items():
        assert all(b == bodies[0] for b in bodies), f"redeliveries of {aid} differ"
    stored = store_alerts(d / "alerts.db", "--rule", MARKER, "--limit", "0")
    assert {a.get(ALERT_ID_KEY) for a in stored} == set(by_id), \
        "the store and the deliveries do not carry the same alert ids"


def test_receiver_down_and_agent_restart_lose_nothing(tmp_path):
    require_kernel()
    d = tmp_path
    receiver = Receiver(start=False)     # port reserved, connections refused
    cfg = setup_dir(d, receiver)
    a1 = a2 = None
    try:
        a1 = AgentProc(["run", "-c", cfg], d, name="agent1", ready="running with")
        t_down = time.monotonic()
        fire(d, a1, 0, 10)
        assert a1.stop(signal.SIGTERM, timeout=30) == 0, a1.stderr()
        a2 = AgentProc(["run", "-c", cfg], d, name="agent2", ready="running with")
        fire(d, a2, 10, 10)
        assert len(store_alerts(d / "alerts.db", "--rule", MARKER, "--limit", "0")) == 20
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - t_down)))
        assert receiver.received() == []
        receiver.start()
        check_deliveries(d, receiver, 20, timeout=15)
        assert a2.stop(signal.SIGTERM, timeout=30) == 0, a2.stderr()
    finally:
        for a in (a1, a2):
            if a is not None:
                a.kill()
        receiver.close()


def test_sigkilled_agent_alerts_are_delivered_by_the_next(tmp_path):
    require_kernel()
    d = tmp_path
    receiver = Receiver(start=False)
    cfg = setup_dir(d, receiver)
    a1 = a2 = None
    try:
        a1 = AgentProc(["run", "-c", cfg], d, name="agent1", ready="running with")
        fire(d, a1, 0, 5)
        a1.proc.kill()                       # a crash: no drain, no goodbye
        a1.wait(10)
        a2 = AgentProc(["run", "-c", cfg], d, name="agent2", ready="running with")
        time.sleep(2)
        receiver.start()
        check_deliveries(d, receiver, 5, timeout=10)
    finally:
        for a in (a1, a2):
            if a is not None:
                a.kill()
        receiver.close()


# --- file modes --------------------------------------------------------------------

def mode(p: Path) -> str:
    return oct(stat.S_IMODE(os.lstat(p).st_mode))


def test_files_0600_and_directories_0700(tmp_path):
    require_kernel()
    d = tmp_path
    new = d / "new"                      # does not exist: the agent creates it
    store = new / "state" / "alerts.db"
    jsonl = new / "log" / "alerts.jsonl"
    capture = d / "capture.jsonl"
    write_rules(d / "rules.yaml", [
        rule(MARKER, f"evt.type in (open, openat) and evt.is_open_read = true "
                     f"and fd.name startswith {d}/ob-",
             "Outbox marker opened (file=%fd.name pid=%proc.pid)", "CRITICAL")])
    cfg = write_config(d / "vigil.yaml", {
        "rules": [str(d / "rules.yaml")],
        "outputs": {"stdout": {"format": "json"},
                    "file": {"path": str(jsonl), "max_bytes": 2048, "backups": 2}},
        "store": {"path": str(store)},
    })
    old = os.umask(0o022)                # the usual umask: 0644 files, 0755 directories
    try:
        agent = AgentProc(["run", "-c", cfg, "--capture", capture], d, ready="running with")
    finally:
        os.umask(old)
    try:
        fire(d, agent, 0, 12)
        wal, shm = Path(f"{store}-wal"), Path(f"{store}-shm")
        wait_until(lambda: wal.exists() and shm.exists(), 5, what="the store's -wal and -shm")
        running = {p: mode(p) for p in (store, wal, shm)}
        assert agent.stop(signal.SIGTERM, timeout=30) == 0, agent.stderr()
    finally:
        agent.kill()
    rotated = Path(f"{jsonl}.1")
    assert rotated.exists(), "the JSON-lines file was expected to rotate"
    files = {**running, **{p: mode(p) for p in (jsonl, rotated, capture)}}
    assert all(m == "0o600" for m in files.values()), {str(p): m for p, m in files.items()}
    dirs = {str(p): mode(p) for p in (new, store.parent, jsonl.parent)}
    assert all(m == "0o700" for m in dirs.values()), dirs


PLANTS = ["store", "store-wal", "store-shm", "file-output", "capture"]


@pytest.mark.parametrize("dangling", [False, True], ids=["to-empty-file", "dangling"])
@pytest.mark.parametrize("where", PLANTS)
def test_planted_symlink_is_not_followed(tmp_path, where, dangling):
    """The link points at an empty file (SQLite would make a database of it,
    outputs would write into it) or at nothing (following it creates the file)."""
    require_kernel()
    d = tmp_path
    victim = d / "victim"
    if not dangling:
        victim.write_bytes(b"")
        os.chmod(victim, 0o644)
        before = (victim.read_bytes(), stat.S_IMODE(victim.stat().st_mode))
    store, jsonl, capture = d / "alerts.db", d / "alerts.jsonl", d / "capture.jsonl"
    planted = {"store": store, "store-wal": Path(f"{store}-wal"),
               "store-shm": Path(f"{store}-shm"), "file-output": jsonl,
               "capture": capture}[where]
    os.symlink(victim, planted)
    write_rules(d / "rules.yaml", [
        rule(MARKER, f"evt.type in (open, openat) and evt.is_open_read = true "
                     f"and fd.name startswith {d}/ob-",
             "Outbox marker opened (file=%fd.name pid=%proc.pid)", "CRITICAL")])
    cfg = write_config(d / "vigil.yaml", {
        "rules": [str(d / "rules.yaml")],
        "outputs": {"stdout": {"format": "json"}, "file": {"path": str(jsonl)}},
        "store": {"path": str(store)},
    })
    agent = None
    try:
        try:
            agent = AgentProc(["run", "-c", cfg, "--capture", capture], d,
                              ready="running with")
        except AssertionError:
            err = (d / "agent.stderr").read_text(errors="replace")
            # refused: a clear error naming the path, never a traceback
            assert "Traceback" not in err, err
            assert str(planted) in err or "symlink" in err.lower(), err
        if agent is not None:
            fire(d, agent, 0, 3)
            assert agent.stop(signal.SIGTERM, timeout=30) == 0, agent.stderr()
            assert "Traceback" not in agent.stderr()
    finally:
        if agent is not None:
            agent.kill()
    if dangling:
        assert not victim.exists(), f"the agent created a file through the symlink at {planted}"
    else:
        after = (victim.read_bytes(), stat.S_IMODE(victim.stat().st_mode))
        assert after == before, f"the agent wrote through the symlink planted at {planted}"
    leftovers = [p.name for p in d.iterdir() if p.name.startswith("victim") and p != victim]
    assert not leftovers, leftovers
