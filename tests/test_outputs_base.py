"""Dispatcher: store first, outputs isolated from each other, counters."""
from __future__ import annotations

import io
import json
import logging

import pytest

from vigil.alerts.alert import Alert
from vigil.alerts.outputs.base import AlertPipeline, Output, OutputDispatcher
from vigil.alerts.ratelimit import RateLimiter
from vigil.alerts.outputs.stdout import StdoutOutput
from vigil.alerts.store import AlertStore

NOW = 1_700_000_000_123_456_789


def mk(rule="Write below etc", output="File below /etc opened for writing (file=/etc/x)",
       t=NOW, priority="error"):
    return Alert(time=t, rule=rule, priority=priority, output=output,
                 output_fields={"fd.name": "/etc/x", "container.id": "host"},
                 tags=["filesystem"], hostname="node-1")


class Recorder(Output):
    """Checks, at emit time, that the store (read from its own connection) has the alert."""

    name = "recorder"

    def __init__(self, store_path=None):
        self.store_path = store_path
        self.got = []
        self.in_store_at_emit = []
        self.closed_with = "not closed"

    def emit(self, alert):
        if self.store_path:
            ro = AlertStore(self.store_path, readonly=True)
            try:
                self.in_store_at_emit.append(
                    any(r["time"] == alert.time and r["rule"] == alert.rule
                        for r in ro.query(limit=None)))
            finally:
                ro.close()
        self.got.append(alert)
        return True

    def close(self, timeout=None):
        self.closed_with = timeout

    def stats(self):
        return {"seen": len(self.got)}


class Broken(Output):
    name = "broken"

    def __init__(self):
        self.calls = 0

    def emit(self, alert):
        self.calls += 1
        raise ConnectionError("peer went away")

    def close(self, timeout=None):
        raise RuntimeError("close failed too")


class Refusing(Output):
    name = "refusing"

    def emit(self, alert):
        return False


def test_store_is_written_before_any_output(tmp_path):
    path = str(tmp_path / "alerts.db")
    store = AlertStore(path)
    rec = Recorder(path)
    d = OutputDispatcher([rec], store=store)
    d.emit(mk(t=NOW))
    d.emit_batch([mk(t=NOW + 1), mk(t=NOW + 2)])
    assert rec.in_store_at_emit == [True, True, True]
    assert d.stats()["store"]["written"] == 3
    d.close()


def test_one_output_failing_does_not_affect_others(tmp_path, caplog):
    buf = io.StringIO()
    broken, rec, refusing = Broken(), Recorder(), Refusing()
    d = OutputDispatcher([broken, StdoutOutput(buf, "json"), rec, refusing],
                         store=AlertStore(str(tmp_path / "a.db")))
    with caplog.at_level(logging.WARNING):
        for i in range(3):
            d.emit(mk(t=NOW + i))              # never raises
    assert broken.calls == 3
    assert len(rec.got) == 3
    assert [json.loads(line)["time"] for line in buf.getvalue().splitlines()] == [
        "2023-11-14T22:13:20.123456789Z", "2023-11-14T22:13:20.123456790Z",
        "2023-11-14T22:13:20.123456791Z"]
    s = d.stats()
    assert s["received"] == 3
    assert s["outputs"]["broken"] == {"sent": 0, "failed": 3, "dropped": 0, "details": {}}
    assert s["outputs"]["stdout"]["sent"] == 3
    assert s["outputs"]["recorder"] == {"sent": 3, "failed": 0, "dropped": 0,
                                        "details": {"seen": 3}}
    assert s["outputs"]["refusing"] == {"sent": 0, "failed": 0, "dropped": 3, "details": {}}
    assert s["store"]["written"] == 3
    # the failure was logged once, not once per alert
    assert sum("output broken failed" in r.message for r in caplog.records) == 1
    d.close(2.0)                               # close errors are swallowed too
    assert rec.closed_with is not None and 0 <= rec.closed_with <= 2.0


def test_broken_store_does_not_stop_outputs(tmp_path):
    store = AlertStore(str(tmp_path / "a.db"))
    store.close()                              # every add now raises
    rec = Recorder()
    d = OutputDispatcher([rec], store=store)
    d.emit(mk())
    d.emit_batch([mk(), mk()])
    assert len(rec.got) == 3
    assert d.stats()["store"]["failed"] == 3


def test_duplicate_names_are_made_unique():
    d = OutputDispatcher([Recorder(), Recorder(), Recorder()])
    d.emit(mk())
    assert sorted(d.stats()["outputs"]) == ["recorder", "recorder.2", "recorder.3"]
    assert d.stats()["store"] is None


def test_pipeline_folds_then_stores_then_outputs(tmp_path):
    clock = [100.0]
    path = str(tmp_path / "a.db")
    rec = Recorder(path)
    limiter = RateLimiter(window=1.0, clock=lambda: clock[0])
    p = AlertPipeline(OutputDispatcher([rec], store=AlertStore(path)), limiter=limiter)
    for i in range(5):
        p.emit(mk(t=NOW + i))
    assert len(rec.got) == 1
    clock[0] += 1.0
    p.tick()
    assert [a.count for a in rec.got] == [1, 4]
    p.emit(mk(t=NOW + 10))
    p.emit(mk(t=NOW + 11))
    p.close(1.0)                               # flushes the pending fold
    assert [a.count for a in rec.got] == [1, 4, 2]
    assert rec.in_store_at_emit == [True, True, True]
    ro = AlertStore(path, readonly=True)
    try:
        assert sorted(r["count"] for r in ro.query()) == [1, 2, 4]
    finally:
        ro.close()
    st = p.stats()
    assert st["rate_limit"]["received"] == 7 and st["received"] == 3


def test_pipeline_without_limiter_and_batch():
    rec = Recorder()
    p = AlertPipeline(OutputDispatcher([rec]))
    p.emit(mk())
    p.emit_batch([mk(), mk()])
    p.tick()
    p.close()
    assert len(rec.got) == 3
    assert "rate_limit" not in p.stats()


def test_close_is_idempotent():
    rec = Recorder()
    d = OutputDispatcher([rec])
    d.close(1)
    rec.closed_with = "again?"
    d.close(1)
    assert rec.closed_with == "again?"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_stdout_output_formats(fmt):
    buf = io.StringIO()
    out = StdoutOutput(buf, fmt)
    a = mk()
    a.count = 3
    assert out.emit(a) is True
    line = buf.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    if fmt == "text":
        assert line == ("2023-11-14T22:13:20.123456789Z: Error File below /etc opened for "
                        "writing (file=/etc/x) (repeated 3 times)\n")
    else:
        assert json.loads(line) == {
            "hostname": "node-1",
            "output": "2023-11-14T22:13:20.123456789Z: Error File below /etc opened for "
                      "writing (file=/etc/x)",
            "output_fields": {"evt.time": NOW, "fd.name": "/etc/x", "container.id": "host",
                              "vigil.repeat_count": 3},
            "priority": "Error",
            "rule": "Write below etc",
            "source": "syscall",
            "tags": ["filesystem"],
            "time": "2023-11-14T22:13:20.123456789Z",
        }
    assert out.stats()["written"] == 1


def test_stdout_default_stream_is_current_sys_stdout(capsys):
    out = StdoutOutput()
    out.emit(mk())
    assert capsys.readouterr().out.startswith("2023-11-14T22:13:20.123456789Z: Error ")
    with pytest.raises(ValueError):
        StdoutOutput(format="xml")
