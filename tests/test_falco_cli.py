"""Falco's command-line habits, through the real `vigil` command: -o key=value,
--dry-run, -T/-t/-D, rules validate/list on directories with every error,
json_include_* in the JSON alerts, evt.time in output_fields, and the start-up
line, the reload line and the exit summary of a live `vigil run`."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vigil.alerts.alert import format_time

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import VIGIL, require_kernel, rule, vigil, wait_until, write_rules  # noqa: E402

RULES = [
    rule("Tagged a", "evt.type = openat and fd.name startswith /i9c/a", "a file=%fd.name",
         tags=["alpha", "files"]),
    rule("Tagged b", "evt.type = openat and fd.name startswith /i9c/b", "b file=%fd.name",
         tags=["beta", "files"]),
    rule("Other c", "evt.type = openat and fd.name startswith /i9c/c", "c file=%fd.name",
         tags=["gamma"]),
]


@pytest.fixture()
def rules(tmp_path):
    return write_rules(tmp_path / "rules.yaml", RULES)


@pytest.fixture()
def capture(tmp_path):
    """A recorded stream with one open below each rule's prefix."""
    from vigil.events import Event, Kind
    from vigil.events.capture import CaptureWriter
    from vigil.state.proctable import ProcessTable
    path = tmp_path / "c.jsonl.gz"
    w = CaptureWriter(str(path), ProcessTable())
    t = time.time_ns()
    for i, d in enumerate("abc"):
        w(Event(Kind.OPEN, time=t + i * 10_000_000, pid=500 + i, tid=500 + i, ppid=1, uid=0,
                gid=0, comm="cat", path=f"/i9c/{d}/f", flags=0, ret=3, fd=3, syscall="openat"))
    w.close()
    return path


def replay(capture, rules, *args):
    r = vigil("replay", capture, "-r", rules, "--output", "json", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


# --- -T / -t / -D ---------------------------------------------------------------

@pytest.mark.parametrize("args,fired", [
    ((), ["Tagged a", "Tagged b", "Other c"]),
    (("-T", "alpha"), ["Tagged b", "Other c"]),
    (("-T", "alpha", "-T", "gamma"), ["Tagged b"]),
    (("-t", "files"), ["Tagged a", "Tagged b"]),
    (("-t", "beta", "-t", "gamma"), ["Tagged b", "Other c"]),
    (("-D", "Tagged"), ["Other c"]),
    (("-D", "*b"), ["Tagged a", "Other c"]),
    (("-D", "Other", "-T", "alpha"), ["Tagged b"]),
])
def test_rule_selection(capture, rules, args, fired):
    assert [a["rule"] for a in replay(capture, rules, *args)] == fired


def test_t_with_T_is_a_usage_error(capture, rules):
    r = vigil("replay", capture, "-r", rules, "-t", "alpha", "-T", "beta")
    assert r.returncode == 2 and "-t cannot be mixed with -T or -D" in r.stderr


def test_dry_run_counts_the_selection(rules):
    r = vigil("run", "--dry-run", "-r", rules, "-T", "files")
    assert r.returncode == 0, r.stderr
    assert "3 rules (1 enabled)" in r.stderr and "event kinds: " in r.stderr


# --- -o key=value ----------------------------------------------------------------

def test_o_sets_keys_and_lists(tmp_path, rules, capture):
    other = write_rules(tmp_path / "other.yaml", [rule("Other d", "evt.type = openat and "
                                                       "fd.name startswith /i9c/a", "d")])
    r = vigil("run", "--dry-run", "-o", f"rules=[{rules},{other}]")
    assert r.returncode == 0, r.stderr
    assert f"4 rules (4 enabled) from {rules}, {other}" in r.stderr
    # dotted keys, YAML values
    got = replay(capture, rules, "-o", "rule_matching=all", "-o", "min_priority=warning",
                 "-o", "json_include_tags_property=false")
    assert [a["rule"] for a in got] == ["Tagged a", "Tagged b", "Other c"]
    assert all("tags" not in a for a in got)


def test_o_overrides_the_file_and_names_the_key(tmp_path, rules):
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text("min_priority: debug\noutputs:\n  webhook: {url: 'http://x/'}\n")
    r = vigil("run", "--dry-run", "-c", cfg, "-r", rules, "-o", "min_priority=bogus")
    assert r.returncode == 1
    assert r.stderr.strip() == "vigil: error: -o: min_priority: unknown priority 'bogus'"
    r = vigil("run", "--dry-run", "-c", cfg, "-r", rules, "-o", "outputs.webhook.urll=http://y/")
    assert r.returncode == 1 and r.stderr.startswith("vigil: error: -o: outputs.webhook: unknown key 'urll'")
    r = vigil("run", "--dry-run", "-c", cfg, "-r", rules, "-o", "sensors.args_max=[1")
    assert r.returncode == 1 and "-o: sensors.args_max: value is not valid YAML" in r.stderr
    r = vigil("run", "--dry-run", "-r", rules, "-o", "no-equals-sign")
    assert r.returncode == 1 and "expected key=value" in r.stderr
    r = vigil("run", "--dry-run", "-r", rules, "-o", "sensors.args_max=2")
    assert r.returncode == 1 and "-o: sensors.args_max: expected 16..4096" in r.stderr
    # a mistake in the file is still reported at its line
    cfg.write_text("min_priority: bogus\n")
    r = vigil("run", "--dry-run", "-c", cfg, "-r", rules)
    assert r.returncode == 1 and f"{cfg}:1: min_priority" in r.stderr


# --- --dry-run ---------------------------------------------------------------------

def test_dry_run_ok_and_errors(tmp_path, rules):
    r = vigil("run", "--dry-run", "-r", rules)
    assert r.returncode == 0 and r.stdout == ""
    assert r.stderr.startswith("vigil: dry run: config (defaults) ok; 3 rules (3 enabled)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: A\n  desc: d\n  condition: proc.nam = x\n  output: o\n  priority: INFO\n"
                   "- rule: B\n  desc: d\n  output: o\n  priority: INFO\n"
                   "- rule: C\n  desc: d\n  condition: proc.name = x\n  output: o\n  priority: BAD\n")
    r = vigil("run", "--dry-run", "-r", bad)
    assert r.returncode == 1
    assert f"{bad}:3: rule 'A': unknown field 'proc.nam'" in r.stderr
    assert f"{bad}:6: rule 'B': missing required key 'condition'" in r.stderr
    assert f"{bad}:14: rule 'C': invalid priority 'BAD'" in r.stderr
    r = vigil("run", "--dry-run", "-r", rules, env={"VIGIL_BPF_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and "BPF objects missing in" in r.stderr and "proc.bpf.o" in r.stderr


# --- rules validate / list -----------------------------------------------------------

def test_rules_commands_take_directories_and_report_every_error(tmp_path, rules):
    d = tmp_path / "dir"
    d.mkdir()
    write_rules(d / "1.yaml", RULES[:2])
    write_rules(d / "2.yml", RULES[2:])
    (d / "notes.txt").write_text("not rules")
    r = vigil("rules", "validate", "--json", d)
    assert r.returncode == 0, r.stdout
    out = json.loads(r.stdout)
    assert out["files"] == [str(d / "1.yaml"), str(d / "2.yml")] and out["rules_loaded"] == 3
    r = vigil("rules", "list", "-r", d, "--json")
    assert [x["rule"] for x in json.loads(r.stdout)] == ["Tagged a", "Tagged b", "Other c"]
    (d / "3.yaml").write_text(
        "- rule: A\n  desc: d\n  condition: proc.nam = x\n  output: o\n  priority: INFO\n"
        "- rule: B\n  desc: d\n  condition: proc.nmae = x\n  output: o\n  priority: INFO\n"
        "- rule: C\n  desc: d\n  output: o\n  priority: INFO\n"
        "- macro: m\n  condition: (\n")
    r = vigil("rules", "validate", "--json", d)
    assert r.returncode == 1
    errs = json.loads(r.stdout)["errors"]
    assert [(e["file"], e["line"]) for e in errs] == [(str(d / "3.yaml"), n) for n in (3, 8, 11, 16)]
    def errors(text):
        return [line for line in text.splitlines() if line.startswith("error: ")]
    r = vigil("rules", "validate", d)
    assert r.returncode == 1 and len(errors(r.stderr)) == 4
    r = vigil("rules", "list", "-r", d)
    assert r.returncode == 1 and len(errors(r.stderr)) == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    r = vigil("rules", "validate", empty)
    assert r.returncode == 1 and "no rules files" in r.stderr


# --- the JSON alert ---------------------------------------------------------------------

def test_json_include_properties(capture, rules):
    (a, *_) = replay(capture, rules)
    assert set(a) == {"hostname", "output", "output_fields", "priority", "rule", "source",
                      "tags", "time", "uuid"}
    # Falco's output_fields carry evt.time (ns) besides the output's own fields
    assert a["output_fields"] == {"evt.time": a["output_fields"]["evt.time"], "fd.name": "/i9c/a/f"}
    assert format_time(a["output_fields"]["evt.time"]) == a["time"]
    assert list(a) == sorted(a)
    (a, *_) = replay(capture, rules, "-o", "json_include_output_property=false",
                     "-o", "json_include_message_property=true",
                     "-o", "json_include_tags_property=false")
    assert set(a) == {"hostname", "message", "output_fields", "priority", "rule", "source", "time",
                      "uuid"}
    assert a["message"] == "a file=/i9c/a/f"
    (a, *_) = replay(capture, rules, "-o", "json_include_output_fields_property=false")
    assert "output_fields" not in a and a["output"].endswith(": Warning a file=/i9c/a/f")
    r = vigil("replay", capture, "-r", rules, "-o", "json_include_tags_property=maybe")
    assert r.returncode == 1 and "-o: json_include_tags_property: expected true or false" in r.stderr


# --- a live run: start-up line, reload line, exit summary -----------------------------------

def test_live_run_lines(tmp_path):
    require_kernel()
    marker = tmp_path / "mark"
    rf = write_rules(tmp_path / "live.yaml", [
        rule("I9c marker", f"evt.type = openat and proc.name = cat and fd.name startswith {marker}",
             "m %fd.name",
             priority="ERROR")])
    err = tmp_path / "err"
    with open(err, "w") as e:
        p = subprocess.Popen([VIGIL, "run", "-r", rf, "--no-store", "--duration", "30"],
                             stdout=subprocess.DEVNULL, stderr=e)
    try:
        wait_until(lambda: "running with" in err.read_text(), 30, what="the start-up line")
        text = err.read_text()
        assert "vigil 0" in text and f"rules from {rf}" in text
        for i in range(3):
            marker.with_name(f"mark{i}").write_text("x")
            subprocess.run(["cat", str(marker.with_name(f"mark{i}"))], stdout=subprocess.DEVNULL)
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: "vigil: rules reloaded: 1 rules from 1 file (1 enabled)" in err.read_text(), 10,
                   what="the reload line (without -v)")
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        p.wait(20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = err.read_text().splitlines()
    assert p.returncode == 0, lines
    (summary,) = [line for line in lines if line.startswith("vigil: stopped after ")]
    assert summary.endswith(" dropped in the kernel, 3 alerts") and " events, " in summary
    assert "vigil: alerts by priority: error 3" in lines
    assert "vigil: alerts by rule: I9c marker 3" in lines
