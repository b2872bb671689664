"""The metric programs in the kernel (kernel/bpf/metrics/*.bpf.c): load each
object the settings turn on, attach its programs, and read its maps.  An
object or program the kernel refuses is left out with one log line; the rest
runs.  Nothing here is per event: the programs aggregate, user space reads
when asked (a scrape, or a `vigil trace biolatency` interval)."""
from __future__ import annotations

import logging
import struct
import time
from pathlib import Path

from vigil.kernel import environment, libbpf
from vigil.kernel.sensors import bpf_dir
from vigil.metrics import layouts as L

log = logging.getLogger("vigil.metrics")

# setting of the metrics section -> object in build/metrics/
OBJECTS = {"tcp": "tcp", "packets": "packets", "dns": "dnsstat", "block_io": "blockio",
           "runqueue": "runq", "syscalls": "syscalls"}
DNS_TIMEOUT_S = 5.0       # a query unanswered this long is counted as a timeout


def metrics_dir() -> Path:
    return bpf_dir() / "metrics"


class KernelMetrics:
    """``only``: the settings keys to load (default: those the settings turn on)."""

    def __init__(self, settings: dict, workloads=None, only=None, trace: bool = False,
                 dns_ports=(53,)):
        self.settings = settings
        self.workloads = workloads
        self.wanted = [k for k in OBJECTS if (k in only if only is not None else settings.get(k))]
        self.trace = trace
        self.dns_ports = tuple(dns_ports)
        self.objects: dict = {}        # settings key -> BpfObject
        self.links: list = []
        self.errors: list = []
        self.dns_timeouts: dict = {}   # (cgroup id, qtype) -> queries never answered

    def start(self) -> "KernelMetrics":
        tracefs = environment.check_all()
        for key in self.wanted:
            try:
                self._load(key, tracefs)
            except (libbpf.BpfError, OSError, KeyError) as e:
                why = f"{e}{': ' + e.details if getattr(e, 'details', '') else ''}"
                self.errors.append(f"{OBJECTS[key]}: {why}")
                log.warning("metrics %s (%s.bpf.o) disabled: %s", key, OBJECTS[key], why)
        return self

    def _load(self, key: str, tracefs: str) -> None:
        path = metrics_dir() / f"{OBJECTS[key]}.bpf.o"
        obj = libbpf.BpfObject(str(path))
        try:
            try:
                obj.set_max_entries("events", 4096)   # dnsstat has the sensors' maps: unused
            except KeyError:
                pass
            try:
                obj.set_const("cfg_trace", struct.pack("<I", 1 if self.trace else 0))
            except KeyError:
                pass
            obj.load()
            links = []
            for prog in obj.programs():
                sec = prog.section
                try:
                    parts = sec.split("/")
                    if sec.startswith("tp/") and len(parts) == 3:
                        links.append(prog.attach_tracepoint(tracefs, parts[1], parts[2]))
                    else:
                        links.append(prog.attach())
                except libbpf.BpfError as e:
                    self.errors.append(f"{prog.name}: {e.strerror}")
                    log.warning("metrics program %s (%s) not attached: %s", prog.name, sec,
                                e.strerror)
        except BaseException:
            obj.close()
            raise
        self.links.extend(links)
        self.objects[key] = obj
        if key == "dns":
            m = obj.map("dnsq_ports")
            for p in self.dns_ports:
                m.update(struct.pack("<H", p), b"\x01")

    def stop(self) -> None:
        for link in self.links:
            link.destroy()
        self.links = []
        for obj in self.objects.values():
            obj.close()
        self.objects = {}

    def collector(self):
        from vigil.metrics.kernel_collector import KernelCollector
        return KernelCollector(self, self.workloads, self.settings.get("max_destinations", 100))

    # --- reading the maps ---

    def map(self, key: str, name: str):
        obj = self.objects.get(key)
        return obj.map(name) if obj is not None else None

    def entries(self, key: str, name: str, key_type, percpu_value=None):
        """[(key struct, value)] of a map; value bytes, or summed per-CPU hist lists."""
        m = self.map(key, name)
        if m is None:
            return []
        out = []
        for k, v in L.read_all(m):
            ks = key_type.from_buffer_copy(k) if key_type is not None else \
                struct.unpack("<Q", k)[0] if len(k) == 8 else struct.unpack("<I", k)[0]
            if m.percpu:
                acc = None
                for one in L.percpu_split(m, v):
                    acc = percpu_value(acc, one)
                v = acc
            out.append((ks, v))
        return out

    def histograms(self, key: str, name: str, key_type=None) -> list:
        """[(key, [slots..., sum])] of a map of struct hist (per-CPU summed)."""
        m = self.map(key, name)
        if m is None:
            return []
        if m.percpu:
            return self.entries(key, name, key_type, L.hist_add)
        return [(k, L.hist_of(v)) for k, v in self.entries(key, name, key_type)]

    def counters(self, key: str, name: str, key_type=None, signed=False) -> list:
        fmt = "<q" if signed else "<Q"
        return [(k, struct.unpack(fmt, v)[0]) for k, v in self.entries(key, name, key_type)]

    def packets(self) -> list:
        """[(PktKey, packets, [size slots..., bytes])]"""
        def add(acc, raw):
            n = struct.unpack_from("<Q", raw)[0]
            if acc is None:
                return [n, L.hist_of(raw, 8)]
            acc[0] += n
            L.hist_add(acc[1], raw, 8)
            return acc
        return [(k, v[0], v[1]) for k, v in self.entries("packets", "pkt_counts", L.PktKey, add)]

    def dns_expire(self, now_ns: int = None) -> dict:
        """Queries unanswered for DNS_TIMEOUT_S: counted as timeouts (by cgroup
        id and qtype, cumulative) and removed; returns the counts."""
        m = self.map("dns", "dnsq_pending")
        if m is None:
            return self.dns_timeouts
        now = now_ns if now_ns is not None else time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        for k, v in L.read_all(m):
            q = L.DnsqVal.from_buffer_copy(v)
            if now - q.ts >= DNS_TIMEOUT_S * 1e9 and m.delete(k):
                key = (q.cgroup_id, q.qtype)
                self.dns_timeouts[key] = self.dns_timeouts.get(key, 0) + 1
        return self.dns_timeouts


__all__ = ["KernelMetrics", "OBJECTS", "metrics_dir"]
