"""Property tests: arbitrary YAML and condition text never crash the loader, only RulesError."""
import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.events import Event, Kind
from vigil.rules import RuleEngine, RulesError
from vigil.rules.parser import ConditionSyntaxError, parse_condition

SETTINGS = settings(max_examples=int(os.environ.get("VIGIL_FUZZ_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TOKENS = ["proc.name", "fd.name", "evt.type", "proc.aname[2]", "k8s.pod.label[app]", "fd.num",
          "fd.sip", "fd.net", "evt.arg.flags", "container.privileged", "nope.field", "=", "!=", "<",
          ">=", "contains", "in", "pmatch", "glob", "regex", "exists", "intersects", "and", "or", "not",
          "(", ")", ",", "bash", "/etc", "'quoted'", '"dq', "10.0.0.0/8", "1.2.3.4", "execve", "openat",
          "true", "3", "-1", "m1", "l1", "tolower(", "val(", "[", "]", "\\", "%", "\n", "*"]


def _engine_text(cond):
    return yaml.safe_dump([
        {"list": "l1", "items": ["a", "b"]},
        {"macro": "m1", "condition": "evt.type = execve"},
        {"rule": "R", "desc": "d", "condition": cond, "output": "%proc.name", "priority": "INFO"},
    ])


def _try_engine(text):
    try:
        eng = RuleEngine.from_text(text, "fuzz.yaml")
    except RulesError as e:
        assert e.file == "fuzz.yaml"
        assert isinstance(e.message, str) and e.message
        return None
    return eng


EVENTS = [
    Event(Kind.EXEC, time=1, pid=1, tid=1, ppid=0, uid=0, gid=0, comm="bash", exe="/bin/bash",
          args=["bash"]),
    Event(Kind.OPEN, time=1, pid=1, tid=1, ppid=0, uid=0, gid=0, comm="cat", syscall="openat",
          path="/etc/x", flags=0, ret=3),
    Event(Kind.CONNECT, time=1, pid=1, tid=1, ppid=0, uid=0, gid=0, comm="nc", family="AF_INET",
          proto="tcp", saddr="10.0.0.1", sport=1, daddr="1.2.3.4", dport=80, ret=0),
]


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), min_size=0, max_size=14).map(" ".join))
def test_random_token_conditions(cond):
    try:
        parse_condition(cond)
    except ConditionSyntaxError as e:
        assert 0 <= e.pos <= len(cond)
    eng = _try_engine(_engine_text(cond))
    if eng is not None:
        for ev in EVENTS:
            eng.evaluate(ev)


@SETTINGS
@given(st.text(max_size=80))
def test_random_text_conditions(cond):
    try:
        parse_condition(cond)
    except ConditionSyntaxError:
        pass
    eng = _try_engine(_engine_text(cond))
    if eng is not None:
        for ev in EVENTS:
            eng.evaluate(ev)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=12),
                    st.sampled_from(["rule", "macro", "list", "condition", "items", "append", "override",
                                     "exceptions", "evt.type=execve", "proc.name", "replace", "INFO"]))
keys = st.sampled_from(["rule", "macro", "list", "condition", "desc", "output", "priority", "items",
                        "append", "override", "enabled", "exceptions", "name", "fields", "comps",
                        "values", "tags", "source", "required_engine_version",
                        "required_plugin_versions", "skip-if-unknown-filter", "x"])
docs = st.recursive(scalars, lambda ch: st.one_of(st.lists(ch, max_size=4),
                                                  st.dictionaries(keys, ch, max_size=5)),
                    max_leaves=25)


@SETTINGS
@given(docs)
def test_random_yaml_structures(doc):
    _try_engine(yaml.safe_dump(doc))


@SETTINGS
@given(st.lists(st.fixed_dictionaries(
    {"rule": st.sampled_from(["A", "B"]),
     "desc": st.text(max_size=5),
     "condition": st.sampled_from(["evt.type=execve", "and proc.name=x", "m1", "proc.name in (l1)",
                                   "evt.type=openat and fd.name pmatch (l1)", "(", ""]),
     "output": st.sampled_from(["%proc.name", "%nope", "x %fd.name[", "%(tolower(proc.name))", ""]),
     "priority": st.sampled_from(["INFO", "bogus", "Critical"])},
    optional={"append": st.booleans(), "enabled": st.booleans(),
              "override": st.dictionaries(st.sampled_from(["condition", "output", "priority", "enabled"]),
                                          st.sampled_from(["append", "replace", "x"]), max_size=2),
              "exceptions": st.lists(st.fixed_dictionaries(
                  {"name": st.sampled_from(["e1", "e2"])},
                  optional={"fields": st.one_of(st.just("proc.name"), st.lists(
                      st.sampled_from(["proc.name", "fd.name", "bad.f"]), max_size=3)),
                      "comps": st.one_of(st.sampled_from(["=", "in", "pmatch", "zz"]),
                                         st.lists(st.sampled_from(["=", "in", "startswith"]), max_size=3)),
                      "values": st.lists(st.one_of(st.text(max_size=4), st.lists(
                          st.one_of(st.text(max_size=4), st.lists(st.text(max_size=3), max_size=2)),
                          max_size=3)), max_size=3)}), max_size=2)}),
    max_size=4))
def test_random_rule_items(items):
    text = yaml.safe_dump([{"list": "l1", "items": ["/a"]}, {"macro": "m1", "condition": "evt.type=execve"}]
                          + items)
    eng = _try_engine(text)
    if eng is not None:
        for ev in EVENTS:
            eng.evaluate(ev)
        eng.required_kinds()
        eng.open_path_prefixes()


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_files(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("fuzz") / "r.yaml"
    p.write_bytes(data)
    try:
        RuleEngine.from_files([p])
    except RulesError as e:
        assert e.file == str(p)
