"""L7 requests per process, for `vigil top`: a sink that counts each process's
requests, errors and durations per protocol (both directions, as the process saw
them), bounded to the ``max_processes`` most recently active, and a JSON
document the metrics server answers at ``/l7/processes``::

    {"buckets": [0.0001, ...],            # le of each duration bucket (+Inf last, implied)
     "processes": {"<tgid>": {"cgroup_id": N, "namespace": "", "pod": "", "container": "host",
                              "http": {"requests": N, "errors": N, "durations": [per bucket]},
                              "redis": {...}, "postgres": {...}}},
     "cgroups": {"<cgroup id>": {"namespace": "", "pod": "", "container": ""}}}

Counts are cumulative since the agent started; `vigil top` takes differences.
``cgroups`` is every cgroup the container resolver placed, so `vigil top` can
label (and filter by namespace) processes that made no L7 request.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict

from vigil.l7.record import L7Request
from vigil.l7.stats import DURATION_BUCKETS, Hist
from vigil.metrics.workloads import labels_of

MAX_PROCESSES = 4096


class _Proto:
    __slots__ = ("requests", "errors", "hist")

    def __init__(self):
        self.requests = 0
        self.errors = 0
        self.hist = Hist()


class ProcessStats:
    def __init__(self, workloads=None, max_processes: int = MAX_PROCESSES):
        self.workloads = workloads          # vigil.metrics.workloads.Workloads
        self.max_processes = max_processes
        self._lock = threading.Lock()
        self._procs: "OrderedDict[int, list]" = OrderedDict()   # tgid -> [cgroup, {proto}]

    def __call__(self, req: L7Request) -> None:
        with self._lock:
            e = self._procs.get(req.tgid)
            if e is None:
                e = self._procs[req.tgid] = [req.cgroup_id, {}]
                while len(self._procs) > self.max_processes:
                    self._procs.popitem(last=False)
            else:
                self._procs.move_to_end(req.tgid)
                e[0] = req.cgroup_id
            p = e[1].get(req.protocol)
            if p is None:
                p = e[1][req.protocol] = _Proto()
            p.requests += 1
            p.errors += bool(req.error)
            p.hist.observe(req.duration_s)

    def snapshot(self) -> dict:
        with self._lock:
            rows = [(tgid, cg, {k: (v.requests, v.errors, v.hist.to_list())
                                for k, v in protos.items()})
                    for tgid, (cg, protos) in self._procs.items()]
        w = self.workloads
        procs = {}
        for tgid, cg, protos in rows:
            ns, pod, container, _ = w.labels(cg) if w is not None else ("", "", "host", "")
            d = {"cgroup_id": cg, "namespace": ns, "pod": pod, "container": container}
            for k, (n, errs, durs) in protos.items():
                d[k] = {"requests": n, "errors": errs, "durations": durs}
            procs[str(tgid)] = d
        cgroups = {}
        if w is not None:
            for cg, info in w.known().items():
                ns, pod, container, _ = labels_of(info)
                cgroups[str(cg)] = {"namespace": ns, "pod": pod, "container": container}
        return {"buckets": list(DURATION_BUCKETS), "processes": procs, "cgroups": cgroups}

    def http_body(self) -> tuple:
        """(body, content type) for the metrics server's ``/l7/processes``."""
        return json.dumps(self.snapshot(), separators=(",", ":")).encode(), "application/json"


__all__ = ["ProcessStats", "MAX_PROCESSES"]
