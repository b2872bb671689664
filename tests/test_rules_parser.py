"""Condition grammar: structure, operators, values and error positions."""
import pytest

from vigil.rules.parser import (And, Compare, ConditionSyntaxError, FieldRef, FieldValue, ListValue,
                                MacroRef, Not, Or, Transform, line_col, parse_condition,
                                parse_lhs, quote_value)


def p(s):
    return parse_condition(s)


def test_precedence_and_binds_tighter_than_or():
    n = p("a or b and c")
    assert isinstance(n, Or)
    assert isinstance(n.items[1], And)
    assert [m.name for m in n.items[1].items] == ["b", "c"]


def test_not_and_parentheses():
    n = p("not (a or b) and not c")
    assert isinstance(n, And)
    assert isinstance(n.items[0], Not) and isinstance(n.items[0].item, Or)
    assert isinstance(n.items[1], Not) and isinstance(n.items[1].item, MacroRef)


def test_not_without_space_before_paren():
    n = p("not(proc.name=bash)")
    assert isinstance(n, Not) and isinstance(n.item, Compare)


@pytest.mark.parametrize("op", ["=", "==", "!=", "<", "<=", ">", ">=", "contains", "icontains",
                                "bcontains", "startswith", "bstartswith", "endswith", "glob",
                                "iglob", "regex"])
def test_binary_operators(op):
    n = p(f"proc.name {op} abc")
    assert isinstance(n, Compare) and n.op == op and n.rhs.text == "abc"


@pytest.mark.parametrize("op", ["in", "intersects", "pmatch"])
def test_list_operators(op):
    n = p(f'fd.name {op} (/etc, "/a b", 1)')
    assert isinstance(n.rhs, ListValue)
    assert [v.text for v in n.rhs.items] == ["/etc", "/a b", "1"]
    assert [v.quoted for v in n.rhs.items] == [False, True, False]


def test_empty_list_and_exists():
    assert p("proc.name in ()").rhs.items == []
    n = p("proc.pname exists")
    assert n.op == "exists" and n.rhs is None


def test_operators_without_spaces():
    n = p("fd.num>=0 and evt.dir=< and evt.dir=>")
    assert [(c.op, c.rhs.text) for c in n.items] == [(">=", "0"), ("=", "<"), ("=", ">")]


def test_field_arguments():
    n = p("proc.aname[2]=bash and k8s.pod.label[app.kubernetes.io/name] = web")
    a, b = n.items
    assert isinstance(a.lhs, FieldRef) and a.lhs.name == "proc.aname" and a.lhs.arg == "2"
    assert b.lhs.arg == "app.kubernetes.io/name"
    assert b.lhs.text == "k8s.pod.label[app.kubernetes.io/name]"


def test_transformers_and_val():
    n = p("tolower(basename(proc.exe)) = val(proc.name)")
    assert isinstance(n.lhs, Transform) and n.lhs.name == "tolower"
    assert isinstance(n.lhs.inner, Transform) and n.lhs.inner.name == "basename"
    assert n.lhs.field.name == "proc.exe"
    assert isinstance(n.rhs, FieldValue) and n.rhs.lhs.name == "proc.name"


def test_quoted_strings_and_escapes():
    n = p(r"""proc.cmdline contains "say \"hi\"" and proc.name = 'x y' and fd.name regex "a\d+" """)
    assert n.items[0].rhs.text == 'say "hi"'
    assert n.items[1].rhs.text == "x y"
    assert n.items[2].rhs.text == r"a\d+"


def test_macro_vs_field():
    n = p("spawned_process and proc.name=bash")
    assert isinstance(n.items[0], MacroRef) and n.items[0].name == "spawned_process"


def test_list_reference_without_parens():
    n = p("proc.name in shell_binaries")
    assert [v.text for v in n.rhs.items] == ["shell_binaries"]


def test_multiline_condition():
    n = p("proc.name = a\n  and\n  fd.name = b")
    assert isinstance(n, And) and len(n.items) == 2


@pytest.mark.parametrize("text, pos, fragment", [
    ("proc.name = ", 12, "expected a value"),
    ("(proc.name = a", 14, "expected ')'"),
    ("proc.name bash", 10, "expected an operator"),
    ("proc.name = a b", 14, "unexpected"),
    ("proc.name = a and", 17, "unexpected end"),
    ("proc.name in (a, b", 18, "expected ',' or ')'"),
    ('proc.name = "abc', 12, "unterminated string"),
    ("", 0, "empty condition"),
    ("and a", 0, "unexpected 'and'"),
    ("proc.aname[2 = x", 10, "unterminated '['"),
    ("a and ) b", 6, "unexpected"),
])
def test_syntax_error_positions(text, pos, fragment):
    with pytest.raises(ConditionSyntaxError) as ei:
        p(text)
    assert fragment in ei.value.message
    assert ei.value.pos == pos


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(ConditionSyntaxError):
        p("(" * 500 + "a" + ")" * 500)
    with pytest.raises(ConditionSyntaxError):
        p("not " * 500 + "a")


def test_parse_lhs_and_line_col():
    assert parse_lhs("toupper(proc.name)").text == "toupper(proc.name)"
    with pytest.raises(ConditionSyntaxError):
        parse_lhs("proc.name x")
    assert line_col("ab\ncd", 4) == (2, 2)
    assert line_col("abc", 0) == (1, 1)


def test_quote_value_roundtrip():
    for v in ["plain", "with space", 'q"uote', "back\\slash", "(paren)", "", "and"]:
        n = p(f"proc.name = {quote_value(v)}")
        assert n.rhs.text == v
