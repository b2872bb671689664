"""What vigil remembers about sockets between events, for Falco's per-fd
fields: whether a socket is connected (``fd.connected``) and whether this
event changed the socket's tuple (``fd.name_changed``).

libsinsp keeps an fd table per process; vigil's events each carry their own
tuple, so only the last tuple and the connected flag of a (pid, fd) are kept,
in a bounded LRU map.  :meth:`FdTable.observe` runs once per socket event,
before rules look at it, and leaves the answers on the event
(``fd_connected``, ``fd_name_changed``).
"""
from __future__ import annotations

import errno
from collections import OrderedDict

from vigil.events import Kind

_EINPROGRESS = -errno.EINPROGRESS

_ACCEPT, _CLOSE, _CONNECT, _SOCKET, _LISTEN, _BIND = (Kind.ACCEPT, Kind.CLOSE, Kind.CONNECT, Kind.SOCKET,
                                                     Kind.LISTEN, Kind.BIND)

# kinds that say something about a socket fd
OBSERVED = frozenset((Kind.CONNECT, Kind.ACCEPT, Kind.LISTEN, Kind.BIND, Kind.DNS, Kind.CLOSE,
                      Kind.SOCKET))


def connected_by(ev):
    """Whether the event itself leaves its socket connected: a connect that
    succeeded or is in progress (Falco counts EINPROGRESS as connected), an
    accepted socket; None when the event alone does not say."""
    k = ev.kind
    r = ev.ret
    if k is Kind.CONNECT:
        return r is not None and (r >= 0 or r == _EINPROGRESS)
    if k is Kind.ACCEPT:
        return r is None or r >= 0
    if k in (Kind.LISTEN, Kind.BIND, Kind.SOCKET):
        return False
    return None


def tuple_of(ev):
    """The event's (client, server) tuple, or None."""
    if ev.saddr is None and ev.daddr is None:
        return None
    return (ev.saddr, ev.sport, ev.daddr, ev.dport)


class FdTable:
    def __init__(self, size: int = 65536):
        self.size = size
        self._fds: OrderedDict = OrderedDict()     # (pid, fd) -> [tuple, connected]

    def __len__(self):
        return len(self._fds)

    def observe(self, ev) -> None:
        # one pass, no helper calls: this runs for every socket event
        k = ev.kind
        fd = ev.fd
        r = ev.ret
        if k is _ACCEPT and r is not None and r >= 0:
            fd = r               # the new socket, not the listening one
        if fd is None or fd < 0:
            return
        key = (ev.pid, fd)
        fds = self._fds
        if k is _CLOSE:
            fds.pop(key, None)
            return
        if k is _SOCKET:
            fds[key] = [None, False]
            ev.fd_connected, ev.fd_name_changed = False, False
            if len(fds) > self.size:
                self._trim()
            return
        st = fds.get(key)
        if st is None:
            st = fds[key] = [None, False]
            if len(fds) > self.size:
                self._trim()
        else:
            fds.move_to_end(key)
        if k is _CONNECT:
            st[1] = r is not None and (r >= 0 or r == _EINPROGRESS)
        elif k is _ACCEPT:
            st[1] = r is None or r >= 0
        elif k is _LISTEN or k is _BIND:
            st[1] = False
        if ev.saddr is None and ev.daddr is None:
            changed = False
        else:
            t = (ev.saddr, ev.sport, ev.daddr, ev.dport)
            changed = t != st[0]
            st[0] = t
        ev.fd_connected = st[1]
        ev.fd_name_changed = changed

    def _trim(self):
        fds = self._fds
        while len(fds) > self.size:
            fds.popitem(last=False)
