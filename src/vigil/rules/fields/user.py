"""user.* and group.* fields."""
from __future__ import annotations

import functools
import grp
import pwd

from vigil.events import Kind
from vigil.rules.fields.base import define, safe


@functools.lru_cache(maxsize=4096)
def _user_name(uid):
    e = _user_entry(uid)
    return e.pw_name if e is not None else None


@functools.lru_cache(maxsize=4096)
def _user_entry(uid):
    try:
        return pwd.getpwuid(uid)
    except (KeyError, OverflowError, TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=4096)
def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError, TypeError, ValueError):
        return None


def _in_container(ev):
    c = ev.container
    return c is not None and not c.is_host


def _uname(ev, uid):
    if uid is None:
        return None
    if _in_container(ev):
        return "root" if uid == 0 else None
    return _user_name(uid)


def _loginuid(ev):
    lu = None
    if ev.kind is Kind.EXEC and ev.loginuid is not None:
        lu = ev.loginuid
    elif ev.proc is not None:
        lu = ev.proc.loginuid
    if lu is None:
        return None
    if lu == 0xFFFFFFFF:
        return -1
    return lu


define("user.uid", "int", lambda ev, cx: ev.uid, inline={None: "ev.uid"})
define("user.name", "str", safe(lambda ev, cx: _uname(ev, ev.uid)))
define("user.loginuid", "int", safe(lambda ev, cx: _loginuid(ev)))
define("user.loginname", "str", safe(lambda ev, cx: (lambda lu: None if lu is None or lu < 0 else _uname(ev, lu))(_loginuid(ev))))
define("user.homedir", "str", safe(lambda ev, cx: None if _in_container(ev) else (lambda e: e.pw_dir if e else None)(_user_entry(ev.uid))))
define("user.shell", "str", safe(lambda ev, cx: None if _in_container(ev) else (lambda e: e.pw_shell if e else None)(_user_entry(ev.uid))))
define("group.gid", "int", lambda ev, cx: ev.gid, inline={None: "ev.gid"})
define("group.name", "str", safe(lambda ev, cx: ("root" if ev.gid == 0 else None) if _in_container(ev) else _group_name(ev.gid)))
