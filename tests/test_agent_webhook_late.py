"""A real `vigil run --output text` whose webhook receiver is down when the
alert fires (port reserved, not listening) and comes up 2 s later: the alert
is in the store at once, reaches the receiver after the retries, and the text
line is Falco's one-liner.  Ctrl-C (SIGINT) then stops the agent cleanly."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vigil.alerts.alert import format_time

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import (FALCO_KEYS, AgentProc, Receiver, bpf_link_ids, require_kernel,  # noqa: E402
                         rule, store_alerts, system_link_ids, wait_until, write_config,
                         write_rules)

TEXT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z): (\w+) (.*)$")


@pytest.fixture(scope="module")
def late(tmp_path_factory):
    require_kernel()
    d = tmp_path_factory.mktemp("agent-late")
    receiver = Receiver(start=False)
    rules = write_rules(d / "rules.yaml", [
        rule("Late marker", f"evt.type in (open, openat) and fd.name startswith {d}/late-",
             "Late marker opened (file=%fd.name pid=%proc.pid)", "CRITICAL", ["late"]),
    ])
    cfg = write_config(d / "vigil.yaml", {
        "outputs": {"webhook": {"url": receiver.url, "backoff": 0.2, "max_backoff": 0.5,
                                "max_retries": 30, "timeout": 1}},
        "store": {"path": str(d / "alerts.db")},
    })
    (d / "late-1").write_text("x")
    agent = AgentProc(["run", "-c", cfg, "-r", rules, "--output", "text"], d)
    yield d, agent, receiver
    agent.kill()
    receiver.close()


def test_alert_survives_late_receiver(late):
    d, agent, receiver = late
    p = subprocess.Popen(["cat", str(d / "late-1")], stdout=subprocess.DEVNULL)
    p.wait()
    wait_until(lambda: "Late marker opened" in agent.stdout(), 5, what="text alert")
    t_fired = time.monotonic()
    # the receiver is down, the alert is already in the store
    stored = store_alerts(d / "alerts.db")
    assert [a["rule"] for a in stored] == ["Late marker"]
    assert receiver.received() == []
    time.sleep(max(0.0, 2.0 - (time.monotonic() - t_fired)))
    assert receiver.received() == []
    receiver.start()
    (got,) = wait_until(receiver.received, 6, what="the retried webhook delivery")
    assert set(got) == FALCO_KEYS
    assert got == stored[0]
    assert got["priority"] == "Critical"
    assert got["output_fields"] == {"evt.time": got["output_fields"]["evt.time"],
                                    "fd.name": str(d / "late-1"), "proc.pid": p.pid}
    assert got["time"] == format_time(got["output_fields"]["evt.time"])


def test_text_output_is_falco_one_liner(late):
    d, agent, receiver = late
    lines = [l for l in agent.stdout().splitlines() if l.strip()]
    assert len(lines) == 1, lines
    m = TEXT_LINE.match(lines[0])
    assert m, lines[0]
    stored = store_alerts(d / "alerts.db")[0]
    assert m.group(1) == stored["time"]
    assert m.group(2) == "Critical"
    assert m.group(3) == f"Late marker opened (file={d}/late-1 pid={stored['output_fields']['proc.pid']})"
    # the JSON `output` is the same line
    assert stored["output"] == lines[0]


def test_ctrl_c_exits_zero_and_detaches(late):
    d, agent, receiver = late
    links = bpf_link_ids(agent.pid)
    assert links
    rc = agent.stop(signal.SIGINT)
    assert rc == 0, agent.stderr()
    assert agent.stop_seconds < 2.5
    assert not (links & system_link_ids())
    assert "Traceback" not in agent.stderr()


def test_text_repeats_are_folded(tmp_path):
    """Rate limiting in text form: `(repeated N times)`, counts adding up."""
    require_kernel()
    rules = write_rules(tmp_path / "rules.yaml", [
        rule("Burst marker", f"evt.type in (open, openat) and fd.name startswith {tmp_path}/b-",
             "Burst (file=%fd.name pid=%proc.pid)", "WARNING"),
    ])
    cfg = write_config(tmp_path / "vigil.yaml", {"store": {"path": str(tmp_path / "a.db")},
                                                 "rate_limit": {"window": "500ms"}})
    (tmp_path / "b-1").write_text("x")
    (tmp_path / "b-2").write_text("x")
    agent = AgentProc(["run", "-c", cfg, "-r", rules, "--output", "text"], tmp_path)
    try:
        code = f"for _ in range(20): open({str(tmp_path / 'b-1')!r}).close()"
        subprocess.run([sys.executable, "-c", code], check=True)

        def total():
            n = 0
            for line in agent.stdout().splitlines():
                m = re.search(r"\(repeated (\d+) times\)$", line)
                n += int(m.group(1)) if m else 1
            return n >= 20 and n
        assert wait_until(total, 5, what="20 folded alerts") == 20
        lines = agent.stdout().splitlines()
        assert 1 < len(lines) < 20
        assert TEXT_LINE.match(lines[0]) and "repeated" not in lines[0]
        # a burst still folding when SIGTERM comes is flushed, not lost
        code = f"for _ in range(30): open({str(tmp_path / 'b-2')!r}).close()"
        subprocess.run([sys.executable, "-c", code], check=True)
        wait_until(lambda: "b-2" in agent.stdout(), 5, what="first b-2 alert")
        assert agent.stop(signal.SIGTERM) == 0
        stored = [a for a in store_alerts(tmp_path / "a.db", "--limit", "0")
                  if a["output_fields"]["fd.name"].endswith("b-2")]
        assert sum(a["output_fields"].get("vigil.repeat_count", 1) for a in stored) == 30
    finally:
        agent.kill()


def test_sigterm_with_hung_webhook_is_bounded(tmp_path):
    """A receiver that accepts connections and never answers: the alert is in
    the store at once, and SIGTERM still ends the agent (exit 0) after the
    webhook's bounded drain (5 s) instead of hanging."""
    require_kernel()
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)                     # the kernel completes handshakes; nobody reads
    port = hung.getsockname()[1]
    rules = write_rules(tmp_path / "rules.yaml", [
        rule("Hung marker", f"evt.type in (open, openat) and fd.name startswith {tmp_path}/h-",
             "Hung (file=%fd.name)", "WARNING"),
    ])
    cfg = write_config(tmp_path / "vigil.yaml", {
        "outputs": {"webhook": {"url": f"http://127.0.0.1:{port}/", "timeout": 1}},
        "store": {"path": str(tmp_path / "a.db")}})
    (tmp_path / "h-1").write_text("x")
    agent = AgentProc(["run", "-c", cfg, "-r", rules], tmp_path)
    try:
        subprocess.run(["cat", str(tmp_path / "h-1")], stdout=subprocess.DEVNULL, check=True)
        wait_until(lambda: "Hung (file=" in agent.stdout(), 5, what="the alert")
        assert [a["rule"] for a in store_alerts(tmp_path / "a.db")] == ["Hung marker"]
        rc = agent.stop(signal.SIGTERM, timeout=15)
        assert rc == 0, agent.stderr()
        assert agent.stop_seconds < 8, agent.stop_seconds
    finally:
        agent.kill()
        hung.close()
