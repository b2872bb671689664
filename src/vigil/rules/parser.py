"""Parser for Falco-style filter conditions.

A hand-written recursive-descent parser producing a small AST:

    expr    := or_expr
    or_expr := and_expr ("or" and_expr)*
    and_expr:= unary ("and" unary)*
    unary   := "not" unary | primary
    primary := "(" expr ")" | check | macro-name
    check   := lhs op rhs | lhs "exists"
    lhs     := field | transformer "(" lhs ")"
    field   := name ["[" arg "]"]
    rhs     := value | "(" [value ("," value)*] ")" | "val(" lhs ")"

Syntax errors raise :class:`ConditionSyntaxError` with the 0-based offset in the
condition text; the loader turns that into a file:line plus column message.
"""
from __future__ import annotations

from typing import Optional, Union

BINARY_OPS = ("=", "==", "!=", "<", "<=", ">", ">=", "contains", "icontains", "bcontains",
              "startswith", "bstartswith", "endswith", "glob", "iglob", "pmatch", "in",
              "intersects", "regex")
LIST_OPS = ("in", "intersects", "pmatch")
UNARY_OPS = ("exists",)
WORD_OPS = frozenset(o for o in BINARY_OPS + UNARY_OPS if o[0].isalpha())
TRANSFORMERS = ("tolower", "toupper", "b64", "basename", "len")

MAX_DEPTH = 80

_IDENT_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | set("0123456789.-")
_WS = set(" \t\r\n\f\v")
_BARE_STOP = _WS | set("(),\"'")


class ConditionSyntaxError(ValueError):
    def __init__(self, message: str, pos: int):
        super().__init__(message)
        self.message = message
        self.pos = pos


# ---------------------------------------------------------------- AST nodes

class Node:
    __slots__ = ()


class And(Node):
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = list(items)

    def __repr__(self):
        return "(" + " and ".join(map(repr, self.items)) + ")"


class Or(Node):
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = list(items)

    def __repr__(self):
        return "(" + " or ".join(map(repr, self.items)) + ")"


class Not(Node):
    __slots__ = ("item",)

    def __init__(self, item):
        self.item = item

    def __repr__(self):
        return f"not {self.item!r}"


class Const(Node):
    __slots__ = ("value",)

    def __init__(self, value: bool):
        self.value = bool(value)

    def __repr__(self):
        return "true" if self.value else "false"


class MacroRef(Node):
    __slots__ = ("name", "pos", "origin")

    def __init__(self, name, pos, origin=None):
        self.name, self.pos, self.origin = name, pos, origin

    def __repr__(self):
        return self.name


class FieldRef:
    """A field, optionally with an argument: proc.aname[2], k8s.pod.label[app]."""
    __slots__ = ("name", "arg", "pos", "origin")

    def __init__(self, name, arg=None, pos=0, origin=None):
        self.name, self.arg, self.pos, self.origin = name, arg, pos, origin

    @property
    def text(self) -> str:
        return self.name if self.arg is None else f"{self.name}[{self.arg}]"

    def __repr__(self):
        return self.text


class Transform:
    """A transformer around a field expression: tolower(fd.name)."""
    __slots__ = ("name", "inner", "pos")

    def __init__(self, name, inner, pos=0):
        self.name, self.inner, self.pos = name, inner, pos

    @property
    def text(self) -> str:
        return f"{self.name}({self.inner.text})"

    @property
    def field(self) -> FieldRef:
        x = self.inner
        while isinstance(x, Transform):
            x = x.inner
        return x

    @property
    def origin(self):
        """Where the condition came from (its field's)."""
        return self.field.origin

    def __repr__(self):
        return self.text


Lhs = Union[FieldRef, Transform]


class Value:
    __slots__ = ("text", "quoted", "pos")

    def __init__(self, text, quoted=False, pos=0):
        self.text, self.quoted, self.pos = text, quoted, pos

    def __repr__(self):
        return repr(self.text) if self.quoted else self.text


class ListValue:
    __slots__ = ("items", "pos")

    def __init__(self, items, pos=0):
        self.items, self.pos = list(items), pos

    def __repr__(self):
        return "(" + ", ".join(map(repr, self.items)) + ")"


class FieldValue:
    """val(field) on the right-hand side."""
    __slots__ = ("lhs", "pos")

    def __init__(self, lhs, pos=0):
        self.lhs, self.pos = lhs, pos

    def __repr__(self):
        return f"val({self.lhs.text})"


class Compare(Node):
    __slots__ = ("lhs", "op", "rhs", "pos")

    def __init__(self, lhs, op, rhs, pos=0):
        self.lhs, self.op, self.rhs, self.pos = lhs, op, rhs, pos

    def __repr__(self):
        if self.rhs is None:
            return f"{self.lhs!r} {self.op}"
        return f"{self.lhs!r} {self.op} {self.rhs!r}"


# ---------------------------------------------------------------- parser

class _Parser:
    def __init__(self, text: str, origin=None):
        if not isinstance(text, str):
            raise ConditionSyntaxError("condition must be a string", 0)
        self.s = text
        self.n = len(text)
        self.i = 0
        self.depth = 0
        self.origin = origin

    # -- helpers
    def err(self, msg, pos=None):
        raise ConditionSyntaxError(msg, self.i if pos is None else pos)

    def ws(self):
        s, n, i = self.s, self.n, self.i
        while i < n and s[i] in _WS:
            i += 1
        self.i = i

    def peek(self) -> str:
        return self.s[self.i] if self.i < self.n else ""

    def ident_at(self, i) -> str:
        s, n = self.s, self.n
        if i >= n or s[i] not in _IDENT_START:
            return ""
        j = i + 1
        while j < n and s[j] in _IDENT_CHARS:
            j += 1
        return s[i:j]

    def keyword(self, word) -> bool:
        """Consume `word` if it is there as a whole word."""
        if self.ident_at(self.i) == word:
            self.i += len(word)
            return True
        return False

    def describe(self) -> str:
        if self.i >= self.n:
            return "end of condition"
        tok = self.ident_at(self.i) or self.s[self.i]
        return repr(tok)

    # -- grammar
    def parse(self) -> Node:
        self.ws()
        if self.i >= self.n:
            self.err("empty condition")
        node = self.or_expr()
        self.ws()
        if self.i < self.n:
            self.err(f"unexpected {self.describe()}; expected 'and', 'or' or end of condition")
        return node

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.err("condition nested too deeply")

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while True:
            self.ws()
            if self.keyword("or"):
                items.append(self.and_expr())
            else:
                break
        return items[0] if len(items) == 1 else Or(items)

    def and_expr(self) -> Node:
        items = [self.unary()]
        while True:
            self.ws()
            if self.keyword("and"):
                items.append(self.unary())
            else:
                break
        return items[0] if len(items) == 1 else And(items)

    def unary(self) -> Node:
        self.ws()
        if self.keyword("not"):
            self.enter()
            node = Not(self.unary())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        self.ws()
        c = self.peek()
        if c == "(":
            start = self.i
            self.i += 1
            self.enter()
            node = self.or_expr()
            self.depth -= 1
            self.ws()
            if self.peek() != ")":
                self.err(f"expected ')' to close '(' at column {start + 1}, found {self.describe()}")
            self.i += 1
            return node
        if c == "":
            self.err("unexpected end of condition; expected a field, macro or '('")
        name = self.ident_at(self.i)
        if not name:
            self.err(f"unexpected {self.describe()}; expected a field, macro or '('")
        if name in ("and", "or"):
            self.err(f"unexpected '{name}'; expected a field, macro or '('")
        start = self.i
        # transformer call?
        j = self.i + len(name)
        if name in TRANSFORMERS and self._next_nonws(j) == "(":
            lhs = self.lhs()
            return self.check(lhs, start)
        # field with argument, or plain identifier
        if "." in name or (j < self.n and self.s[j] == "["):
            lhs = self.lhs()
            return self.check(lhs, start)
        # no dot: a macro unless an operator follows
        self.i = j
        save = self.i
        self.ws()
        op = self.try_op()
        self.i = save
        if op is not None:
            self.i = start
            lhs = self.lhs()
            return self.check(lhs, start)
        return MacroRef(name, start, self.origin)

    def _next_nonws(self, j) -> str:
        s, n = self.s, self.n
        while j < n and s[j] in _WS:
            j += 1
        return s[j] if j < n else ""

    def lhs(self) -> Lhs:
        self.ws()
        start = self.i
        name = self.ident_at(self.i)
        if not name:
            self.err(f"expected a field name, found {self.describe()}")
        j = self.i + len(name)
        if name in TRANSFORMERS and self._next_nonws(j) == "(":
            self.i = j
            self.ws()
            self.i += 1
            self.enter()
            inner = self.lhs()
            self.depth -= 1
            self.ws()
            if self.peek() != ")":
                self.err(f"expected ')' after {name}( argument, found {self.describe()}")
            self.i += 1
            return Transform(name, inner, start)
        self.i = j
        arg = None
        if self.peek() == "[":
            k = self.s.find("]", self.i + 1)
            if k < 0:
                self.err("unterminated '[' in field argument")
            arg = self.s[self.i + 1:k]
            self.i = k + 1
        return FieldRef(name, arg, start, self.origin)

    def try_op(self) -> Optional[str]:
        """Consume and return an operator at the cursor, or None."""
        s, i = self.s, self.i
        two = s[i:i + 2]
        if two in ("==", "!=", "<=", ">="):
            self.i += 2
            return two
        c = s[i:i + 1]
        if c in ("=", "<", ">"):
            self.i += 1
            return c
        word = self.ident_at(i)
        if word in WORD_OPS:
            self.i += len(word)
            return word
        return None

    def check(self, lhs, start) -> Node:
        self.ws()
        op_pos = self.i
        op = self.try_op()
        if op is None:
            what = lhs.text
            self.err(f"expected an operator after '{what}', found {self.describe()}", op_pos)
        if op == "exists":
            return Compare(lhs, op, None, start)
        self.ws()
        if op in LIST_OPS:
            if self.peek() == "(":
                rhs = self.list_value()
            else:
                v = self.value()
                rhs = ListValue([v], v.pos)
        else:
            name = self.ident_at(self.i)
            if name == "val" and self._next_nonws(self.i + 3) == "(":
                p = self.i
                self.i += 3
                self.ws()
                self.i += 1
                inner = self.lhs()
                self.ws()
                if self.peek() != ")":
                    self.err(f"expected ')' after val( argument, found {self.describe()}")
                self.i += 1
                rhs = FieldValue(inner, p)
            else:
                rhs = self.value()
        return Compare(lhs, op, rhs, start)

    def list_value(self) -> ListValue:
        start = self.i
        self.i += 1  # (
        items = []
        self.ws()
        if self.peek() == ")":
            self.i += 1
            return ListValue(items, start)
        while True:
            self.ws()
            items.append(self.value())
            self.ws()
            c = self.peek()
            if c == ",":
                self.i += 1
                continue
            if c == ")":
                self.i += 1
                return ListValue(items, start)
            self.err(f"expected ',' or ')' in list, found {self.describe()}")

    def value(self) -> Value:
        self.ws()
        start = self.i
        c = self.peek()
        if c in ('"', "'"):
            return Value(self.quoted(c), True, start)
        s, n, i = self.s, self.n, self.i
        while i < n and s[i] not in _BARE_STOP:
            i += 1
        if i == start:
            self.err(f"expected a value, found {self.describe()}")
        self.i = i
        return Value(s[start:i], False, start)

    def quoted(self, q) -> str:
        start = self.i
        s, n = self.s, self.n
        i = self.i + 1
        out = []
        while i < n:
            c = s[i]
            if c == "\\" and i + 1 < n:
                nxt = s[i + 1]
                if nxt in (q, "\\", '"', "'"):
                    out.append(nxt)
                    i += 2
                    continue
                out.append(c)
                i += 1
                continue
            if c == q:
                self.i = i + 1
                return "".join(out)
            out.append(c)
            i += 1
        self.err("unterminated string", start)


def parse_condition(text: str, origin=None) -> Node:
    """Parse a condition string into an AST (raises ConditionSyntaxError)."""
    return _Parser(text, origin).parse()


def parse_lhs(text: str, origin=None) -> Lhs:
    """Parse a lone field expression (field, field[arg] or transformer(...))."""
    p = _Parser(text, origin)
    lhs = p.lhs()
    p.ws()
    if p.i < p.n:
        p.err(f"unexpected {p.describe()} after field expression")
    return lhs


def line_col(text: str, pos: int):
    """1-based (line, column) of offset pos within text."""
    pos = max(0, min(pos, len(text)))
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def quote_value(v) -> str:
    """Render a value for inclusion in a generated condition."""
    s = v if isinstance(v, str) else scalar_text(v)
    if s and not any(ch in _BARE_STOP for ch in s) and s not in ("and", "or", "not"):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def list_item_text(item: str) -> str:
    """A list item as the condition sees it.  Falco pastes list items into the
    condition text, so an item written in quotes (``'"10.0.0.0/8"'``) is a
    quoted string there: its quotes go, escapes are read.  Anything else is
    taken as written."""
    if len(item) >= 2 and item[0] in ('"', "'") and item[-1] == item[0]:
        p = _Parser(item)
        try:
            text = p.quoted(item[0])
        except ConditionSyntaxError:
            return item
        if p.i == p.n:
            return text
    return item


def scalar_text(v) -> str:
    """A YAML scalar as condition text: booleans as true/false, null as empty."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    return str(v)


__all__ = ["parse_condition", "parse_lhs", "ConditionSyntaxError", "And", "Or", "Not", "Const",
           "MacroRef", "FieldRef", "Transform", "Value", "ListValue", "FieldValue", "Compare",
           "BINARY_OPS", "LIST_OPS", "TRANSFORMERS", "line_col", "quote_value", "list_item_text"]
