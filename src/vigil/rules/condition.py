"""A condition as the compiler holds it: its text with where each piece was
written (:class:`Source`, for error messages) and the resolved comparison
(:class:`Cmp`) the parser's comparisons become.  The tree around them is the
parser's And/Or/Not/Const."""
from __future__ import annotations

from vigil.rules import fields as F
from vigil.rules.errors import RulesError
from vigil.rules.parser import ConditionSyntaxError, Transform, line_col, parse_condition


class Cmp:
    """A resolved comparison: extractor, operator, typed value (or rhs extractor)."""
    __slots__ = ("ext", "op", "value", "rhs", "raw")

    def __init__(self, ext, op, value=None, rhs=None, raw=None):
        self.ext, self.op, self.value, self.rhs, self.raw = ext, op, value, rhs, raw

    def __repr__(self):
        if self.op == "exists":
            return f"{self.ext.key} exists"
        r = f"val({self.rhs.key})" if self.rhs is not None else repr(self.raw)
        return f"{self.ext.key} {self.op} {r}"


class Source:
    """A condition text and where its pieces were written, for error messages."""

    def __init__(self, text, chunks, what):
        self.text, self.chunks, self.what = text, chunks, what

    def where(self, pos):
        chunk = self.chunks[0]
        for c in self.chunks:
            if c.offset <= pos:
                chunk = c
        rel = pos - chunk.offset
        piece = self.text[chunk.offset:]
        line_in, col = line_col(piece, rel)
        return chunk.file, chunk.line, line_in, col, piece

    def error(self, pos, msg, cls=RulesError):
        file, line, line_in, col, piece = self.where(pos)
        src_line = piece.split("\n")[line_in - 1] if piece else ""
        at = f"column {col}" if line_in == 1 else f"line {line_in} column {col} of the condition"
        snippet = ""
        if src_line.strip() and len(src_line) <= 400:
            snippet = f"\n    {src_line}\n    {' ' * (col - 1)}^"
        return cls(f"{self.what}: {msg} (at {at}){snippet}", file, line)

    def parse(self):
        """The condition's AST; a syntax error becomes a RulesError pointing into it."""
        try:
            return parse_condition(self.text, self)
        except ConditionSyntaxError as e:
            raise self.error(e.pos, f"syntax error: {e.message}") from None


def resolve_lhs(lhs, field=None):
    """The extractor for a parsed field expression (a field, or transformers around
    one).  ``field(lhs)`` resolves the field itself; by default fields.lookup, whose
    UnknownField / BadFieldArg then reach the caller."""
    if isinstance(lhs, Transform):
        return F.transform(lhs.name, resolve_lhs(lhs.inner, field))
    return field(lhs) if field is not None else F.lookup(lhs.name, lhs.arg)
