"""HTTP/1.x: the request line of a request start, the status of a response
start (the first bytes the kernel sends up; l7.h)."""
from __future__ import annotations

# the method label's values; anything else is "other" (a label never takes a
# string the peer chose)
METHODS = frozenset(("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "CONNECT",
                     "TRACE"))
PATH_MAX = 256


def request(data: bytes) -> tuple:
    """(method, path) of the request starting data; the path is what was
    captured of the request target (never a metric label)."""
    line = data.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split(b" ", 2)
    method = parts[0].decode("ascii", "replace")
    path = parts[1].decode("latin-1")[:PATH_MAX] if len(parts) > 1 else ""
    return method, path


def status(data: bytes) -> int:
    """The status code of the response starting data ("HTTP/1.1 200 OK"); 0
    when it cannot be read."""
    if not data.startswith(b"HTTP/") or len(data) < 12:
        return 0
    code = data[9:12]
    if not code.isdigit() or data[8:9] != b" ":
        return 0
    return int(code)


def interim(code: int) -> bool:
    """1xx (but 101 Switching Protocols) is not the response the request waits for."""
    return 100 <= code < 200 and code != 101


def method_label(method: str) -> str:
    return method if method in METHODS else "other"
