"""Alerts to a text stream (stdout by default): Falco's one-liner or JSON lines."""
from __future__ import annotations

import json
import sys
import threading
from typing import Optional, TextIO

from vigil.alerts.alert import FALCO_JSON, Alert, JsonShape
from vigil.alerts.outputs.base import Output
from vigil.alerts.outputs.registry import register

FORMATS = ("text", "json")


def alert_json_line(alert: Alert, shape: JsonShape = FALCO_JSON) -> str:
    """One alert as a single line of Falco JSON (no trailing newline)."""
    return json.dumps(alert.to_falco_json(shape), ensure_ascii=False, separators=(",", ":"),
                      default=str)


class StdoutOutput(Output):
    name = "stdout"

    def __init__(self, stream: Optional[TextIO] = None, format: str = "text"):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        self._stream = stream
        self.format = format
        self._lock = threading.Lock()
        self._written = 0

    @property
    def stream(self) -> TextIO:
        # resolved lazily so that a replaced sys.stdout (tests, daemons) is honoured
        return self._stream if self._stream is not None else sys.stdout

    def emit(self, alert: Alert) -> bool:
        line = alert.text_line() if self.format == "text" else alert_json_line(alert,
                                                                                 self.json_shape)
        with self._lock:
            s = self.stream
            s.write(line + "\n")
            s.flush()
            self._written += 1
        return True

    def close(self, timeout: Optional[float] = None) -> None:
        try:
            with self._lock:
                self.stream.flush()
        except (OSError, ValueError):
            pass

    def stats(self) -> dict:
        return {"written": self._written, "format": self.format}


@register("stdout", defaults={"format": "text"}, live_only=False, enabled_by_default=True)
def _build(s, stream: Optional[TextIO]) -> StdoutOutput:
    return StdoutOutput(stream=stream, format=s.str("format", FORMATS))
