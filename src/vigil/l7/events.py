"""The ``http`` event kind: each completed HTTP exchange as an Event for the
rules (evt.type = http, fields http.*), made only when a loaded rule needs
the kind (the agent then appends this sink to the tracker)."""
from __future__ import annotations

from vigil.events import Event, Kind, boot_offset_ns
from vigil.l7.record import HTTP


class HttpEvents:
    """Sink: fn(L7Request) -> Event(Kind.HTTP) handed to ``process`` (the
    pipeline's: process table, containers, handlers)."""

    def __init__(self, process):
        self.process = process
        self.boot_offset = boot_offset_ns()
        self.made = 0

    def __call__(self, req) -> None:
        if req.protocol != HTTP:
            return
        family = "AF_INET6" if ":" in req.local_ip else "AF_INET"
        ev = Event(Kind.HTTP, time=req.start_ns + self.boot_offset, pid=req.tgid, tid=req.pid,
                   uid=req.uid, comm=req.comm or None, cgroup_id=req.cgroup_id, fd=req.fd,
                   family=family, proto="tcp", saddr=req.local_ip, sport=req.local_port,
                   daddr=req.peer_ip, dport=req.peer_port, method=req.method, path=req.path,
                   status=req.status, duration=req.duration_s, direction=req.direction, ret=0)
        self.made += 1
        self.process(ev)
