"""Rule outputs: the ``%field`` placeholders of an output, parsed once, and
formatting an alert's text and field values from an event."""
from __future__ import annotations

from vigil.rules import fields as F
from vigil.rules.condition import resolve_lhs
from vigil.rules.parser import parse_lhs

_FIELD_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


class OutputFormat:
    """A rule output with %field placeholders, parsed once."""

    def __init__(self, text: str):
        # YAML block scalars (`output: >`) end in a newline; an alert is one line
        self.text = text.strip()
        self.parts = []    # str or Extractor
        self.fields = []   # Extractors, in order of first appearance
        self._parse()

    def _add(self, ext):
        self.parts.append(ext)
        if all(f.key != ext.key for f in self.fields):
            self.fields.append(ext)

    def _parse(self):
        s = self.text
        n = len(s)
        i = 0
        lit = []
        while i < n:
            c = s[i]
            if c != "%":
                lit.append(c)
                i += 1
                continue
            if i + 1 < n and s[i + 1] == "%":
                lit.append("%")
                i += 2
                continue
            j = i + 1
            if j < n and s[j] == "(":
                k = _match_paren(s, j)
                if k < 0:
                    raise ValueError(f"unterminated '%(' at offset {i}")
                ext = resolve_lhs(parse_lhs(s[j + 1:k]))
                self._flush(lit)
                self._add(ext)
                i = k + 1
                continue
            k = j
            while k < n and s[k] in _FIELD_CHARS:
                k += 1
            word = s[j:k]
            if word in F.TRANSFORMS and k < n and s[k] == "(":
                end = _match_paren(s, k)
                if end < 0:
                    raise ValueError(f"unterminated transformer in output at offset {i}")
                ext = resolve_lhs(parse_lhs(s[j:end + 1]))
                self._flush(lit)
                self._add(ext)
                i = end + 1
                continue
            cand = word.rstrip(".")
            while cand and not F.known(cand):
                cand = cand[:-1].rstrip(".")
            if not cand:
                if "." in word:
                    raise ValueError(f"unknown field '{word.rstrip('.')}' in output")
                lit.append("%")
                i += 1
                continue
            k = j + len(cand)
            arg = None
            fd = F.FIELDS.get(cand)
            if k < n and s[k] == "[" and fd is not None and fd.arg is not None:
                close = s.find("]", k)
                if close < 0:
                    raise ValueError(f"unterminated '[' after %{cand} in output")
                arg = s[k + 1:close]
                k = close + 1
            ext = F.lookup(cand, arg)
            self._flush(lit)
            self._add(ext)
            i = k
        self._flush(lit)

    def _flush(self, lit):
        if lit:
            self.parts.append("".join(lit))
            lit.clear()

    def format(self, ev, cx):
        vals = {}
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            key = p.key
            if key in vals:
                v = vals[key]
            else:
                try:
                    v = p.fn(ev, cx)
                except Exception:
                    v = None
                vals[key] = v
            out.append(F.render_value(v, p))
        fields = {}
        for f in self.fields:
            v = vals.get(f.key)
            fields[f.key] = F.json_value(v)
        return "".join(out), fields


def _match_paren(s, j):
    depth = 0
    for k in range(j, len(s)):
        if s[k] == "(":
            depth += 1
        elif s[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    return -1
