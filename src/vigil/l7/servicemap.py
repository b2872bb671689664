"""The service map: L7 exchanges as edges client workload -> server workload,
counted once per exchange, and served as

* ``vigil_service_requests_total{client_namespace, client_workload, server_namespace,
  server_workload, protocol, status_class}`` and
* ``vigil_service_request_duration_seconds{client_namespace, client_workload,
  server_namespace, server_workload, protocol}`` (histogram).

**Counted once.**  When both ends of a connection run on this node, vigil sees each
exchange twice: the client's ``outbound`` record and the server's ``inbound`` one.
Records are grouped per connection, keyed by the client's endpoint (protocol,
client IP, client port; plus the network namespace for loopback addresses), which
both ends agree on even through a Service's DNAT.  A connection's first records
wait up to ``window`` seconds for the other end; then the connection is *settled*:

* the server was observed: the server's inbound records count (its durations are
  the server's own time), the client's outbound ones are dropped;
  the client is named from its own observation when it was seen, else from its IP;
* only the client was observed: its outbound records count, the server named from
  the IP it connected to.

A server whose first record comes after the connection settled on the client (its
records held up longer than the window) takes over from the first exchange the
client's view did not count: the exchanges of one connection come in the same order
on both ends, so none counts twice.  A record whose end (process, fd, addresses) differs from what
the connection held starts a new connection (a reused client port).

**Bounded.**  The first ``max_edges`` distinct edges (client, server, protocol) get
their own series and keep them; beyond, a new edge's unobserved end becomes
``other`` (namespace ""), so the series grow only with the workloads on this node.
Everything is read at scrape time from the counts kept here.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from vigil.l7.identity import OTHER
from vigil.l7.record import INBOUND, L7Request
from vigil.l7.stats import Hist

EDGE_LABELS = ["client_namespace", "client_workload", "server_namespace", "server_workload",
               "protocol"]
DEFAULT_WINDOW = 2.0        # seconds a connection's first records wait for its other end
DEFAULT_IDLE = 300.0        # seconds a quiet connection is remembered
MAX_CONNECTIONS = 65536
MAX_PENDING = 64            # records one unsettled connection holds (then it settles)


class _Conn:
    __slots__ = ("client", "server", "first", "last", "pending", "counted", "edge",
                 "client_obs", "server_obs", "by_client", "skip")

    def __init__(self, now: float):
        self.client = self.server = None      # signature of each end seen
        self.client_obs = self.server_obs = None   # (ns, workload, netns) observed
        self.first = self.last = now
        self.pending: list = []               # records waiting for the settle
        self.counted = None                   # "client" | "server" once settled
        self.edge = None                      # (cns, cwl, sns, swl)
        self.by_client = 0                    # exchanges counted from the client's view
        self.skip = 0                         # late server records the client counted


class ServiceMap:
    """A sink for L7Request records (``sm(req)``, on the event loop) and a collector."""

    def __init__(self, identities, max_edges: int = 500, window: float = DEFAULT_WINDOW,
                 idle: float = DEFAULT_IDLE, max_connections: int = MAX_CONNECTIONS,
                 clock=time.monotonic):
        self.ids = identities
        self.max_edges = max_edges
        self.window = window
        self.idle = idle
        self.max_connections = max_connections
        self._clock = clock
        self._lock = threading.Lock()
        self._conns: "OrderedDict[tuple, _Conn]" = OrderedDict()
        self._unsettled: deque = deque()      # (first seen, key, conn)
        self._named: set = set()              # edges (cns, cwl, sns, swl, proto) with a series
        self.requests: dict = {}              # edge + (proto, status_class) -> n
        self.durations: dict = {}             # edge + (proto,) -> Hist
        self._expired_at = -1e18
        self.duplicates = 0                   # client records dropped: the server counted them
        self.folded = 0                       # edges folded into "other"

    # --- the sink -------------------------------------------------------------------
    def __call__(self, req: L7Request) -> None:
        now = self._clock()
        with self._lock:
            if now - self._expired_at >= 0.05:      # settling is checked 20 times a second
                self._expire(now)
            self._add(req, now)

    def flush(self, now=None) -> None:
        """Settle connections whose window ran out (also done by every record and scrape)."""
        with self._lock:
            self._expire(self._clock() if now is None else now)

    def _add(self, req: L7Request, now: float) -> None:
        server_side = req.direction == INBOUND
        if server_side:
            cip, cport = req.peer_ip, req.peer_port
            sig = (req.tgid, req.fd, req.local_ip, req.local_port)
        else:
            cip, cport = req.local_ip, req.local_port
            sig = (req.tgid, req.fd, req.peer_ip, req.peer_port)
        key = (req.protocol, cip, cport)
        if cip.startswith("127.") or cip in ("::1", "::ffff:127.0.0.1"):
            key += (self.ids.netns(req.cgroup_id),)
        conn = self._conns.get(key)
        if conn is not None:
            held = conn.server if server_side else conn.client
            if held is not None and held != sig:        # a new connection on a reused port
                self._settle(conn)
                del self._conns[key]
                conn = None
        if conn is None:
            conn = self._conns[key] = _Conn(now)
            self._unsettled.append((now, key, conn))
            while len(self._conns) > self.max_connections:
                _, old = self._conns.popitem(last=False)
                self._settle(old)
        else:
            self._conns.move_to_end(key)
            conn.last = now
        if server_side:
            if conn.server is None:         # named once per connection end
                conn.server, conn.server_obs = sig, self.ids.observer(req.cgroup_id, req.tgid)
        elif conn.client is None:
            conn.client, conn.client_obs = sig, self.ids.observer(req.cgroup_id, req.tgid)
        if conn.counted is None:
            conn.pending.append(req)
            if (conn.client is not None and conn.server is not None) \
                    or len(conn.pending) >= MAX_PENDING:
                self._settle(conn)
            return
        if server_side and conn.counted == "client":
            # the server's records came late: its view from the first exchange the
            # client's did not count (the exchanges of a connection come in order)
            conn.counted, conn.edge, conn.skip = "server", None, conn.by_client
            self._name(conn, req)
        if (conn.counted == "server") != server_side:
            self.duplicates += 1
        elif conn.skip:
            conn.skip -= 1
            self.duplicates += 1
        else:
            self._count(conn.edge, req)
            conn.by_client += not server_side

    def _settle(self, conn: _Conn) -> None:
        if conn.counted is not None:
            return
        conn.counted = "server" if conn.server is not None else "client"
        pending, conn.pending = conn.pending, []
        for req in pending:
            if (req.direction == INBOUND) == (conn.counted == "server"):
                if conn.edge is None:
                    self._name(conn, req)
                self._count(conn.edge, req)
                conn.by_client += req.direction != INBOUND
            else:
                self.duplicates += 1

    def _name(self, conn: _Conn, req: L7Request) -> None:
        """The edge of a settled connection, from the counting record."""
        if conn.counted == "server":
            s = conn.server_obs
            c = conn.client_obs or self.ids.peer(req.peer_ip, s[2], s)
            observed = (conn.client_obs is not None, True)
        else:
            c = conn.client_obs
            s = self.ids.peer(req.peer_ip, c[2], c)
            observed = (True, False)
        c, s = c[:2], s[:2]
        edge = c + s + (req.protocol,)
        if edge not in self._named:
            if len(self._named) < self.max_edges:
                self._named.add(edge)
            else:
                self.folded += 1
                c = c if observed[0] else OTHER
                s = s if observed[1] else OTHER
        conn.edge = c + s

    def _count(self, edge: tuple, req: L7Request) -> None:
        k = edge + (req.protocol, req.status_class)
        self.requests[k] = self.requests.get(k, 0) + 1
        hk = edge + (req.protocol,)
        h = self.durations.get(hk)
        if h is None:
            h = self.durations[hk] = Hist()
        h.observe(req.duration_s)

    def _expire(self, now: float) -> None:
        self._expired_at = now
        q = self._unsettled
        while q and (q[0][2].counted is not None or now - q[0][0] >= self.window):
            _, _, conn = q.popleft()
            self._settle(conn)
        conns = self._conns
        while conns:
            key, conn = next(iter(conns.items()))
            if now - conn.last < self.idle:
                break
            del conns[key]
            self._settle(conn)

    # --- scrape time ----------------------------------------------------------------
    def describe(self):
        return []

    def collect(self):
        self.flush()
        with self._lock:
            reqs = sorted(self.requests.items())
            hists = sorted((k, h.cumulative(), h.sum) for k, h in self.durations.items())
        c = CounterMetricFamily("vigil_service_requests_total",
                                "L7 requests between workloads (each exchange once: the "
                                "server's view when vigil sees the server)",
                                labels=EDGE_LABELS + ["status_class"])
        for k, n in reqs:
            c.add_metric(list(k), n)
        yield c
        hf = HistogramMetricFamily("vigil_service_request_duration_seconds",
                                   "L7 request duration between workloads (request to first "
                                   "byte of the response)", labels=EDGE_LABELS)
        for k, buckets, total in hists:
            hf.add_metric(list(k), buckets, sum_value=total)
        yield hf

    def stats(self) -> dict:
        with self._lock:
            return {"connections": len(self._conns), "edges": len(self._named),
                    "duplicates": self.duplicates, "folded": self.folded}


__all__ = ["ServiceMap", "EDGE_LABELS"]
