"""The TLS uprobes' health (vigil.l7.tls, kernel/bpf/tls.bpf.c), read at scrape
time: the library files probed and what became of the probed calls (handed
to the L7 detector, on a connection L7 does not follow, or not seen for want
of the thread's mark)."""
from __future__ import annotations

import logging
import struct

log = logging.getLogger("vigil.metrics")

# enum tls_stat (tls.bpf.c): slot -> result label
RESULTS = {1: "sent", 2: "not_followed", 3: "no_mark"}


class TlsCollector:
    def __init__(self, probes):
        """``probes``: a callable giving the running vigil.l7.tls.TlsProbes or None."""
        self.probes = probes

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        tls = self.probes()
        if tls is None:
            return
        try:
            libs = len(tls.libs)
            stats = tls.obj.map("tls_stats")
            calls = {label: sum(struct.unpack("<Q", v)[0]
                                for v in stats.percpu_values(struct.pack("<I", slot)))
                     for slot, label in RESULTS.items()}
        except Exception as e:     # the sensors are being restarted
            log.debug("TLS metrics: %s", e)
            return
        g = GaugeMetricFamily("vigil_l7_tls_libraries",
                              "libssl.so.3 files whose SSL reads and writes are probed")
        g.add_metric([], libs)
        yield g
        c = CounterMetricFamily("vigil_l7_tls_calls",
                                "Probed SSL reads and writes: sent (returned data, handed to the "
                                "L7 detector), not_followed (returned data on a connection L7 "
                                "does not follow), no_mark (not seen: no room for the thread's "
                                "mark)", labels=["result"])
        for label, n in calls.items():
            c.add_metric([label], n)
        yield c
