"""The kernel's aggregates as Prometheus metrics, made at scrape time from the
maps (:class:`vigil.metrics.kernel.KernelMetrics`): log2 histograms become
Prometheus histograms (bucket ``le`` = the slot's upper bound), counters sum
the cgroups of one workload, and TCP peers beyond the ``max_destinations``
busiest are folded into ``destination="other"``."""
from __future__ import annotations

import logging
import struct
import threading

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, \
    HistogramMetricFamily

from vigil.metrics import layouts as L
from vigil.metrics import names
from vigil.metrics.workloads import HOST_LABELS, WORKLOAD_LABELS

log = logging.getLogger("vigil.metrics")

W = list(WORKLOAD_LABELS)
NO_WORKLOAD = ("", "", "", "")      # a packet not yet on any socket
LATENCY_SLOTS = 25                  # le up to 2^25 µs (33.5 s); beyond: +Inf
SIZE_SLOTS = 17                     # le up to 128 KiB
PEER_CACHE = 16384                  # the kernel's tcp_connects holds as many keys
_CONN_KEY = struct.Struct("<Q16sHHI")   # struct tcp_conn_key (layouts.TcpConnKey)
_U64 = struct.Struct("<Q")


def latency_buckets(slots: list, n: int = LATENCY_SLOTS) -> list:
    """Cumulative (le seconds, count) of a µs log2 histogram; slot i holds [2^i, 2^(i+1)) µs."""
    out, acc = [], 0
    for i in range(n):
        acc += slots[i]
        out.append((repr((2 ** (i + 1)) * 1e-6), acc))
    out.append(("+Inf", sum(slots[:L.HIST_SLOTS])))
    return out


def size_buckets(slots: list, n: int = SIZE_SLOTS) -> list:
    out, acc = [], 0
    for i in range(n):
        acc += slots[i]
        out.append((str(2 ** (i + 1) - 1), acc))
    out.append(("+Inf", sum(slots[:L.HIST_SLOTS])))
    return out


def _merge(d: dict, key, h: list) -> None:
    cur = d.get(key)
    if cur is None:
        d[key] = list(h)
    else:
        for i, x in enumerate(h):
            cur[i] += x


class Destinations:
    """The peers that get their own label: the busiest first seen, up to the
    bound, and kept (a counter must not move between series)."""

    def __init__(self, bound: int):
        self.bound = bound
        self.named: set = set()
        self._lock = threading.Lock()

    def fold(self, totals: dict) -> dict:
        """peer -> label (the peer, or "other") given each peer's total."""
        with self._lock:
            free = self.bound - len(self.named)
            if free > 0:
                for p, _ in sorted(((p, n) for p, n in totals.items() if p not in self.named),
                                   key=lambda pn: (-pn[1], pn[0]))[:free]:
                    self.named.add(p)
            return {p: (p if p in self.named else "other") for p in totals}


class KernelCollector:
    def __init__(self, kernel, workloads, max_destinations: int = 100):
        self.kernel = kernel
        self.workloads = workloads
        self.destinations = Destinations(max_destinations)
        self._peer_names: dict = {}     # raw (daddr, dport, family) -> "IP:port"

    def describe(self):
        return []

    def _w(self, cgid: int) -> tuple:
        return self.workloads.labels(cgid) if self.workloads is not None else NO_WORKLOAD

    def collect(self):
        k = self.kernel
        for part in (self._tcp, self._packets, self._dns, self._block, self._runq,
                     self._syscalls):
            try:
                yield from part(k)
            except Exception as e:          # a map being torn down: the rest still answers
                log.warning("metrics: %s failed: %s", part.__name__.strip("_"), e)

    def _tcp(self, k):
        if "tcp" not in k.objects:
            return
        yield self._tcp_connects(k)
        hists: dict = {}
        for cg, h in k.histograms("tcp", "tcp_connlat"):
            _merge(hists, self._w(cg), h)
        hf = HistogramMetricFamily("vigil_tcp_connect_duration_seconds",
                                   "TCP connect latency, SYN sent to established", labels=W)
        for w, h in sorted(hists.items()):
            hf.add_metric(list(w), latency_buckets(h), sum_value=h[L.HIST_SLOTS] / 1e9)
        yield hf
        act: dict = {}
        for key, n in k.counters("tcp", "tcp_active", L.TcpDirKey, signed=True):
            lk = (L.DIRECTIONS_TCP[key.direction & 1],) + self._w(key.cgroup_id)
            act[lk] = act.get(lk, 0) + n
        g = GaugeMetricFamily("vigil_tcp_active_connections",
                              "Established TCP connections vigil saw open, by direction",
                              labels=["direction"] + W)
        for lk, n in sorted(act.items()):
            g.add_metric(list(lk), max(n, 0))
        yield g
        rt: dict = {HOST_LABELS: 0}     # a series even before the first retransmit
        for cg, n in k.counters("tcp", "tcp_retrans"):
            w = self._w(cg)
            rt[w] = rt.get(w, 0) + n
        c = CounterMetricFamily("vigil_tcp_retransmits_total", "TCP segments retransmitted",
                                labels=W)
        for w, n in sorted(rt.items()):
            c.add_metric(list(w), n)
        yield c

    def _tcp_connects(self, k):
        """vigil_tcp_connects_total, from the map's raw batch (one struct
        unpack a key, peers' names and workloads' labels cached): up to
        thousands of series a scrape."""
        m = k.map("tcp", "tcp_connects")
        rows = L.read_all(m) if m is not None else []
        peers = self._peer_names
        if len(peers) > 4 * PEER_CACHE:
            peers.clear()
        per_peer: dict = {}
        parsed = []
        for kraw, vraw in rows:
            cg, daddr, dport, fam, res = _CONN_KEY.unpack(kraw)
            pk = kraw[8:28]
            p = peers.get(pk)
            if p is None:
                p = peers[pk] = names.peer(fam, daddr, dport)
            n = _U64.unpack(vraw)[0]
            per_peer[p] = per_peer.get(p, 0) + n
            parsed.append((cg, p, res, n))
        label = self.destinations.fold(per_peer)
        results = L.TCP_RESULTS
        wl: dict = {}
        agg: dict = {}
        for cg, p, res, n in parsed:
            w = wl.get(cg)
            if w is None:
                w = wl[cg] = self._w(cg)
            lk = (results[res] if res < len(results) else "other", label[p]) + w
            agg[lk] = agg.get(lk, 0) + n
        c = CounterMetricFamily("vigil_tcp_connects_total",
                                "TCP connects by result and destination (IP:port; beyond "
                                "metrics.max_destinations peers: other)",
                                labels=["result", "destination"] + W)
        for lk, n in agg.items():
            c.add_metric(lk, n)
        return c

    def _packets(self, k):
        if "packets" not in k.objects:
            return
        pk: dict = {}
        by: dict = {}
        sizes: dict = {}
        for key, n, h in k.packets():
            d = L.DIRECTIONS_PKT[key.direction & 1]
            w = self._w(key.cgroup_id) if key.cgroup_id else NO_WORKLOAD
            ifname = names.interface(key.ifindex)
            lk = (d, ifname) + w
            pk[lk] = pk.get(lk, 0) + n
            bk = (d,) + w
            by[bk] = by.get(bk, 0) + h[L.HIST_SLOTS]
            _merge(sizes, (d, ifname), h)
        c = CounterMetricFamily("vigil_net_packets_total",
                                "Packets by direction and interface (per workload where "
                                "the packet has a socket: sent ones)",
                                labels=["direction", "interface"] + W)
        for lk, n in sorted(pk.items()):
            c.add_metric(list(lk), n)
        yield c
        c = CounterMetricFamily("vigil_net_bytes_total", "Bytes of those packets",
                                labels=["direction"] + W)
        for lk, n in sorted(by.items()):
            c.add_metric(list(lk), n)
        yield c
        hf = HistogramMetricFamily("vigil_net_packet_size_bytes", "Packet sizes",
                                   labels=["direction", "interface"])
        for lk, h in sorted(sizes.items()):
            hf.add_metric(list(lk), size_buckets(h), sum_value=h[L.HIST_SLOTS])
        yield hf

    def _dns(self, k):
        if "dns" not in k.objects:
            return
        req: dict = {}
        lat: dict = {}
        for key, h in k.histograms("dns", "dns_lat", L.DnsKey):
            w = self._w(key.cgroup_id)
            lk = (names.qtype_name(key.qtype), names.rcode_name(key.rcode)) + w
            req[lk] = req.get(lk, 0) + sum(h[:L.HIST_SLOTS])
            _merge(lat, w, h)
        for (cg, qtype), n in sorted(k.dns_expire().items()):
            lk = (names.qtype_name(qtype), "timeout") + self._w(cg)
            req[lk] = req.get(lk, 0) + n
        c = CounterMetricFamily("vigil_dns_requests_total",
                                "DNS requests by query type and response code (timeout: "
                                "no answer in 5 s)", labels=["qtype", "rcode"] + W)
        for lk, n in sorted(req.items()):
            c.add_metric(list(lk), n)
        yield c
        hf = HistogramMetricFamily("vigil_dns_request_duration_seconds",
                                   "DNS request latency, query sent to answer read", labels=W)
        for w, h in sorted(lat.items()):
            hf.add_metric(list(w), latency_buckets(h), sum_value=h[L.HIST_SLOTS] / 1e9)
        yield hf

    def _block(self, k):
        if "block_io" not in k.objects:
            return
        hf = HistogramMetricFamily("vigil_block_io_duration_seconds",
                                   "Block I/O latency, issued to completed, by disk and "
                                   "operation", labels=["device", "op"])
        agg: dict = {}
        for key, h in k.histograms("block_io", "bio_lat", L.BioKey):
            _merge(agg, (names.block_device(key.dev), names.block_op(key.op)), h)
        for lk, h in sorted(agg.items()):
            hf.add_metric(list(lk), latency_buckets(h), sum_value=h[L.HIST_SLOTS] / 1e9)
        yield hf

    def _runq(self, k):
        if "runqueue" not in k.objects:
            return
        hf = HistogramMetricFamily("vigil_runqueue_latency_seconds",
                                   "Run-queue latency: woken (or preempted) until running",
                                   labels=W)
        agg: dict = {}
        for cg, h in k.histograms("runqueue", "runq_lat"):
            _merge(agg, self._w(cg), h)
        for w, h in sorted(agg.items()):
            hf.add_metric(list(w), latency_buckets(h), sum_value=h[L.HIST_SLOTS] / 1e9)
        yield hf

    def _syscalls(self, k):
        if "syscalls" not in k.objects:
            return
        hf = HistogramMetricFamily("vigil_syscall_duration_seconds",
                                   "Syscall latency, enter to exit (metrics.syscalls)",
                                   labels=["syscall"])
        for nr, h in sorted(k.histograms("syscalls", "sc_lat")):
            hf.add_metric([names.syscall_name(nr)], latency_buckets(h),
                          sum_value=h[L.HIST_SLOTS] / 1e9)
        yield hf
