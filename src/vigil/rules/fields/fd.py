"""fd.* fields (the file or socket an event works on) and fs.path.*.

Socket convention: an event's ``saddr/sport`` is the local end of the socket and
``daddr/dport`` the remote end.  For connect/sendto (and close/dup) the local
end is the client; for accept the local end is the server; for bind/listen only
the server (local) end exists.
"""
from __future__ import annotations

import os

from vigil.events import Kind
from vigil.state.fdtable import connected_by
from vigil.rules.fields.base import define, safe
from vigil.rules.fields.flags import O_DIR_MASK, O_DIRECTORY


_SOCK_KINDS = (Kind.CONNECT, Kind.ACCEPT, Kind.LISTEN, Kind.BIND, Kind.DNS)


def fd_class(ev):
    """'file', 'directory', 'ipv4', 'ipv6', 'unix', other fd type string, or None."""
    k = ev.kind
    if k is Kind.OPEN:
        f = ev.flags or 0
        if (f & O_DIR_MASK) == O_DIRECTORY:
            return "directory"
        return "file"
    if k is Kind.MEMFD:
        return "file"
    if k is Kind.DUP:
        t = ev.fd_type
        if t:
            return t
    fam = ev.family
    if fam is not None:
        if fam == "AF_INET":
            return "ipv4"
        if fam == "AF_INET6":
            return "ipv6"
        if fam == "AF_UNIX":
            return "unix"
        return "socket"
    if k in _SOCK_KINDS:
        return "ipv4" if ev.daddr or ev.saddr else None
    if k in (Kind.CLOSE, Kind.DUP) and ev.path:
        return "file"
    return None


_TYPECHAR = {"file": "f", "directory": "d", "ipv4": "4", "ipv6": "6", "unix": "u", "socket": "s",
             "pipe": "p", "event": "e", "signalfd": "s", "eventpoll": "l", "inotify": "i",
             "timerfd": "t", "netlink": "n", "bpf": "b", "memfd": "f", "userfaultfd": "u"}


def _is_inet(c):
    return c == "ipv4" or c == "ipv6"


def _endpoints(ev):
    """(client_ip, client_port, server_ip, server_port) for inet events."""
    k = ev.kind
    if k is Kind.ACCEPT:
        return ev.daddr, ev.dport, ev.saddr, ev.sport
    if k is Kind.LISTEN or k is Kind.BIND:
        return None, None, ev.saddr, ev.sport
    return ev.saddr, ev.sport, ev.daddr, ev.dport


def sock_name(ev, c):
    """The socket's tuple for an event whose fd class (fd_class) is `c`."""
    if c == "unix":
        return ev.daddr or ev.saddr or ev.path or None
    if not _is_inet(c):
        return None
    cip, cport, sip, sport = _endpoints(ev)
    if cip is None and cport is None:
        return f"{sip}:{sport}" if sip is not None or sport is not None else None
    return f"{cip}:{cport}->{sip}:{sport}"


def _fd_name(ev, cx):
    c = fd_class(ev)
    if c is None:
        return None
    if not (_is_inet(c) or c == "unix"):
        return ev.path
    return sock_name(ev, c)


def _fd_file_path(ev):
    c = fd_class(ev)
    if c in ("file", "directory"):
        return ev.path
    return None


def _fd_directory(ev, cx):
    c = fd_class(ev)
    if c != "file" and c != "directory":
        return None
    p = ev.path
    if not p:
        return None
    if c == "directory" and ev.kind is Kind.OPEN:
        return p
    d = os.path.dirname(p)
    return d or None


def _fd_filename(ev, cx):
    p = _fd_file_path(ev)
    if not p:
        return None
    return os.path.basename(p) or None


def _fd_num(ev, cx):
    """The fd the event works on; -1 when the syscall that was to create one
    failed (Falco keeps no fd for it)."""
    if ev.fd is not None:
        return ev.fd
    k = ev.kind
    if k is Kind.OPEN or k is Kind.ACCEPT or k is Kind.MEMFD or k is Kind.SOCKET:
        r = ev.ret
        return None if r is None else r if r >= 0 else -1
    return None


def _ip_part(which):
    def fn(ev, cx):
        if not _is_inet(fd_class(ev)):
            return None
        return _endpoints(ev)[which]
    return safe(fn)


def _local_remote(which):
    def fn(ev, cx):
        if not _is_inet(fd_class(ev)):
            return None
        k = ev.kind
        if k is Kind.LISTEN or k is Kind.BIND:
            return (ev.saddr, ev.sport, None, None)[which]
        return (ev.saddr, ev.sport, ev.daddr, ev.dport)[which]
    return safe(fn)


def _multi_ip(ev, cx):
    if not _is_inet(fd_class(ev)):
        return []
    cip, _, sip, _ = _endpoints(ev)
    return [x for x in (cip, sip) if x is not None]


def _multi_port(ev, cx):
    if not _is_inet(fd_class(ev)):
        return []
    _, cport, _, sport = _endpoints(ev)
    return [x for x in (cport, sport) if x is not None]


def _open_typechar(ev, cx):
    f = ev.flags
    if f and (f & O_DIR_MASK) == O_DIRECTORY:
        return "d"
    return "f"


def _open_directory(ev, cx):
    p = ev.path
    if not p:
        return None
    f = ev.flags
    if f and (f & O_DIR_MASK) == O_DIRECTORY:
        return p
    i = p.rfind("/")
    if i < 0:
        return None
    return p[:i] or "/"


def _open_filename(ev, cx):
    p = ev.path
    if not p:
        return None
    return p[p.rfind("/") + 1:] or None


define("fd.name", "str", safe(_fd_name), inline={Kind.OPEN: "ev.path"})
def _fd_nameraw(ev, cx):
    """The path as the syscall was given it, before '..' and '//' are
    collapsed (a relative path has the base directory in front)."""
    raw = ev.path_raw
    return raw if raw is not None and fd_class(ev) in ("file", "directory") else _fd_name(ev, cx)


define("fd.nameraw", "str", safe(_fd_nameraw), inline={Kind.OPEN: "(ev.path_raw or ev.path)"})
define("fd.directory", "str", safe(_fd_directory), fast={Kind.OPEN: _open_directory})
define("fd.filename", "str", safe(_fd_filename), fast={Kind.OPEN: _open_filename})
define("fd.num", "int", safe(_fd_num), inline={Kind.OPEN: "(-1 if ev.ret is not None and ev.ret < 0 else ev.ret)"})
define("fd.type", "str", safe(lambda ev, cx: fd_class(ev)))
def _fd_typechar(ev, cx):
    c = fd_class(ev)
    return _TYPECHAR.get(c, "o") if c else None


define("fd.typechar", "str", safe(_fd_typechar), fast={Kind.OPEN: _open_typechar})
define("fd.l4proto", "str", safe(lambda ev, cx: (ev.proto or None) if _is_inet(fd_class(ev)) else None))
define("fd.sockfamily", "str", safe(lambda ev, cx: {"ipv4": "ip", "ipv6": "ip", "unix": "unix"}.get(fd_class(ev))))
define("fd.is_server", "bool", safe(lambda ev, cx: ev.kind in (Kind.ACCEPT, Kind.LISTEN, Kind.BIND) if fd_class(ev) else None))
define("fd.cip", "ip", _ip_part(0))
define("fd.cport", "int", _ip_part(1))
define("fd.sip", "ip", _ip_part(2))
define("fd.sport", "int", _ip_part(3))
define("fd.lip", "ip", _local_remote(0))
define("fd.lport", "int", _local_remote(1))
define("fd.rip", "ip", _local_remote(2))
define("fd.rport", "int", _local_remote(3))
define("fd.dip", "ip", _ip_part(2))
define("fd.dport", "int", _ip_part(3))
define("fd.ip", "ip", safe(_multi_ip), multi=True)
define("fd.port", "int", safe(_multi_port), multi=True)
define("fd.net", "ipnet", safe(_multi_ip), multi=True)
define("fd.cnet", "ipnet", _ip_part(0))
define("fd.snet", "ipnet", _ip_part(2))
define("fd.lnet", "ipnet", _local_remote(0))
define("fd.rnet", "ipnet", _local_remote(2))
def _fd_connected(ev, cx):
    v = getattr(ev, "fd_connected", None)
    if v is not None:
        return v
    if not (_is_inet(fd_class(ev)) or fd_class(ev) == "unix"):
        return None
    v = connected_by(ev)
    return False if v is None else v


def _fd_name_changed(ev, cx):
    v = getattr(ev, "fd_name_changed", None)
    if v is not None:
        return v
    return None if fd_class(ev) is None else False


def _ip_name(which):
    """fd.{c,s,l,r}ip.name: the rule domain names (the engine's ``names``) that resolve to the
    IP, for a socket with a connection tuple (not a listening one)."""
    ip_of = _ip_part(which) if which in (0, 2) else _local_remote(which - 1)

    def fn(ev, cx):
        if ev.kind is Kind.LISTEN or ev.kind is Kind.BIND:
            return []
        names = getattr(cx, "names", None)
        ip = ip_of(ev, cx)
        return list(names.names_for(ip)) if ip is not None and names is not None else []
    return safe(fn)


# compared with =, != and in only: the values are the names to resolve
IP_NAME_FIELDS = ("fd.cip.name", "fd.sip.name", "fd.lip.name", "fd.rip.name")
for _name, _which in zip(IP_NAME_FIELDS, (0, 2, 1, 3)):
    define(_name, "str", _ip_name(_which), multi=True)

define("fd.connected", "bool", safe(_fd_connected))
define("fd.name_changed", "bool", safe(_fd_name_changed))

def _realpath(ev, cx):
    """The opened file's own path: for a file recognised by identity, the
    rules' path for it (a hardlink to /etc/shadow opened anywhere is
    /etc/shadow); else the path the kernel resolved from the file (when it
    had to: a spelling the kernel filter cannot judge, a relative or long
    path, open_by_handle_at, io_uring); else the path as given."""
    if ev.kind is not Kind.OPEN:
        return None
    if ev.realpath:
        return ev.realpath
    return ev.path if ev.ret is not None and ev.ret >= 0 else None


# Falco: the inode number and the device (major/minor, stat's st_dev
# encoding) of the opened file; vigil has them for successful opens
define("fd.ino", "int", lambda ev, cx: ev.ino if ev.kind is Kind.OPEN else None)
define("fd.dev", "int", lambda ev, cx: ev.dev if ev.kind is Kind.OPEN else None)
define("fd.realpath", "str", safe(_realpath))
define("fd.uid", "str", lambda ev, cx: None)

# fs.path.*: the paths a filesystem syscall works on.
_ONE_PATH = (Kind.OPEN, Kind.UNLINK, Kind.MKDIR, Kind.CHMOD, Kind.MEMFD, Kind.MODULE)
_TWO_PATH = (Kind.RENAME, Kind.LINK, Kind.SYMLINK)
define("fs.path.name", "str", lambda ev, cx: ev.path if ev.kind in _ONE_PATH else None)
define("fs.path.nameraw", "str", lambda ev, cx: ev.path if ev.kind in _ONE_PATH else None)
define("fs.path.source", "str", lambda ev, cx: ev.path if ev.kind in _TWO_PATH else None)
define("fs.path.sourceraw", "str", lambda ev, cx: ev.path if ev.kind in _TWO_PATH else None)
define("fs.path.target", "str", lambda ev, cx: ev.path2 if ev.kind in _TWO_PATH else None)
define("fs.path.targetraw", "str", lambda ev, cx: ev.path2 if ev.kind in _TWO_PATH else None)
