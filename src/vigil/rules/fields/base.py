"""The field registry: field definitions, their lookup by name, transformers
and value rendering.

Every field is a :class:`FieldDef`: a name, a value type, and an extractor
``fn(ev, cx)`` returning the value or ``None`` when it is not available (Falco
prints ``<NA>``).  ``cx`` is the evaluation context (the RuleEngine): it has
``proctable`` (a ProcessTable or None), ``written_paths`` (upper-layer hook or
None) and ``evnum``.

Fields that take an argument (``proc.aname[2]``, ``k8s.pod.label[app]``) have a
``make(arg)`` factory returning the extractor for that argument.  Fields that
hold several values at once (``proc.aname`` without an index: every ancestor)
have ``multi=True`` and return a list; comparisons on them are true when any
element matches.  The field classes (evt, proc, user, fd, container) register
themselves with :func:`define`.
"""
from __future__ import annotations

import base64
import functools
import ipaddress
from typing import Optional


class FieldDef:
    __slots__ = ("name", "type", "fn", "make", "arg", "multi", "inline", "render", "fast", "desc")

    def __init__(self, name, type_, fn=None, *, make=None, arg=None, multi=False, inline=None,
                 render=None, fast=None, desc=""):
        self.desc = desc            # what the field means (vigil fields lists it)
        self.fast = fast or {}      # {kind: fn(ev, cx)} specialised extractors for hot kinds
        self.name = name
        self.type = type_          # str int bool ip ipnet abstime
        self.fn = fn               # fn(ev, cx) for the argument-less form
        self.make = make           # make(arg) -> fn(ev, cx), for fields with an argument
        self.arg = arg             # None | "required" | "optional" | "index" | "index_opt"
        self.multi = multi         # argument-less form yields a list (any-match)
        self.inline = inline       # {kind or None: python expression over ev} for hot fields
        self.render = render


FIELDS: dict = {}


def define(name, type_="str", fn=None, **kw):
    """Register field `name`."""
    FIELDS[name] = FieldDef(name, type_, fn, **kw)


class Extractor:
    """A resolved field expression (a field with its argument, possibly transformed)."""
    __slots__ = ("key", "type", "fn", "multi", "inline", "render", "fast")

    def __init__(self, key, type_, fn, multi=False, inline=None, render=None, fast=None):
        self.key, self.type, self.fn, self.multi = key, type_, fn, multi
        self.inline, self.render = inline or {}, render
        self.fast = fast or {}

    def fn_for(self, kind):
        return self.fast.get(kind, self.fn)

    def inline_for(self, kind) -> Optional[str]:
        x = self.inline.get(kind)
        return x if x is not None else self.inline.get(None)


class UnknownField(KeyError):
    pass


class BadFieldArg(ValueError):
    pass


# Field families resolved by name: prefix -> make(name, sub) -> Extractor, for
# names like evt.arg.<sub> that are not in FIELDS one by one.
FAMILIES: dict = {}


def _family_lookup(name):
    for prefix in FAMILIES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix
    return None


def lookup(name: str, arg: Optional[str] = None) -> Extractor:
    """Resolve a field name (+ argument) to an Extractor.

    Raises UnknownField for a name vigil does not know and BadFieldArg for an
    argument the field does not accept.
    """
    fd = FIELDS.get(name)
    if fd is None:
        fam = _family_lookup(name)
        if fam is None:
            raise UnknownField(name)
        if arg is not None:
            raise BadFieldArg(f"field '{name}' takes no argument")
        return FAMILIES[fam](name, name[len(fam):])
    text = name if arg is None else f"{name}[{arg}]"
    if arg is None:
        if fd.arg in ("required", "index"):
            raise BadFieldArg(f"field '{name}' requires an argument, e.g. {name}[1]")
        if fd.fn is None:
            raise BadFieldArg(f"field '{name}' requires an argument")
        return Extractor(text, fd.type, fd.fn, fd.multi, fd.inline, fd.render, fd.fast)
    if fd.arg is None:
        raise BadFieldArg(f"field '{name}' does not take an argument")
    if fd.arg in ("index", "index_opt"):
        try:
            a = int(arg.strip())
        except ValueError:
            raise BadFieldArg(f"field '{name}' needs a numeric index, got [{arg}]") from None
        if a < 0:
            raise BadFieldArg(f"field '{name}' needs a non-negative index, got [{arg}]")
        return Extractor(text, fd.type, fd.make(a), False, None, fd.render)
    return Extractor(text, fd.type, fd.make(arg), False, None, fd.render)


def known(name: str) -> bool:
    return name in FIELDS or _family_lookup(name) is not None


def safe(fn):
    """Extractors never raise: a value that cannot be computed is missing."""
    @functools.wraps(fn)
    def wrapper(ev, cx):
        try:
            return fn(ev, cx)
        except Exception:
            return None
    return wrapper


# --------------------------------------------------------------- transformers

def _t_lower(v):
    return v.lower() if isinstance(v, str) else None if v is None else str(v).lower()


def _t_upper(v):
    return v.upper() if isinstance(v, str) else None if v is None else str(v).upper()


def _t_b64(v):
    if v is None:
        return None
    try:
        return base64.b64decode(str(v), validate=False).decode("utf-8", "replace")
    except Exception:
        return None


def _t_basename(v):
    if v is None:
        return None
    s = str(v)
    return s.rsplit("/", 1)[-1]


def _t_len(v):
    if v is None:
        return None
    if isinstance(v, (list, tuple, str)):
        return len(v)
    return len(str(v))


TRANSFORMS = {"tolower": (_t_lower, "str"), "toupper": (_t_upper, "str"), "b64": (_t_b64, "str"),
              "basename": (_t_basename, "str"), "len": (_t_len, "int")}


def transform(name: str, inner: Extractor) -> Extractor:
    t, rtype = TRANSFORMS[name]
    f = inner.fn
    if inner.multi:
        def fn(ev, cx):
            vals = f(ev, cx)
            return None if vals is None else [t(v) for v in vals]
    else:
        def fn(ev, cx):
            return t(f(ev, cx))
    return Extractor(f"{name}({inner.key})", rtype, safe(fn), inner.multi)


# --------------------------------------------------------------- rendering

def render_value(v, ext: Optional[Extractor] = None) -> str:
    if v is None:
        return "<NA>"
    if isinstance(v, list):
        return render_value(v[0], ext) if v else "<NA>"
    if ext is not None and ext.render is not None:
        try:
            return ext.render(v)
        except Exception:
            return str(v)
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


def json_value(v):
    if isinstance(v, list):
        return v[0] if v else None
    return v


@functools.lru_cache(maxsize=65536)
def parse_ip(s):
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        return None


def all_field_names() -> list:
    return sorted(FIELDS) + ["evt.arg.<name>", "evt.rawarg.<name>"]
