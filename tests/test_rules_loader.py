"""Loading: items, overrides, append, exceptions, lists, errors with file:line, warnings."""
import textwrap

import pytest

from vigil.events import Event, Kind
from vigil.state.proctable import ProcessTable, ProcInfo
from vigil.rules import RuleEngine, RulesError

T0 = 1_700_000_000_000_000_000


def write(tmp_path, text, name="rules.yaml"):
    f = tmp_path / name
    pieces = [textwrap.dedent(p).strip("\n") for p in text.split(SEP)]
    f.write_text("\n".join(p for p in pieces if p) + "\n")
    return f


def load(tmp_path, *texts, **kw):
    files = [write(tmp_path, t, f"r{i}.yaml") for i, t in enumerate(texts)]
    return RuleEngine.from_files(files, **kw)


def opened(path, comm="cat", flags=0, ret=3, **kw):
    d = dict(syscall="openat", time=T0, pid=100, tid=100, ppid=1, uid=0, gid=0)
    d.update(kw)
    return Event(Kind.OPEN, comm=comm, path=path, flags=flags, ret=ret, **d)


def execd(comm, args=None, **kw):
    d = dict(time=T0, pid=100, tid=100, ppid=1, uid=0, gid=0, exe="/usr/bin/" + comm)
    d.update(kw)
    return Event(Kind.EXEC, comm=comm, args=args or [comm], **d)


def names(eng, ev):
    return [a.rule for a in eng.evaluate(ev)]


SEP = "\n#--\n"
RULE = """
- rule: R
  desc: d
  condition: {cond}
  output: "out %proc.name"
  priority: WARNING
"""


def rule(cond, name="R", extra=""):
    return SEP + RULE.replace("{cond}", cond).replace("- rule: R", f"- rule: {name}") + \
        extra.lstrip("\n") + SEP


# ---------------------------------------------------------------- basics


def test_minimal_rule_and_first_match(tmp_path):
    eng = load(tmp_path, rule("evt.type=openat and fd.name=/etc/passwd") +
               rule("evt.type=openat", name="R2"))
    assert names(eng, opened("/etc/passwd")) == ["R"]
    assert names(eng, opened("/etc/hosts")) == ["R2"]
    eng_all = RuleEngine.from_files([tmp_path / "r0.yaml"], rule_matching="all")
    assert names(eng_all, opened("/etc/passwd")) == ["R", "R2"]


def test_empty_file_and_comments_only(tmp_path):
    eng = load(tmp_path, "# nothing here\n")
    assert eng.rules == []
    assert eng.required_kinds() == set()


def test_lists_in_lists_and_macros(tmp_path):
    eng = load(tmp_path, """
        - list: a
          items: [bash, sh]
        - list: b
          items: [a, "zsh"]
        - list: c
          items: [b, fish]
        - macro: m1
          condition: evt.type = execve
        - macro: m2
          condition: m1 and proc.name in (c)
        - rule: R
          desc: d
          condition: m2
          output: x
          priority: INFO
        """)
    for comm in ("bash", "sh", "zsh", "fish"):
        assert names(eng, execd(comm)) == ["R"], comm
    assert names(eng, execd("python")) == []


def test_list_defined_after_use_and_macro_after_use(tmp_path):
    eng = load(tmp_path, """
        - rule: R
          desc: d
          condition: later_macro and proc.name in (later_list)
          output: x
          priority: INFO
        - macro: later_macro
          condition: evt.type=execve
        - list: later_list
          items: [vi]
        """)
    assert names(eng, execd("vi")) == ["R"]


def test_redefinition_replaces(tmp_path):
    eng = load(tmp_path, rule("evt.type=execve and proc.name=a"), rule("evt.type=execve and proc.name=b"))
    assert len(eng.rules) == 1
    assert names(eng, execd("a")) == []
    assert names(eng, execd("b")) == ["R"]


# ---------------------------------------------------------------- overrides


def test_override_append_and_replace(tmp_path):
    base = """
        - list: bins
          items: [a]
        - macro: m
          condition: evt.type=execve
        - rule: R
          desc: d
          condition: m and proc.name in (bins)
          output: "first %proc.name"
          priority: WARNING
          tags: [t1]
        """
    over = """
        - list: bins
          items: [b]
          override:
            items: append
        - macro: m
          condition: and user.uid = 0
          override:
            condition: append
        - rule: R
          output: "second %proc.name"
          priority: CRITICAL
          tags: [t2]
          desc: more
          override:
            output: replace
            priority: replace
            tags: append
            desc: append
        """
    eng = load(tmp_path, base, over)
    r = eng.rule("R")
    assert r.priority == "critical" and r.tags == ["t1", "t2"] and r.desc == "d more"
    (a,) = eng.evaluate(execd("b"))
    assert a.output == "second b" and a.priority == "critical"
    assert names(eng, execd("a")) == ["R"]
    assert names(eng, execd("a", uid=1)) == []


def test_list_replace(tmp_path):
    eng = load(tmp_path, """
        - list: bins
          items: [a]
        """ + rule("evt.type=execve and proc.name in (bins)"), """
        - list: bins
          items: [z]
          override:
            items: replace
        """)
    assert names(eng, execd("a")) == []
    assert names(eng, execd("z")) == ["R"]


def test_old_style_append(tmp_path):
    eng = load(tmp_path, """
        - list: bins
          items: [a]
        - macro: m
          condition: evt.type=execve
        """ + rule("m and proc.name in (bins)"), """
        - list: bins
          items: [b]
          append: true
        - macro: m
          condition: and user.uid=0
          append: true
        - rule: R
          condition: and not proc.args contains safe
          append: true
        """)
    assert names(eng, execd("b")) == ["R"]
    assert names(eng, execd("b", args=["b", "safe"])) == []
    assert names(eng, execd("b", uid=5)) == []


def test_condition_append_is_textual(tmp_path):
    # Falco concatenates the text: appending "or x" to "a and b" gives "a and b or x"
    eng = load(tmp_path, rule("evt.type=execve and proc.name=a"), """
        - rule: R
          condition: or proc.name=zz
          override:
            condition: append
        """)
    assert names(eng, execd("a")) == ["R"]
    assert names(eng, execd("zz")) == ["R"]


def test_enabled_toggle(tmp_path):
    eng = load(tmp_path, rule("evt.type=execve", extra="  enabled: false\n"))
    assert names(eng, execd("x")) == []
    assert eng.required_kinds() == set()
    eng = load(tmp_path, rule("evt.type=execve", extra="  enabled: false\n"), """
        - rule: R
          enabled: true
        """)
    assert names(eng, execd("x")) == ["R"]
    eng = load(tmp_path, rule("evt.type=execve"), """
        - rule: R
          enabled: false
          override:
            enabled: replace
        """)
    assert names(eng, execd("x")) == []
    eng.set_enabled("R", True)
    assert names(eng, execd("x")) == ["R"]


def test_override_errors(tmp_path):
    with pytest.raises(RulesError, match="not defined yet") as ei:
        load(tmp_path, """
            - rule: Missing
              condition: and x
              override:
                condition: append
            """)
    assert ei.value.line == 1 and ei.value.file.endswith("r0.yaml")
    with pytest.raises(RulesError, match="cannot be appended"):
        load(tmp_path, rule("evt.type=execve"), """
            - rule: R
              priority: INFO
              override:
                priority: append
            """)
    with pytest.raises(RulesError, match="has no entry in 'override'"):
        load(tmp_path, rule("evt.type=execve"), """
            - rule: R
              priority: INFO
              output: x
              override:
                priority: replace
            """)
    with pytest.raises(RulesError, match="together"):
        load(tmp_path, rule("evt.type=execve"), """
            - rule: R
              condition: and x
              append: true
              override:
                condition: append
            """)
    with pytest.raises(RulesError, match="append to a rule that is not defined"):
        load(tmp_path, """
            - rule: Nope
              condition: and x
              append: true
            """)
    with pytest.raises(RulesError, match="list 'l'.*not defined yet"):
        load(tmp_path, """
            - list: l
              items: [a]
              append: true
            """)
    with pytest.raises(RulesError, match="'enabled' given for a rule that is not defined"):
        load(tmp_path, "- rule: Ghost\n  enabled: false\n")


# ---------------------------------------------------------------- exceptions


def test_exceptions_multi_field(tmp_path):
    eng = load(tmp_path, rule("evt.type=openat", extra="""
  exceptions:
    - name: pd
      fields: [proc.name, fd.directory]
      values:
        - [nginx, /etc/nginx]
        - [sshd, /etc]
    - name: names_in
      fields: [proc.name, fd.name]
      comps: [in, pmatch]
      values:
        - [[vim, nano], [/home, /root]]
"""))
    assert names(eng, opened("/etc/nginx/x.conf", comm="nginx")) == []
    assert names(eng, opened("/etc/nginx/x.conf", comm="sshd")) == ["R"]
    assert names(eng, opened("/etc/shadow", comm="sshd")) == []
    assert names(eng, opened("/root/.bashrc", comm="nano")) == []
    assert names(eng, opened("/rootfs/x", comm="nano")) == ["R"]
    assert names(eng, opened("/etc/x", comm="nano")) == ["R"]


def test_exception_single_field_and_list_reference(tmp_path):
    eng = load(tmp_path, """
        - list: editors
          items: [vim, emacs]
        """ + rule("evt.type=openat", extra="""
  exceptions:
    - name: by_name
      fields: proc.name
      values: [nano, ed]
    - name: by_list
      fields: [proc.name]
      comps: [in]
      values:
        - [editors]
    - name: prefix
      fields: fd.name
      comps: startswith
      values: [/tmp/]
"""))
    for comm in ("nano", "ed", "vim", "emacs"):
        assert names(eng, opened("/etc/x", comm=comm)) == [], comm
    assert names(eng, opened("/tmp/x", comm="cat")) == []
    assert names(eng, opened("/etc/x", comm="cat")) == ["R"]


def test_exception_values_appended(tmp_path):
    eng = load(tmp_path, rule("evt.type=openat", extra="""
  exceptions:
    - name: pn
      fields: [proc.name]
      values: [[a]]
    - name: empty_for_later
      fields: [proc.name, fd.name]
"""), """
        - rule: R
          exceptions:
            - name: pn
              values: [[b]]
            - name: empty_for_later
              values:
                - [c, /etc/x]
            - name: brand_new
              fields: fd.name
              comps: pmatch
              values: [/var]
          override:
            exceptions: append
        """)
    assert names(eng, opened("/etc/x", comm="a")) == []
    assert names(eng, opened("/etc/x", comm="b")) == []
    assert names(eng, opened("/etc/x", comm="c")) == []
    assert names(eng, opened("/var/log/y", comm="d")) == []
    assert names(eng, opened("/etc/y", comm="c")) == ["R"]


def test_exception_quoting_of_odd_values(tmp_path):
    eng = load(tmp_path, rule("evt.type=execve", extra="""
  exceptions:
    - name: cmd
      fields: [proc.cmdline]
      values:
        - ['sh -c "echo (hi)"']
"""))
    assert names(eng, execd("sh", args=["sh", "-c", 'echo (hi)'])) == ["R"]
    assert names(eng, execd("sh", args=["sh", "-c", '"echo', '(hi)"'])) == []


def test_exception_errors(tmp_path):
    with pytest.raises(RulesError, match="one operator per field") as ei:
        load(tmp_path, rule("evt.type=execve", extra="""
  exceptions:
    - name: x
      fields: [proc.name, fd.name]
      comps: [=]
"""))
    assert ei.value.line == 9
    with pytest.raises(RulesError, match="must be a list of 2 values"):
        load(tmp_path, rule("evt.type=execve", extra="""
  exceptions:
    - name: x
      fields: [proc.name, fd.name]
      values: [[a]]
"""))
    with pytest.raises(RulesError, match="invalid comparison operator"):
        load(tmp_path, rule("evt.type=execve", extra="""
  exceptions:
    - name: x
      fields: proc.name
      comps: like
      values: [a]
"""))
    with pytest.raises(RulesError, match="unknown field 'proc.nope'") as ei:
        load(tmp_path, rule("evt.type=execve", extra="""
  exceptions:
    - name: x
      fields: proc.nope
      values: [a]
"""))
    assert ei.value.line == 7 and "exception 'x'" in ei.value.message


# ---------------------------------------------------------------- errors


def test_unknown_field_reports_file_line_and_column(tmp_path):
    with pytest.raises(RulesError) as ei:
        load(tmp_path, """
            - macro: m
              condition: evt.type=execve
            - rule: R
              desc: d
              condition: m and proc.nmae = bash
              output: x
              priority: INFO
            """)
    e = ei.value
    assert e.file.endswith("r0.yaml") and e.line == 5
    assert "unknown field 'proc.nmae'" in e.message and "column 7" in e.message
    assert str(e).startswith(f"{e.file}:5: ")


def test_unknown_field_in_macro_points_at_macro(tmp_path):
    with pytest.raises(RulesError) as ei:
        load(tmp_path, """
            - macro: m
              condition: evt.type=execve and bogus.field = 1
            """ + rule("m"))
    assert ei.value.line == 2 and "macro 'm'" in ei.value.message


def test_syntax_error_in_appended_condition_points_at_append(tmp_path):
    with pytest.raises(RulesError) as ei:
        load(tmp_path, rule("evt.type=execve"), """
            # comment
            - rule: R
              condition: and (proc.name = x
              override:
                condition: append
            """)
    e = ei.value
    assert e.file.endswith("r1.yaml") and e.line == 3 and "expected ')'" in e.message


def test_skip_if_unknown_filter(tmp_path):
    eng = load(tmp_path, rule("evt.type=execve and some.plugin.field = x",
                              extra="  skip-if-unknown-filter: true\n") + rule("evt.type=execve", "R2"))
    assert [r.name for r in eng.rules] == ["R2"]
    assert any("skipped" in str(w) and "some.plugin.field" in str(w) for w in eng.warnings)
    assert ("R", "unknown field") in eng.skipped


@pytest.mark.parametrize("text, line, fragment", [
    ("- rule: R\n  desc: d\n  output: o\n  priority: INFO\n", 1, "missing required key 'condition'"),
    ("- rule: R\n  desc: d\n  condition: evt.type=execve\n  output: o\n  priority: LOUD\n", 5,
     "invalid priority"),
    ("- macro: m\n", 1, "missing 'condition'"),
    ("- list: l\n  items: notalist\n", 2, "'items' must be a list"),
    ("- list: l\n  items: [[a]]\n", 2, "must be scalars"),
    ("rule: x\n", 1, "must be a YAML list"),
    ("- just a string\n", 1, "must be a mapping"),
    ("- rule: R\n  desc: d\n  condition: [a]\n  output: o\n  priority: INFO\n", 3, "must be a string"),
    ("- rule: R\n  enabled: maybe\n", 2, "true or false"),
    ("- rule: R\n  desc: d\n  condition: evt.type=execve\n  output: o %nope.field\n  priority: INFO\n",
     4, "unknown field 'nope.field' in output"),
    ("- rule: R\n  desc: d\n  condition: proc.pid = abc\n  output: o\n  priority: INFO\n", 3,
     "not a number"),
    ("- rule: R\n  desc: d\n  condition: fd.sip = 1.2.3\n  output: o\n  priority: INFO\n", 3,
     "not an IP address"),
    ("- rule: R\n  desc: d\n  condition: fd.name regex \"(\"\n  output: o\n  priority: INFO\n", 3,
     "invalid regular expression"),
    ("- rule: R\n  desc: d\n  condition: undefined_macro\n  output: o\n  priority: INFO\n", 3,
     "undefined macro 'undefined_macro'"),
    ("- rule: R\n  desc: d\n  condition: proc.aname[x] = a\n  output: o\n  priority: INFO\n", 3,
     "numeric index"),
    ("- list: a\n  items: [b]\n- list: b\n  items: [a]\n", 1, "refers to itself"),
    ("- macro: a\n  condition: b\n- macro: b\n  condition: a\n" +
     "- rule: R\n  desc: d\n  condition: a\n  output: o\n  priority: INFO\n", 1, "refers to itself"),
    ("- rule: R\n  desc: d\n  condition: evt.type=execve\n   output: o\n", 4, "invalid YAML"),
])
def test_errors_name_file_and_line(tmp_path, text, line, fragment):
    f = write(tmp_path, text)
    with pytest.raises(RulesError) as ei:
        RuleEngine.from_files([f])
    e = ei.value
    assert fragment in e.message, e.message
    assert e.file == str(f)
    assert e.line == line, str(e)


def test_missing_file_is_rules_error(tmp_path):
    with pytest.raises(RulesError, match="cannot read"):
        RuleEngine.from_files([tmp_path / "nope.yaml"])


def test_multiple_errors_collected(tmp_path):
    f = write(tmp_path, "- macro: a\n- macro: b\n- list: c\n")
    with pytest.raises(RulesError) as ei:
        RuleEngine.from_files([f])
    assert [e.line for e in ei.value.errors] == [1, 2, 3]


# ---------------------------------------------------------------- warnings / sources / plugins


def test_other_sources_skipped_with_warning(tmp_path):
    eng = load(tmp_path, """
        - rule: Audit
          desc: d
          condition: ka.verb = create
          output: "%ka.verb"
          priority: INFO
          source: k8s_audit
        - rule: Audit
          condition: and ka.user.name = x
          append: true
        - rule: Audit
          enabled: false
        """ + rule("evt.type=execve"))
    assert [r.name for r in eng.rules] == ["R"]
    assert any("source 'k8s_audit'" in str(w) for w in eng.warnings)
    assert ("Audit", "source k8s_audit") in eng.skipped


def test_plugins_and_engine_version(tmp_path):
    eng = load(tmp_path, """
        - required_engine_version: 0.26.0
        - required_plugin_versions:
            - name: container
              version: 0.1.0
            - name: k8saudit
              version: 0.1.0
              alternatives:
                - name: k8saudit-eks
                  version: 0.1.0
            - name: json
              version: 0.1.0
              alternatives:
                - name: k8smeta
                  version: 0.1.0
        """ + rule("evt.type=execve"))
    msgs = [str(w) for w in eng.warnings]
    assert any("plugin 'k8saudit'" in m for m in msgs)
    assert not any("plugin 'container'" in m or "plugin 'json'" in m for m in msgs)
    assert eng.ruleset.required_engine_version == "0.26.0"


def test_evttype_warnings(tmp_path):
    eng = load(tmp_path, rule("proc.name = bash", "NoType") +
               rule("evt.type in (sendfile, splice)", "NotProduced") +
               rule("proc.name = x", "Quiet", extra="  warn_evttypes: false\n"))
    msgs = [w.message for w in eng.warnings]
    assert any("'NoType' does not restrict evt.type" in m for m in msgs)
    assert not any("'Quiet'" in m for m in msgs)
    assert any("'NotProduced' can only match event types vigil does not produce: sendfile, splice"
               in m for m in msgs)
    assert eng.rule("NotProduced").kinds == frozenset()


def test_unused_macro_and_list_warnings(tmp_path):
    eng = load(tmp_path, "- macro: unused_m\n  condition: proc.name=a\n- list: unused_l\n  items: [a]\n")
    msgs = [w.message for w in eng.warnings]
    assert "macro 'unused_m' is not used by any rule" in msgs
    assert "list 'unused_l' is not used by any rule or list" in msgs


def test_yaml_scalars_stay_strings(tmp_path):
    eng = load(tmp_path, """
        - list: modes
          items: [0644, yes, 1.10]
        """ + rule("evt.type=openat and evt.arg.mode in (modes)"))
    assert names(eng, opened("/x", mode=0o644, flags=0o101)) == ["R"]


def test_min_priority(tmp_path):
    text = rule("evt.type=execve", "Low").replace("WARNING", "DEBUG") + \
        rule("evt.type=execve", "High").replace("WARNING", "CRITICAL")
    eng = load(tmp_path, text, min_priority="warning")
    assert [r.name for r in eng.rules] == ["High"]
    assert ("Low", "below minimum priority") in eng.skipped
    assert names(eng, execd("x")) == ["High"]
    with pytest.raises(ValueError):
        RuleEngine(min_priority="loudest")


def test_priority_aliases(tmp_path):
    for given, canon in [("INFO", "informational"), ("Warning", "warning"), ("emergency", "emergency"),
                         ("crit", "critical")]:
        eng = load(tmp_path, rule("evt.type=execve").replace("WARNING", given))
        assert eng.rules[0].priority == canon


def test_ancestry_uses_proctable(tmp_path):
    pt = ProcessTable()
    pt.put(ProcInfo(1, 0, "systemd", "/sbin/init", ["/sbin/init"]))
    pt.put(ProcInfo(50, 1, "sshd", "/usr/sbin/sshd", ["sshd"]))
    pt.put(ProcInfo(60, 50, "bash", "/bin/bash", ["bash"]))
    f = write(tmp_path, rule("evt.type=execve and proc.aname[2] = sshd and proc.pname = bash"))
    eng = RuleEngine.from_files([f], proctable=pt)
    ev = execd("id")
    ev.ppid = 60
    assert names(eng, ev) == ["R"]
