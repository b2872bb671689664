"""Pairing: the chunks the kernel sends up (struct ev_l7, l7.h) -> completed
requests (record.L7Request) handed to the sinks.

Per connection -- (process, fd, plaintext or TLS) -- a queue of the requests
sent and not yet answered: a request chunk adds one entry per request it
holds (pipelined Redis commands, PostgreSQL units), a response chunk ends as
many as it holds answers, in order; a close ends what is left as errors
(``closed``).  Replies the kernel did not send up (the rest of a pipelined
batch cut by a read) are ended, as answered, when the next request comes
after a response.  Memory is bounded: at most ``max_connections``
connections (least recently used dropped first, counted) and ``MAX_PENDING``
requests each.

``L7Tracker.sinks`` is the list of consumers: fn(L7Request), called on the
event loop for each completed request; append to it (the metrics, the
``http`` rule events and the service map do).  A sink that raises is logged
and counted, never stops the others.
"""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
from collections import OrderedDict, deque

from vigil.events import structs as S
from vigil.l7 import http, postgres, redis
from vigil.l7.record import HTTP, INBOUND, OUTBOUND, POSTGRES, REDIS, L7Request

log = logging.getLogger("vigil.l7")

PROTO_BITS = {HTTP: S.L7_PROTOS["L7_PROTO_HTTP"], REDIS: S.L7_PROTOS["L7_PROTO_REDIS"],
              POSTGRES: S.L7_PROTOS["L7_PROTO_POSTGRES"]}
_PROTO_NAMES = {v: k for k, v in PROTO_BITS.items()}
DIR_READ, DIR_WRITE, DIR_CLOSE = (S.L7_DIRS[k] for k in ("L7_DIR_READ", "L7_DIR_WRITE",
                                                         "L7_DIR_CLOSE"))
F_TLS, F_REQUEST, F_RESPONSE, F_CLIENT = (S.L7_FLAGS[k] for k in (
    "L7_F_TLS", "L7_F_REQUEST", "L7_F_RESPONSE", "L7_F_CLIENT"))
MAX_PENDING = 1024


class _Head(ctypes.Structure):
    _fields_ = S.EvL7._fields_[:-1]       # every member but data


_HEAD, _HEAD_NAMES = S.struct_format(_Head)
assert _HEAD.size == S.L7_HDR_SIZE
_I = {n: i for i, n in enumerate(_HEAD_NAMES)}
_UID, _COMM = _I["uid"], _I["comm"]
_TS, _PID, _TID, _CG, _FD, _LEN, _DIR, _PROTO, _FLAGS, _FAM, _CAP, _SPORT, _DPORT, _SADDR, \
    _DADDR = (_I[n] for n in ("ts", "pid", "tid", "cgroup_id", "fd", "len", "dir", "protocol",
                             "flags", "family", "cap", "sport", "dport", "saddr", "daddr"))


def protocol_bits(names) -> int:
    bits = 0
    for n in names:
        bits |= PROTO_BITS[n]
    return bits


def _ip(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(bytes(raw[:4])))
    a = ipaddress.IPv6Address(bytes(raw[:16]))
    return str(a.ipv4_mapped or a)


class _Conn:
    __slots__ = ("proto", "direction", "tgid", "fd", "cgroup_id", "local_ip", "local_port",
                 "peer_ip", "peer_port", "tls", "pending", "answered_ns")

    def __init__(self, proto, direction, head, tls):
        self.proto = proto
        self.direction = direction
        self.tgid = head[_PID]
        self.fd = head[_FD]
        self.cgroup_id = head[_CG]
        fam = head[_FAM]
        self.local_ip = _ip(fam, head[_SADDR])
        self.local_port = head[_SPORT]
        self.peer_ip = _ip(fam, head[_DADDR])
        self.peer_port = head[_DPORT]
        self.tls = tls
        self.pending = deque()     # (start ns, tid, method, path, uid, comm)
        self.answered_ns = 0       # the last response seen (0: none since the last request)


_new_record = object.__new__
_FIELDS = ("protocol", "direction", "tgid", "pid", "fd", "cgroup_id", "local_ip", "local_port",
           "peer_ip", "peer_port", "start_ns", "duration_s", "method", "path", "status", "error",
           "closed", "tls", "uid", "comm")
# fields added to the record later take their defaults; these must lead, in this order
assert tuple(L7Request.__dataclass_fields__)[:len(_FIELDS)] == _FIELDS


def _record(*values) -> L7Request:
    """An L7Request without the frozen dataclass's per-field setattr (a
    third of the pairing's time): the same object, its fields set at once."""
    r = _new_record(L7Request)
    r.__dict__.update(zip(_FIELDS, values))
    return r


class L7Tracker:
    def __init__(self, max_connections: int = 16384):
        self.sinks: list = []            # fn(L7Request); see the module's doc
        self.max_connections = max_connections
        self.conns: OrderedDict = OrderedDict()
        self._comms: dict = {}
        self.stats = {"records": 0, "requests": 0, "closed": 0, "unmatched": 0,
                      "evicted": 0, "overflow": 0, "decode_errors": 0, "sink_errors": 0}

    # --- the ring's records ---

    def on_raw(self, buf, offset: int = 0) -> None:
        """One record of the l7_events ring (a memoryview and its offset)."""
        try:
            head = _HEAD.unpack_from(buf, offset)
            cap = min(head[_CAP], S.L7_DATA_LEN)
            data = bytes(buf[offset + S.L7_HDR_SIZE:offset + S.L7_HDR_SIZE + cap])
            self.on_chunk(head, data)
        except Exception:
            self.stats["decode_errors"] += 1
            if self.stats["decode_errors"] <= 10:
                log.exception("L7 record could not be read")

    def on_chunk(self, head: tuple, data: bytes) -> None:
        self.stats["records"] += 1
        flags = head[_FLAGS]
        tls = bool(flags & F_TLS)
        if head[_DIR] == DIR_CLOSE:
            for t in (False, True):
                c = self.conns.pop((head[_PID], head[_FD], t), None)
                if c is not None:
                    self._close(c, head[_TS])
            return
        proto = _PROTO_NAMES.get(head[_PROTO])
        if proto is None:
            return
        key = (head[_PID], head[_FD], tls)
        c = self.conns.get(key)
        if c is None or c.proto != proto:
            if not flags & F_REQUEST:
                self.stats["unmatched"] += 1
                return
            if c is not None:
                self._close(c, head[_TS])       # the fd now carries something else
            c = _Conn(proto, OUTBOUND if flags & F_CLIENT else INBOUND, head, tls)
            self.conns[key] = c
            while len(self.conns) > self.max_connections:
                _, old = self.conns.popitem(last=False)
                self.stats["evicted"] += 1
                self.stats["overflow"] += len(old.pending)
        else:
            self.conns.move_to_end(key)
        cut = head[_LEN] > len(data)
        if flags & F_REQUEST:
            self._requests(c, head, data)
        elif flags & F_RESPONSE:
            self._responses(c, head[_TS], data, cut)

    # --- pairing ---

    def _requests(self, c: _Conn, head: tuple, data: bytes) -> None:
        ts = head[_TS]
        if c.answered_ns and c.pending:
            # replies not sent up (a pipelined batch read in pieces): answered
            end = c.answered_ns
            while c.pending:
                self._done(c, c.pending.popleft(), end, False, 0)
        c.answered_ns = 0
        pid, uid = head[_TID], head[_UID]
        raw = head[_COMM]
        comm = self._comms.get(raw)
        if comm is None:
            if len(self._comms) > 4096:
                self._comms.clear()
            comm = self._comms[raw] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        if c.proto == HTTP:
            method, path = http.request(data)
            items = [(method, path)]
        elif c.proto == REDIS:
            names, _cut = redis.commands(data)
            items = [(n, "") for n in names] or [("", "")]
        else:
            items = [("QUERY" if q else "", "") for q in postgres.units(data)] or [("QUERY", "")]
        for method, path in items:
            if len(c.pending) >= MAX_PENDING:
                self.stats["overflow"] += 1
                break
            c.pending.append((ts, pid, method, path, uid, comm))

    def _responses(self, c: _Conn, ts: int, data: bytes, cut: bool) -> None:
        if not c.pending:
            self.stats["unmatched"] += 1
            return
        if c.proto == HTTP:
            code = http.status(data)
            if http.interim(code):
                return
            answers = [(code >= 500 or code == 0, code)]
        elif c.proto == REDIS:
            errs, _cut = redis.replies(data)
            answers = [(e, 0) for e in errs] or [(False, 0)]
        else:
            answers = [(e, 0) for e in postgres.answers(data)]
        for err, code in answers:
            if not c.pending:
                break
            self._done(c, c.pending.popleft(), ts, err, code)
        c.answered_ns = ts

    def _close(self, c: _Conn, ts: int) -> None:
        if c.answered_ns:
            # a response came after the last request: the rest of its batch
            # was answered in bytes not sent up
            while c.pending:
                self._done(c, c.pending.popleft(), c.answered_ns, False, 0)
        while c.pending:
            self.stats["closed"] += 1
            self._done(c, c.pending.popleft(), ts, True, 0, closed=True)

    def _done(self, c: _Conn, item: tuple, end_ns: int, error: bool, code: int,
              closed: bool = False) -> None:
        start, pid, method, path, uid, comm = item
        if c.proto == POSTGRES and not method:
            return           # a unit that ran nothing (Parse/Describe only)
        d = end_ns - start
        req = _record(c.proto, c.direction, c.tgid, pid, c.fd, c.cgroup_id, c.local_ip,
                      c.local_port, c.peer_ip, c.peer_port, start, (d if d > 0 else 0) / 1e9,
                      method if c.proto != POSTGRES else "", path, code, error, closed, c.tls,
                      uid, comm)
        self.stats["requests"] += 1
        for sink in self.sinks:
            try:
                sink(req)
            except Exception:
                self.stats["sink_errors"] += 1
                if self.stats["sink_errors"] <= 10:
                    log.exception("L7 sink %r failed", sink)

    def pending(self) -> int:
        return sum(len(c.pending) for c in self.conns.values())


__all__ = ["L7Tracker", "PROTO_BITS", "protocol_bits"]
