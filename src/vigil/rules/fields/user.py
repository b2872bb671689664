"""user.* and group.* fields."""
from __future__ import annotations

import functools
import grp
import pwd
import time

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


# container id -> (time read, {uid: name}) from the container's own /etc/passwd
_CONTAINER_USERS: dict = {}
_REREAD_S = 30.0


def _read_passwd(path):
    users = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split(":")
            if len(parts) >= 3 and parts[2].isdigit():
                users.setdefault(int(parts[2]), parts[0])
    return users


def _container_user(ev, uid):
    """A container user's name, from the container's /etc/passwd (read through
    the process's root, cached per container, read again when a uid is not in
    it and the copy is old); "<NA>" when it has none, as Falco shows it."""
    cid = ev.container.id
    now = time.monotonic()
    cached = _CONTAINER_USERS.get(cid)
    if cached is None or (uid not in cached[1] and now - cached[0] > _REREAD_S):
        try:
            users = _read_passwd(f"/proc/{ev.pid}/root/etc/passwd")
        except OSError:
            users = cached[1] if cached is not None else {}
        if len(_CONTAINER_USERS) > 4096:
            _CONTAINER_USERS.clear()
        _CONTAINER_USERS[cid] = cached = (now, users)
    name = cached[1].get(uid)
    if name is None:
        return "root" if uid == 0 else "<NA>"
    return name


def user_name(ev, uid):
    """The name of user `uid` as the event's process sees it: the host's user
    database, or the container's."""
    if uid is None:
        return None
    if _in_container(ev):
        return _container_user(ev, uid)
    return _user_name(uid)


_uname = user_name


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
