"""http.* fields: an HTTP exchange vigil paired on a TCP connection
(evt.type = http; vigil.l7).  The socket's addresses are the fd.* fields."""
from __future__ import annotations

from vigil.events import Kind
from vigil.rules.fields.base import define


def _http(attr):
    def fn(ev, cx):
        return getattr(ev, attr) if ev.kind is Kind.HTTP else None
    return fn


define("http.method", "str", _http("method"),
       desc="Method of the HTTP request (GET, POST ...) as the client sent it (vigil field; "
            "evt.type = http).")
define("http.path", "str", _http("path"),
       desc="Request target of the HTTP request (path and query, at most 256 characters).")
define("http.status", "int", _http("status"),
       desc="Status code of the HTTP response; 0 when the connection closed before one.")
define("http.direction", "str", _http("direction"),
       desc="inbound: the process served the request; outbound: it sent it.")
define("http.duration", "int",
       lambda ev, cx: int(ev.duration * 1e9) if ev.kind is Kind.HTTP and ev.duration is not None
       else None,
       desc="Nanoseconds from the request to the first byte of its response (or the close).")
