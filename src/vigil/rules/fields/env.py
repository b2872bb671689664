"""proc.env and proc.aenv: the environment a process was started with.

The kernel sends it with the exec (at most ENV_LEN bytes) only while a loaded
rule reads one of these fields (RuleEngine.wants_env); without it they are
<NA>.  libsinsp's forms: ``proc.env`` is every ``NAME=value`` joined by spaces,
``proc.env[NAME]`` the value of NAME ("" when the process has no NAME);
``proc.aenv[N]`` is proc.env of the N-th ancestor (0: the process itself),
``proc.aenv[NAME]`` the value of NAME in the nearest ancestor that has it (up
to 20 levels), and ``proc.aenv`` without an argument matches any ancestor's.
"""
from __future__ import annotations

from vigil.events import Kind
from vigil.rules.fields.base import define, safe
from vigil.state.proctable import proc_env

ENV_FIELDS = frozenset(("proc.env", "proc.aenv"))
_AENV_DEPTH = 20


def _env(ev):
    """The event's process's environment (a list) or None."""
    if ev.kind is Kind.EXEC and ev.env is not None:
        return ev.env
    p = ev.proc
    return proc_env(p) if p is not None else None


def _joined(env):
    return None if env is None else " ".join(env)


def _value(env, name):
    if env is None:
        return None
    pre = name + "="
    for kv in env:
        if kv.startswith(pre):
            return kv[len(pre):]
    return ""


def _lineage(ev, cx):
    pt = cx.proctable if cx is not None else None
    p = ev.proc
    if pt is None or p is None:
        return []
    return pt.ancestors(p.pid, _AENV_DEPTH)


def _env_arg(arg):
    name = arg.strip()
    return safe(lambda ev, cx: _value(_env(ev), name))


def _aenv_arg(arg):
    a = arg.strip()
    if a.isdigit():
        n = int(a)
        if n == 0:
            return safe(lambda ev, cx: _joined(_env(ev)))

        def nth(ev, cx):
            chain = _lineage(ev, cx)
            return _joined(proc_env(chain[n - 1])) if len(chain) >= n else None
        return safe(nth)

    def first(ev, cx):
        for p in _lineage(ev, cx):
            env = proc_env(p)
            v = _value(env, a)
            if v:
                return v
        return None
    return safe(first)


define("proc.env", "str", safe(lambda ev, cx: _joined(_env(ev))), make=_env_arg, arg="optional",
       desc="The environment the process was started with, as 'NAME=value NAME1=value1' "
            "(at most 4096 bytes, captured at exec while a rule reads it; <NA> otherwise); "
            "proc.env[NAME]: the value of NAME (empty when it is not set).")
define("proc.aenv", "str",
       safe(lambda ev, cx: [e for e in (_joined(proc_env(p)) for p in _lineage(ev, cx))
                            if e is not None]),
       make=_aenv_arg, arg="optional", multi=True,
       desc="proc.env of an ancestor: proc.aenv[N] the N-th (0: the process), proc.aenv[NAME] "
            "the value of NAME in the nearest ancestor that has it (up to 20 levels); without "
            "an argument, matches any ancestor's.")
