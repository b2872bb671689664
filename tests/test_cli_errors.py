"""Bad input to the CLI: clear messages with file:line, exit 1 (2 for usage),
never a traceback.  None of these reach the kernel."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import rule, vigil, write_rules  # noqa: E402

GOOD_RULE = rule("Good", "evt.type in (open, openat) and fd.name startswith /nonexistent-dir/",
                 "good (file=%fd.name)")


@pytest.fixture
def good_rules(tmp_path):
    return write_rules(tmp_path / "good.yaml", [GOOD_RULE])


@pytest.fixture
def empty_cfg(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# defaults\n")
    return p


def _no_traceback(r):
    assert "Traceback" not in r.stderr, r.stderr


# --- vigil run: rules and config errors ---------------------------------------------

def test_run_rules_unknown_field(tmp_path, empty_cfg):
    bad = write_rules(tmp_path / "bad.yaml",
                      "- rule: Fine\n  desc: d\n  condition: evt.type = execve\n  output: o\n"
                      "  priority: INFO\n"
                      "\n"
                      "- rule: Broken\n"
                      "  desc: d\n"
                      "  condition: evt.type = open and proc.no_such_field = x\n"
                      "  output: o\n"
                      "  priority: WARNING\n")
    r = vigil("run", "-c", empty_cfg, "-r", bad, "--no-store", "--duration", "1")
    assert r.returncode == 1
    assert f"{bad}:9:" in r.stderr
    assert "proc.no_such_field" in r.stderr
    assert r.stdout == ""
    _no_traceback(r)


def test_run_rules_unknown_output_field_and_missing_file(tmp_path, empty_cfg):
    bad = write_rules(tmp_path / "bad.yaml", [
        rule("Out", "evt.type = execve", "x=%proc.nosuch")])
    r = vigil("run", "-c", empty_cfg, "-r", bad, "--no-store", "--duration", "1")
    assert r.returncode == 1 and f"{bad}:" in r.stderr and "proc.nosuch" in r.stderr, r.stderr
    r = vigil("run", "-c", empty_cfg, "-r", tmp_path / "missing.yaml", "--no-store")
    assert r.returncode == 1 and "missing.yaml" in r.stderr and "cannot read" in r.stderr
    _no_traceback(r)


@pytest.mark.parametrize("text,line,key", [
    ("sensors:\n  ringbuf_size: 1000\n", 2, "sensors.ringbuf_size"),
    ("store:\n  enabled: false\noutputs:\n  webhook:\n    enabled: true\n"
     "    url: http://127.0.0.1:9/\n    timeout: -1\n", 7, "outputs.webhook.timeout"),
    ("outputs:\n  webhook: {enabled: true, timeout: -1}\n", 2, "outputs.webhook"),
    ("store:\n  enabled: false\noutputs:\n  file:\n    path: /tmp/x.jsonl\n    backups: -3\n", 6,
     "outputs.file.backups"),
    ("rate_limit:\n  window: soon\n", 2, "rate_limit.window"),
    ("bogus: 1\n", 1, "bogus"),
    ("min_priority: loud\n", 1, "min_priority"),
])
def test_run_bad_config_value(tmp_path, good_rules, text, line, key):
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(text)
    r = vigil("run", "-c", cfg, "-r", good_rules, "--no-store", "--duration", "1")
    assert r.returncode == 1, r.stderr
    assert f"vigil: error: {cfg}:{line}: {key}" in r.stderr, r.stderr
    _no_traceback(r)


def test_run_missing_config_and_bad_flags(tmp_path, good_rules, empty_cfg):
    r = vigil("run", "-c", tmp_path / "nope.yaml", "-r", good_rules)
    assert r.returncode == 1 and "nope.yaml: cannot read config" in r.stderr
    r = vigil("run", "-c", empty_cfg, "-r", good_rules, "--min-priority", "loud", "--no-store")
    assert r.returncode == 1 and "min_priority" in r.stderr and "loud" in r.stderr
    r = vigil("run", "-c", empty_cfg, "--output", "xml")
    assert r.returncode == 2
    r = vigil("run", "-c", empty_cfg, "-r", good_rules, "--store", "/proc/no/such/x.db")
    assert r.returncode == 1 and "store.path" in r.stderr and "/proc/no/such/x.db" in r.stderr
    _no_traceback(r)


def test_capture_unknown_kind():
    r = vigil("capture", "-o", "/dev/null", "--kinds", "exec,bogus")
    assert r.returncode == 1 and "unknown event kind 'bogus'" in r.stderr


# --- vigil rules validate / list -----------------------------------------------------

def test_rules_validate_ok_and_json(tmp_path, good_rules):
    r = vigil("rules", "validate", good_rules)
    assert r.returncode == 0 and "ok (1 rules loaded" in r.stdout
    r = vigil("rules", "validate", "--json", good_rules)
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["rules_loaded"] == 1 and out["errors"] == []
    assert out["required_kinds"] == ["open"]
    assert out["open_path_prefixes"] == ["/nonexistent-dir/"]


def test_rules_validate_errors(tmp_path, good_rules):
    bad = write_rules(tmp_path / "bad.yaml", "- rule: X\n  desc: d\n  condition: evt.type = \n"
                      "  output: o\n  priority: WARNING\n")
    r = vigil("rules", "validate", good_rules, bad)
    assert r.returncode == 1 and f"{bad}:3:" in r.stderr
    r = vigil("rules", "validate", "--json", good_rules, bad)
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["rules_loaded"] == 0
    assert out["errors"][0]["file"] == str(bad) and out["errors"][0]["line"] == 3
    r = vigil("rules", "validate", tmp_path / "missing.yaml")
    assert r.returncode == 1 and "cannot read" in r.stderr
    r = vigil("rules", "validate")
    assert r.returncode == 2
    _no_traceback(r)


def test_rules_list(good_rules):
    r = vigil("rules", "list", "--rules", good_rules, "--json")
    assert r.returncode == 0
    (row,) = json.loads(r.stdout)
    assert row["rule"] == "Good" and row["kinds"] == ["open"] and row["priority"] == "warning"


# --- vigil replay: unreadable captures -----------------------------------------------

def _synthetic_capture(path: Path, n: int = 2000) -> Path:
    from vigil.events.capture import CaptureWriter
    from vigil.events import Event, Kind
    from vigil.state.proctable import ProcessTable
    w = CaptureWriter(str(path), ProcessTable())
    t = time.time_ns()
    for i in range(n):
        w(Event(Kind.OPEN, time=t + i, pid=1000 + i, tid=1000 + i, ppid=1, uid=0, gid=0,
                comm="cat", path=f"/nonexistent-dir/f{i}", flags=0, ret=3, fd=3,
                syscall="openat"))
    w.close()
    return path


def test_replay_synthetic_capture(tmp_path, good_rules):
    cap = _synthetic_capture(tmp_path / "s.jsonl.gz")
    r = vigil("replay", cap, "-r", good_rules, "--output", "json")
    assert r.returncode == 0, r.stderr
    alerts = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(alerts) == 2000
    assert alerts[7]["output_fields"] == {"evt.time": alerts[0]["output_fields"]["evt.time"] + 7,
                                          "fd.name": "/nonexistent-dir/f7"}


@pytest.mark.parametrize("content,expect", [
    (b"garbage\n", "cannot read capture"),
    (b"", "not a vigil capture file"),
    (b'{"something": "else"}\n', "not a vigil capture file"),
    (b'{"vigil_capture": 1, "procs": []}\n{"e": {"type": "nope"}}\n', ":2: bad record"),
    (b'{"vigil_capture": 1, "procs": []}\n{"e": {"type": "open"}}\n{"e": \n', ":3: bad record"),
    (b'{"vigil_capture": 1, "procs": 5}\n', ":1: bad process table"),
    (b'{"vigil_capture": 1, "procs": []}\n{"e": {"type": "open", "time": "yesterday"}}\n',
     ":2: bad record"),
    (b'{"vigil_capture": 1, "procs": []}\n[1, 2]\n', ":2: bad record"),
    (b"\xff\xfe\xfd\n", "cannot read capture"),
    (b"\x1f\x8b\x08\x00garbage", "cannot read capture"),
])
def test_replay_bad_capture(tmp_path, good_rules, content, expect):
    cap = tmp_path / ("bad.jsonl.gz" if content.startswith(b"\x1f\x8b") else "bad.jsonl")
    cap.write_bytes(content)
    r = vigil("replay", cap, "-r", good_rules)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith(f"vigil: error: {cap}"), r.stderr
    assert expect in r.stderr
    _no_traceback(r)


def test_replay_corrupt_and_truncated_gzip(tmp_path, good_rules):
    data = _synthetic_capture(tmp_path / "s.jsonl.gz").read_bytes()
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(data[:2000] + bytes(3000) + data[5000:])
    r = vigil("replay", corrupt, "-r", good_rules)
    assert r.returncode == 1 and f"vigil: error: {corrupt}:" in r.stderr
    _no_traceback(r)
    # cut short (agent killed while writing): replays what it has, says so
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    r = vigil("replay", cut, "-r", good_rules, "--output", "json")
    assert r.returncode == 0, r.stderr
    n = len(r.stdout.splitlines())
    assert 0 < n < 2000
    assert "ends early" in r.stderr


def test_replay_missing_and_directory(tmp_path, good_rules):
    r = vigil("replay", tmp_path / "nope.jsonl", "-r", good_rules)
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = vigil("replay", tmp_path, "-r", good_rules)
    assert r.returncode == 2 and "is a directory" in r.stderr


def test_replay_bad_rules(tmp_path):
    cap = _synthetic_capture(tmp_path / "s.jsonl", 3)
    bad = write_rules(tmp_path / "bad.yaml", [rule("B", "evt.type = open and nope.x = 1", "o")])
    r = vigil("replay", cap, "-r", bad)
    assert r.returncode == 1 and f"{bad}:" in r.stderr and "nope.x" in r.stderr


# --- vigil alerts --------------------------------------------------------------------

def test_alerts_bad_store_and_flags(tmp_path):
    r = vigil("alerts", "--store", tmp_path / "none.db")
    assert r.returncode == 1 and "does not exist" in r.stderr
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    r = vigil("alerts", "--store", tmp_path / "junk.db")
    assert r.returncode == 1 and "junk.db" in r.stderr
    _no_traceback(r)
    r = vigil("alerts", "--store", tmp_path / "none.db", "--since", "whenever")
    assert r.returncode == 2 and "--since" in r.stderr
    r = vigil("alerts", "--store", tmp_path / "none.db", "--priority", "loud")
    assert r.returncode == 2 and "--priority" in r.stderr


def test_replay_unopenable_store(tmp_path, good_rules):
    cap = _synthetic_capture(tmp_path / "s.jsonl", 3)
    (tmp_path / "file").write_text("")
    r = vigil("replay", cap, "-r", good_rules, "--store", tmp_path / "file" / "x.db")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "store.path: cannot open alert store" in r.stderr
    _no_traceback(r)


# --- durations on the command line read like vigil.yaml's -----------------------------

@pytest.mark.parametrize("cmd", [["trace", "exec"], ["capture", "-o", "/dev/null"],
                                 ["run", "--no-store"], ["trace", "--containers", "--hold"]])
def test_bad_duration_flag_is_a_usage_error(cmd, empty_cfg):
    args = cmd + (["1y"] if cmd[-1] == "--hold" else ["--duration", "1y"])
    if cmd[0] == "run":
        args += ["-c", empty_cfg]
    r = vigil(*args)
    assert r.returncode == 2 and "not a duration: '1y'" in r.stderr, r.stderr
    _no_traceback(r)


def test_hold_above_its_maximum(empty_cfg):
    r = vigil("trace", "--containers", "--hold", "11s")
    assert r.returncode == 2 and "more than 10s" in r.stderr, r.stderr

