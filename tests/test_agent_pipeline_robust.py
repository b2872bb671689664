"""Malformed events (missing fields, wrong types, process-table cycles) fed
through a Pipeline into an engine with many rules and a full alert pipeline
(JSON stdout, file, SQLite store): no exception escapes, errors are counted,
and the agent keeps judging good events correctly afterwards."""
from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.events import FIELDS, Event, Kind
from vigil.alerts.outputs.base import AlertPipeline, OutputDispatcher
from vigil.alerts.outputs.file import FileOutput
from vigil.alerts.outputs.stdout import StdoutOutput
from vigil.pipeline import Pipeline
from vigil.rules.engine import RuleEngine
from vigil.rules.loader import RulesError
from vigil.alerts.store import AlertStore

ROOT = Path(__file__).resolve().parent
SAMPLE = ROOT / "data" / "rules" / "sample_rules.yaml"
FIELDS_DIR = ROOT.parent / "src" / "vigil" / "rules" / "fields"
FIELDS_SRC = "\n".join(p.read_text() for p in sorted(FIELDS_DIR.glob("*.py")))
SETTINGS = settings(max_examples=int(os.environ.get("VIGIL_FUZZ_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# every field the engine knows, with an argument where it needs one
_ARGS = {"proc.aname": "[2]", "proc.apid": "[1]", "proc.aexe": "[2]", "proc.aexepath": "[2]",
         "proc.acmdline": "[3]", "container.label": "[app]", "evt.arg.": "name",
         "evt.rawarg.": "flags", "proc.env": "[HOME]"}


def _all_fields() -> list:
    names = sorted(set(re.findall(r'"((?:proc|fd|evt|user|group|container|thread|fs|dns|ev)'
                                  r'\.[a-z_.]*)"', FIELDS_SRC)))
    return [n + _ARGS.get(n, "") for n in names]


def _field_rules() -> tuple:
    """A rules file with one rule per usable field, plus one rule printing all of them."""
    usable = []
    for f in _all_fields():
        text = (f"- rule: probe\n  desc: d\n  condition: {f} exists\n  output: \"v=%{f}\"\n"
                "  priority: DEBUG\n")
        try:
            RuleEngine.from_text(text)
        except (RulesError, ValueError):
            continue
        usable.append(f)
    out = []
    for i, f in enumerate(usable):
        out.append(f"- rule: field {i} {f}\n  desc: d\n  condition: {f} exists\n"
                   f"  output: \"{f}=%{f}\"\n  priority: DEBUG\n  tags: [fuzz]\n")
    out.append("- rule: every field\n  desc: d\n  condition: evt.num >= 0\n  output: \""
               + " ".join(f"{f}=%{f}" for f in usable) + "\"\n  priority: DEBUG\n")
    return "\n".join(out), usable


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust-rules")
    text, usable = _field_rules()
    assert len(usable) > 60, usable
    (d / "fields.yaml").write_text(text)
    return d


class Rig:
    def __init__(self, rules_dir: Path, tmp: Path):
        self.pipe = Pipeline(set(), seed=False)
        self.engine = RuleEngine(min_priority="debug", proctable=self.pipe.proctable,
                                 rule_matching="all")
        self.engine.load([str(SAMPLE), str(rules_dir / "fields.yaml")])
        self.stream = io.StringIO()
        self.store = AlertStore(str(tmp / "a.db"), synchronous="off")
        self.file = FileOutput(str(tmp / "a.jsonl"), max_bytes=1 << 20, backups=1)
        self.alerts = AlertPipeline(OutputDispatcher(
            [StdoutOutput(stream=self.stream, format="json"), self.file], store=self.store))
        self.pipe.add_handler(self.on_event)

    def on_event(self, ev):
        for a in self.engine.evaluate(ev):
            self.alerts.emit(a)

    def errors(self) -> int:
        return self.pipe.handler_errors + sum(self.engine.rule_errors.values())

    def close(self):
        self.alerts.close(timeout=0)


@pytest.fixture
def rig(rules_dir, tmp_path):
    r = Rig(rules_dir, tmp_path)
    yield r
    r.close()


def _good_open(pid: int = 4242) -> Event:
    return Event(Kind.OPEN, time=time.time_ns(), pid=pid, tid=pid, ppid=1, uid=0, gid=0,
                 comm="evil", path="/etc/shadow", flags=0, ret=3, fd=3, syscall="openat")


def _assert_still_judges(rig: Rig) -> None:
    """A well-formed read of /etc/shadow still gives the sample rule's alert."""
    before = len(rig.stream.getvalue().splitlines())
    rig.pipe.process(_good_open())
    new = [json.loads(l) for l in rig.stream.getvalue().splitlines()[before:]]
    hits = [a for a in new if a["rule"] == "Read sensitive file untrusted"]
    assert len(hits) == 1, [a["rule"] for a in new]
    assert hits[0]["output_fields"]["fd.name"] == "/etc/shadow"


def _dispatch_ok(rig: Rig) -> None:
    """Every alert is accounted for by the store and by each output (a
    malformed event may make a write fail: then it is counted, not lost silently)."""
    s = rig.alerts.stats()
    n = s["received"]
    assert s["store"]["written"] + s["store"]["failed"] == n, s
    for name, o in s["outputs"].items():
        assert o["sent"] + o["failed"] + o["dropped"] == n, (name, s)


# --- events missing every optional field ---------------------------------------------

def test_missing_fields_are_not_errors(rig):
    """A header-only event of every kind: no error anywhere, and the rule
    printing every field still alerts (missing values print as <NA>)."""
    t = time.time_ns()
    for k in Kind:
        if k in (Kind.CGROUP_MKDIR, Kind.CGROUP_RMDIR):
            continue
        before = len(rig.stream.getvalue().splitlines())
        rig.pipe.process(Event(k, time=t, pid=4243, tid=4243, ppid=1, uid=0, gid=0, comm="x"))
        new = [json.loads(l) for l in rig.stream.getvalue().splitlines()[before:]]
        if not k.spec.falco_types:      # failed execs: no rule sees them (no Falco type)
            assert new == [], k
            continue
        assert "every field" in {a["rule"] for a in new}, k
    assert rig.errors() == 0, (rig.pipe.handler_errors, rig.engine.rule_errors)
    _dispatch_ok(rig)


# --- hand-written malformed events -------------------------------------------------

MALFORMED = [
    Event(Kind.OPEN),                                              # nothing at all
    Event(Kind.OPEN, pid=7, path=None, fd=None, flags=None),
    Event(Kind.OPEN, pid="7", path=5, flags="rw", fd="x", ret=[1]),
    Event(Kind.OPEN, pid=7, path=b"/etc/\xffshadow", flags=-1, fd=-1, ret=-2),
    Event(Kind.EXEC, pid=8, args="not-a-list", exe=5, comm=None, tty=[], cwd=1),
    Event(Kind.EXEC, pid=9, args=[1, None, b"x"], exe="/memfd:x", exe_ctime="soon", loginuid="u"),
    Event(Kind.FORK, pid=9, child_pid=None),
    Event(Kind.FORK, pid=None, child_pid="c"),
    Event(Kind.CONNECT, pid=10, saddr=5, daddr="not-an-ip", dport="http", family="inet",
          sport=-1, proto=None),
    Event(Kind.CONNECT, pid=10, saddr="::1", daddr="1.2.3.4", dport=2 ** 70, family=10),
    Event(Kind.ACCEPT, pid=10, daddr=None, dport=None),
    Event(Kind.DNS, pid=11, query=5, qtype="A"),
    Event(Kind.RENAME, pid=12, path=None, path2=7),
    Event(Kind.PTRACE, pid=13, target_pid="x", request=None),
    Event(Kind.SETUID, pid=14, new_uid="root", uid=None),
    Event(Kind.CHMOD, pid=15, mode="rwx", path=3.5),
    Event(Kind.MEMFD, pid=16, path=float("nan")),
    Event(Kind.OPEN, pid=17, time="yesterday", uid="root", gid=[], cgroup_id="c"),
    Event(Kind.OPEN, pid=18, time=-5, path="/etc/shadow", fd=3, ret=3, flags=0),
    Event(Kind.EXIT, pid=19, exit_code="x", exit_signal=None),
    Event(Kind.CGROUP_MKDIR, cgroup_id=None, path=None),
]


def test_malformed_events_never_escape(rig):
    for ev in MALFORMED:
        rig.pipe.process(ev)          # must not raise
    assert rig.pipe.events == len(MALFORMED)
    assert rig.errors() > 0, "malformed events produced no counted error"
    _assert_still_judges(rig)
    _dispatch_ok(rig)


def test_ancestry_cycles_do_not_hang(rig):
    # pid 100's parent is 101 and 101's parent is 100; 102 is its own parent
    t = time.time_ns()
    for pid, ppid in ((100, 101), (101, 100), (102, 102)):
        rig.pipe.process(Event(Kind.EXEC, time=t, pid=pid, tid=pid, ppid=ppid, uid=0, gid=0,
                               comm=f"c{pid}", exe="/bin/x", args=["x"], cwd="/"))
    t0 = time.monotonic()
    for pid in (100, 101, 102):
        ev = _good_open(pid)
        ev.ppid = 101 if pid == 100 else 100 if pid == 101 else 102
        rig.pipe.process(ev)
    assert time.monotonic() - t0 < 5
    _assert_still_judges(rig)


# --- fuzz --------------------------------------------------------------------------

_weird = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.integers(-1, 70000),
    st.floats(), st.text(max_size=12), st.binary(max_size=8),
    st.sampled_from(["/etc/shadow", "/etc/pam.d/x", "", "\x00", "/", "127.0.0.1", "::1",
                     "/memfd:x (deleted)", "bash", "ptmx", "0.0.0.0"]),
    st.lists(st.one_of(st.text(max_size=5), st.integers(), st.none()), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_events = st.builds(
    lambda kind, fields: Event(kind, **fields),
    st.sampled_from(list(Kind)),
    st.dictionaries(st.sampled_from(FIELDS + ("bogus", "proc", "container")), _weird, max_size=10),
)


@SETTINGS
@given(st.lists(_events, min_size=1, max_size=12))
def test_fuzz_events_through_pipeline(rig, events):
    for ev in events:
        ev.__dict__.pop("proc", None)       # the pipeline sets these
        ev.__dict__.pop("container", None)
        if ev.kind in (Kind.CGROUP_MKDIR, Kind.CGROUP_RMDIR):
            continue                        # no container resolver here
        rig.pipe.process(ev)
    _assert_still_judges(rig)
    _dispatch_ok(rig)
    # whatever went out is valid JSON with Falco's keys
    for line in rig.stream.getvalue().splitlines()[-50:]:
        a = json.loads(line)
        assert {"time", "rule", "priority", "output", "output_fields"} <= set(a)
    rig.stream.seek(0)
    rig.stream.truncate()
