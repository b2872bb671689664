"""Alerts to syslog through :class:`logging.handlers.SysLogHandler`.

``address`` is a unix socket path (``/dev/log`` by default) or ``host:port``
for UDP (``tcp://host:port`` for TCP).  The alert priority becomes the syslog
severity (Falco's priority names are syslog's severities), the facility is
configurable (``local0`` by default).  The message is ``vigil[PID]: `` followed
by the alert's text line or its JSON.

The handler is used directly (no logger), so nothing here interferes with
the agent's own logging configuration.  A syslog daemon that is not running
yet is not an error at start; each send retries the connection, and failures
raise out of :meth:`SyslogOutput.emit` so the dispatcher counts them.  With
the alert store, syslog is sent from the store and a failed send is retried
with backoff until the daemon takes it (:mod:`vigil.alerts.outbox`).
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import threading
from typing import Optional, Union

from vigil.alerts.alert import Alert, PRIORITIES, normalize_priority
from vigil.alerts.outputs.base import Output
from vigil.alerts.outputs.registry import register
from vigil.alerts.outputs.stdout import FORMATS, alert_json_line

# vigil priority -> key of SysLogHandler.priority_names
SEVERITY = {
    "emergency": "emerg",
    "alert": "alert",
    "critical": "crit",
    "error": "err",
    "warning": "warning",
    "notice": "notice",
    "informational": "info",
    "debug": "debug",
}
assert set(SEVERITY) == set(PRIORITIES)

FACILITIES = tuple(sorted(logging.handlers.SysLogHandler.facility_names))


def parse_address(address: Union[str, tuple]) -> tuple:
    """``(address, socktype)`` for SysLogHandler from ``/dev/log``, ``host:port``,
    ``udp://host:port`` or ``tcp://host:port``."""
    if isinstance(address, (tuple, list)):
        host, port = address
        return (str(host), int(port)), socket.SOCK_DGRAM
    a = str(address).strip()
    if not a:
        raise ValueError("empty syslog address")
    socktype = socket.SOCK_DGRAM
    if a.startswith("unix://"):
        return a[len("unix://"):], None
    if a.startswith("/"):
        return a, None
    if a.startswith("udp://"):
        a = a[len("udp://"):]
    elif a.startswith("tcp://"):
        a, socktype = a[len("tcp://"):], socket.SOCK_STREAM
    host, sep, port = a.rpartition(":")
    if not sep or not host:
        host, port = a, "514"
    host = host.strip("[]")     # [::1]:514
    try:
        port_n = int(port)
    except ValueError:
        raise ValueError(f"bad syslog port in {address!r}") from None
    if not 0 < port_n < 65536:
        raise ValueError(f"bad syslog port in {address!r}")
    return (host, port_n), socktype


class _Handler(logging.handlers.SysLogHandler):
    """SysLogHandler that hands send errors back instead of printing them."""

    append_nul = False

    def __init__(self, *a, **kw):
        self.last_error: Optional[BaseException] = None
        self.connect_error: Optional[BaseException] = None
        super().__init__(*a, **kw)

    def createSocket(self):  # noqa: N802 - logging API
        # UDP/TCP targets that do not resolve or listen yet must not make the
        # agent fail at start: remember the error, retry on the next send.
        self.connect_error = None
        try:
            super().createSocket()
        except OSError as exc:
            self.socket = None
            self.connect_error = exc

    def handleError(self, record):  # noqa: N802 - logging API
        import sys
        self.last_error = sys.exc_info()[1] or RuntimeError("syslog send failed")


class SyslogOutput(Output):
    name = "syslog"
    durable = True          # with the store: sent from it, retried until the daemon takes it

    def __init__(self, address: Union[str, tuple] = "/dev/log", facility: str = "local0",
                 format: str = "text", ident: Optional[str] = None,
                 max_message_bytes: int = 8192):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        fac = str(facility).lower()
        if fac not in logging.handlers.SysLogHandler.facility_names:
            raise ValueError(f"unknown syslog facility {facility!r}")
        addr, socktype = parse_address(address)
        self.address = addr
        # TCP syslog (RFC 6587 non-transparent framing) needs a trailing LF
        self._terminator = "\n" if socktype == socket.SOCK_STREAM else ""
        self.format = format
        self.max_message_bytes = int(max_message_bytes)
        self._handler = _Handler(address=addr, facility=fac, socktype=socktype)
        self._handler.priority_map = dict(SEVERITY)
        self._handler.ident = ident if ident is not None else f"vigil[{os.getpid()}]: "
        self._lock = threading.Lock()
        self._sent = 0
        self._failed = 0

    def _message(self, alert: Alert) -> str:
        msg = alert.text_line() if self.format == "text" else alert_json_line(alert, self.json_shape)
        msg = msg.replace("\n", " ")
        b = msg.encode("utf-8")
        if self.max_message_bytes and len(b) > self.max_message_bytes:
            msg = b[: self.max_message_bytes].decode("utf-8", "ignore")
        return msg + self._terminator

    def emit(self, alert: Alert) -> bool:
        prio = normalize_priority(alert.priority) or "debug"
        record = logging.makeLogRecord({"msg": self._message(alert), "levelname": prio,
                                        "levelno": logging.WARNING, "args": None})
        with self._lock:
            self._handler.last_error = None
            self._handler.handle(record)
            err = self._handler.last_error
            if err is not None and self._handler.connect_error is not None:
                err = self._handler.connect_error
            if err is not None:
                self._failed += 1
                if not self._handler.unixsocket:
                    # SysLogHandler only reconnects unix sockets by itself: drop a
                    # broken UDP/TCP socket so the next alert creates a new one
                    sock, self._handler.socket = self._handler.socket, None
                    if sock is not None:
                        sock.close()
                raise OSError(f"syslog send to {self.address} failed: {err}") from err
            self._sent += 1
        return True

    @property
    def outbox_key(self) -> str:
        return f"syslog:{self.address}"

    def close(self, timeout: Optional[float] = None) -> None:
        self._handler.close()

    def stats(self) -> dict:
        return {"sent": self._sent, "failed": self._failed}


@register("syslog", defaults={"address": "/dev/log", "facility": "local0", "format": "text"},
          live_only=True)
def _build(s, stream) -> SyslogOutput:
    address = s.get("address")
    try:
        parse_address(address)
    except (ValueError, TypeError) as exc:
        raise s.bad("address", str(exc)) from None
    facility = s.str("facility", FACILITIES)
    return SyslogOutput(address=address, facility=facility, format=s.str("format", FORMATS))
