"""An alert: a rule that matched an event, in Falco's output schema."""
from __future__ import annotations

import datetime as _dt
import json
import socket
import uuid as _uuid
from dataclasses import dataclass, field
from typing import Any, Optional

# Falco's priorities, most severe first.  Index = severity (0 most severe).
PRIORITIES = ("emergency", "alert", "critical", "error", "warning", "notice",
              "informational", "debug")
_PRIORITY_ALIASES = {"info": "informational", "warn": "warning", "err": "error", "crit": "critical",
                     "emerg": "emergency"}

HOSTNAME = socket.gethostname()


# the namespace of vigil's name-based (version 5) alert ids
_ID_NAMESPACE = _uuid.UUID("6f1c2a52-3c1e-5d0b-9a57-7669676c0001")


def alert_id(alert: "Alert") -> str:
    """The alert's stable id: a version-5 UUID of everything the alert says
    (host, time in ns, rule, priority, source, output, fields, tags, count).
    The same alert always gets the same id -- in the store, in every delivery
    and redelivery, and when a capture of the events is replayed."""
    key = json.dumps([alert.hostname, alert.time, alert.rule, alert.priority, alert.source,
                      alert.output, alert.output_fields, list(alert.tags or ()), alert.count],
                     ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)
    return str(_uuid.uuid5(_ID_NAMESPACE, key))


def normalize_priority(name: str) -> Optional[str]:
    """Canonical lower-case priority name, or None if unknown."""
    n = str(name).strip().lower()
    n = _PRIORITY_ALIASES.get(n, n)
    return n if n in PRIORITIES else None


def priority_rank(name: str) -> int:
    """0 for emergency ... 7 for debug."""
    return PRIORITIES.index(normalize_priority(name) or "debug")


def format_time(ns: int) -> str:
    """RFC 3339 with nanoseconds in UTC, as Falco writes `time`."""
    secs, frac = divmod(int(ns), 1_000_000_000)
    base = _dt.datetime.fromtimestamp(secs, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


@dataclass(frozen=True)
class JsonShape:
    """The optional properties of a JSON alert, as falco.yaml's
    ``json_include_output_property``, ``json_include_output_fields_property``,
    ``json_include_tags_property`` and ``json_include_message_property``
    choose them (Falco's defaults).  ``message`` is the output without the
    time and priority in front."""
    output: bool = True
    output_fields: bool = True
    tags: bool = True
    message: bool = False


FALCO_JSON = JsonShape()


@dataclass
class Alert:
    time: int                       # ns since epoch (the event's time)
    rule: str
    priority: str                   # canonical lower-case name
    output: str                     # the formatted output line (without time/priority prefix)
    output_fields: dict = field(default_factory=dict)
    tags: list = field(default_factory=list)
    source: str = "syscall"
    hostname: str = HOSTNAME
    event: Any = None               # the vigil.events.Event, when there is one
    count: int = 1                  # >1 when rate limiting folded repeats into this alert
    # the stable id (JSON key "uuid", as Falcosidekick names it): alert_id(),
    # set by whoever makes the alert (the rules engine, the rate limiter's
    # folded alert) or at the latest by the dispatcher before the store
    uuid: Optional[str] = None

    @property
    def priority_title(self) -> str:
        return self.priority.capitalize()

    def to_falco_json(self, shape: JsonShape = FALCO_JSON) -> dict:
        """Falco's JSON alert: time, rule, priority, source, hostname, and as
        ``shape`` says output, output_fields, tags and message (keys sorted,
        as Falco writes them).  Like Falco's, output_fields has ``evt.time``
        (the time in front of every output) besides the output's %fields."""
        t = format_time(self.time)
        d = {"hostname": self.hostname}
        if shape.message:
            d["message"] = self.output
        if shape.output:
            d["output"] = f"{t}: {self.priority_title} {self.output}"
        if shape.output_fields:
            of = {"evt.time": self.time, **self.output_fields}
            if self.count > 1:
                of["vigil.repeat_count"] = self.count
            d["output_fields"] = of
        d.update(priority=self.priority_title, rule=self.rule, source=self.source)
        if shape.tags:
            d["tags"] = list(self.tags)
        d["time"] = t
        if self.uuid:
            d["uuid"] = self.uuid
        return d

    def text_line(self) -> str:
        """Falco's one-line text form."""
        line = f"{format_time(self.time)}: {self.priority_title} {self.output}"
        if self.count > 1:
            line += f" (repeated {self.count} times)"
        return line
