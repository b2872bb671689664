"""One completed L7 exchange (a request and its response, or a request the
connection closed under), as every consumer of L7 data sees it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

HTTP, REDIS, POSTGRES = "http", "redis", "postgres"
PROTOCOLS = (HTTP, REDIS, POSTGRES)
OUTBOUND, INBOUND = "outbound", "inbound"   # the observing process is the client / the server


@dataclass(frozen=True)
class L7Request:
    protocol: str                 # HTTP | REDIS | POSTGRES
    direction: str                # OUTBOUND (client side) | INBOUND (server side)
    tgid: int                     # the observing process
    pid: int                      # the observing thread
    fd: int
    cgroup_id: int                # the observing process's cgroup (workload labels come from it)
    local_ip: str
    local_port: int
    peer_ip: str
    peer_port: int
    start_ns: int                 # monotonic ns: request seen
    duration_s: float             # request -> first byte of the response (or -> close)
    method: str = ""              # HTTP method | Redis command (upper case) | "" for PostgreSQL
    path: str = ""                # HTTP path (never a metric label) | "" otherwise
    status: int = 0               # HTTP status code; 0 when none (closed mid-request)
    error: bool = False           # HTTP >= 500 or no response; Redis -ERR; PostgreSQL ErrorResponse
    closed: bool = False          # the connection closed before a response
    tls: bool = False             # seen in plaintext through the TLS uprobes
    uid: Optional[int] = None     # the observing thread's uid when the request was seen
    comm: str = ""                # its name then

    @property
    def status_class(self) -> str:
        """'2xx'..'5xx' for HTTP, 'ok' / 'error' for the others."""
        if self.protocol == HTTP and self.status:
            return f"{self.status // 100}xx"
        return "error" if self.error else "ok"


# consumers of completed requests: fn(L7Request) -> None, called on the event loop
Sink = Callable[[L7Request], None]
