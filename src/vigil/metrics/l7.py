"""L7 RED metrics: completed requests (vigil.l7, a sink) aggregated in plain
counters, turned into Prometheus families when Prometheus scrapes.

Every series carries the observing side's workload labels (namespace, pod,
container, container_id: vigil.metrics.workloads) and ``direction``
(``outbound``: the process is the client; ``inbound``: the server) and a
bounded ``peer``: the server's IP:port seen from a client, the client's IP
seen from a server (its port changes with every connection); beyond
``max_peers`` per metric the busiest first are named and the rest are
``other``.  Method and command labels only take known values (else
``other``); paths and query text never become labels.
"""
from __future__ import annotations

import threading
from bisect import bisect_left

from vigil.l7 import http, redis
from vigil.l7.record import HTTP, OUTBOUND, POSTGRES, REDIS
from vigil.metrics.kernel_collector import Destinations
from vigil.metrics.workloads import WORKLOAD_LABELS

# seconds; 0.25 is among them (the latency objective)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
W = list(WORKLOAD_LABELS)
RAW_PEERS_MAX = 4       # raw peers kept per metric: this many times max_peers, then "other"

_COUNTERS = {
    HTTP: ("vigil_http_requests", "HTTP requests by method and status code (0: the "
           "connection closed before a response)", ["direction", "method", "status", "peer"]),
    REDIS: ("vigil_redis_requests", "Redis commands by command and status (ok, error: an "
            "error reply or the connection closed)", ["direction", "command", "status", "peer"]),
    POSTGRES: ("vigil_postgres_queries", "PostgreSQL queries (a simple Query or an extended "
               "batch that executes) by status (ok, error: an ErrorResponse or the connection "
               "closed)", ["direction", "status", "peer"]),
}
_HISTS = {
    HTTP: ("vigil_http_request_duration_seconds", "HTTP request to the first byte of its "
           "response (or to the close)"),
    REDIS: ("vigil_redis_request_duration_seconds", "Redis command to its reply"),
    POSTGRES: ("vigil_postgres_query_duration_seconds", "PostgreSQL query to ReadyForQuery"),
}


def peer_of(req) -> str:
    if req.direction == OUTBOUND:
        return f"[{req.peer_ip}]:{req.peer_port}" if ":" in req.peer_ip else \
            f"{req.peer_ip}:{req.peer_port}"
    return req.peer_ip


class L7Metrics:
    """A sink (fn(L7Request)) and a Prometheus collector."""

    def __init__(self, workloads, max_peers: int = 100):
        self.workloads = workloads
        self.max_peers = max_peers
        self._lock = threading.Lock()
        # protocol -> {(cgroup, direction, a, b, peer): n}; a, b: method/command, status
        self.counts = {p: {} for p in _COUNTERS}
        # protocol -> {(cgroup, direction, peer): [bucket counts..., +Inf count, sum]}
        self.hists = {p: {} for p in _COUNTERS}
        self.peers = {p: set() for p in _COUNTERS}
        self.destinations = {p: Destinations(max_peers) for p in _COUNTERS}
        self._peer_labels: dict = {}    # (protocol, direction, ip, port) -> peer label

    def __call__(self, req) -> None:
        proto = req.protocol
        if proto not in self.counts:
            return
        pk = (proto, req.direction, req.peer_ip, req.peer_port)
        peer = self._peer_labels.get(pk)
        if peer is None:
            peer = peer_of(req)
            seen = self.peers[proto]
            if peer not in seen:
                if len(seen) >= self.max_peers * RAW_PEERS_MAX:
                    peer = "other"
                else:
                    seen.add(peer)
            if len(self._peer_labels) > 65536:
                self._peer_labels.clear()
            self._peer_labels[pk] = peer
        if proto == HTTP:
            key = (req.cgroup_id, req.direction, http.method_label(req.method), str(req.status),
                   peer)
        elif proto == REDIS:
            key = (req.cgroup_id, req.direction, redis.command_label(req.method),
                   "error" if req.error else "ok", peer)
        else:
            key = (req.cgroup_id, req.direction, "error" if req.error else "ok", "", peer)
        hkey = (req.cgroup_id, req.direction, peer)
        with self._lock:
            c = self.counts[proto]
            c[key] = c.get(key, 0) + 1
            h = self.hists[proto].get(hkey)
            if h is None:
                h = self.hists[proto][hkey] = [0] * (len(BUCKETS) + 2)
            h[bisect_left(BUCKETS, req.duration_s)] += 1
            h[-1] += req.duration_s

    # --- collector ---

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        with self._lock:
            counts = {p: dict(v) for p, v in self.counts.items()}
            hists = {p: {k: list(h) for k, h in v.items()} for p, v in self.hists.items()}
        for proto, (name, doc, labels) in _COUNTERS.items():
            totals: dict = {}
            for key, n in counts[proto].items():
                totals[key[-1]] = totals.get(key[-1], 0) + n
            fold = self.destinations[proto].fold(totals)
            merged: dict = {}
            for (cg, direction, a, b, peer), n in counts[proto].items():
                vals = (direction, a, b) if proto != POSTGRES else (direction, a)
                k = vals + (fold.get(peer, "other"),) + tuple(self.workloads.labels(cg))
                merged[k] = merged.get(k, 0) + n
            fam = CounterMetricFamily(name, doc, labels=labels + W)
            for k, n in sorted(merged.items()):
                fam.add_metric(list(k), n)
            yield fam
            hname, hdoc = _HISTS[proto]
            hm: dict = {}
            for (cg, direction, peer), h in hists[proto].items():
                k = (direction, fold.get(peer, "other")) + tuple(self.workloads.labels(cg))
                cur = hm.get(k)
                if cur is None:
                    hm[k] = list(h)
                else:
                    for i, x in enumerate(h):
                        cur[i] += x
            hf = HistogramMetricFamily(hname, hdoc, labels=["direction", "peer"] + W)
            for k, h in sorted(hm.items()):
                acc, buckets = 0, []
                for le, x in zip(BUCKETS, h):
                    acc += x
                    buckets.append((repr(le), acc))
                acc += h[len(BUCKETS)]
                buckets.append(("+Inf", acc))
                hf.add_metric(list(k), buckets, h[-1])
            yield hf
