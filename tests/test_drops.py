"""Drops are alerts (vigil.alerts.drops.DropReporter) and their configuration."""
from __future__ import annotations

import pytest

from vigil.alerts.drops import PRIORITY, RULE, DropReporter
from vigil.config import ConfigError, load_config


class Kernel:
    """Counters as vigil.kernel.counters gives them, set by the test."""

    def __init__(self):
        self.totals = {"dropped": 0, "dropped_hi": 0, "over_budget": 0, "no_stash": 0}
        self.kinds = {}

    def losses(self):
        return dict(self.totals)

    def by_kind(self):
        return {k: dict(v) for k, v in self.kinds.items()}


def reporter(k, **kw):
    got = []
    clock = kw.pop("clock", None) or (lambda: 0.0)
    r = DropReporter(k.losses, k.by_kind, got.append, clock=clock, **kw)
    return r, got


def test_no_loss_no_alert():
    k = Kernel()
    r, got = reporter(k)
    assert not r.tick(1.0) and got == []


def test_a_loss_is_one_critical_alert_with_counts_and_offenders():
    k = Kernel()
    r, got = reporter(k)
    k.totals.update(dropped=700, over_budget=300)
    k.kinds = {"open": {"sent": 50, "dropped": 700, "over_budget": 290},
               "connect": {"sent": 5, "dropped": 0, "over_budget": 10}}
    r.on_record({"pid": 42, "comm": "flooder", "over_budget": 250, "lost": 600})
    r.on_record({"pid": 42, "comm": "flooder", "over_budget": 290, "lost": 700})
    r.on_record({"pid": 7, "comm": "other", "over_budget": 10, "lost": 0})
    assert r.tick(1.0)
    [a] = got
    assert a.rule == RULE == "Falco internal: syscall event drop"
    assert a.priority == PRIORITY == "critical"
    f = a.output_fields
    assert f["n_drops"] == 1000 and f["n_drops_buffer"] == 700 and f["n_drops_budget"] == 300
    assert f["n_evts"] == 55
    assert f["vigil.drops.by_kind"] == "open=990 connect=10"
    assert f["vigil.drops.top_procs"] == "flooder[42]=990 other[7]=10"
    assert "1000 system calls dropped" in a.output and "flooder[42]=990" in a.output


def test_reports_are_rate_limited_and_the_next_one_counts_everything_since():
    k = Kernel()
    now = [0.0]
    r, got = reporter(k, rate=0.1, max_burst=1, clock=lambda: now[0])
    k.totals["dropped"] = 10
    r.on_record({"pid": 9, "comm": "f", "over_budget": 0, "lost": 10})
    assert r.tick(0.0)
    for t in range(1, 10):
        k.totals["dropped"] += 10
        r.on_record({"pid": 9, "comm": "f", "over_budget": 0, "lost": k.totals["dropped"]})
        assert not r.tick(float(t))
    k.totals["dropped"] += 10
    r.on_record({"pid": 9, "comm": "f", "over_budget": 0, "lost": k.totals["dropped"]})
    assert r.tick(10.0)
    assert [a.output_fields["n_drops"] for a in got] == [10, 100]


def test_offenders_are_counted_from_the_last_report():
    k = Kernel()
    r, got = reporter(k, rate=1000, max_burst=10)
    k.totals["over_budget"] = 100
    r.on_record({"pid": 1, "comm": "a", "over_budget": 100, "lost": 0})
    r.tick(1.0)
    k.totals["over_budget"] = 150
    r.on_record({"pid": 1, "comm": "a", "over_budget": 150, "lost": 0})
    r.tick(2.0)
    assert got[1].output_fields["vigil.drops.top_procs"] == "a[1]=50"


def test_a_tick_between_the_count_and_its_loss_record_waits_for_the_record():
    # the kernel counts a loss just before its record goes on the high-priority
    # ring: a tick in between waits (a bounded grace) so the report names the process
    k = Kernel()
    r, got = reporter(k)
    k.totals["dropped"] = 5
    assert not r.tick(1.0) and not r.tick(1.2)
    r.on_record({"pid": 3, "comm": "flooder", "over_budget": 0, "lost": 5})
    assert r.tick(1.25)
    assert got[0].output_fields["vigil.drops.top_procs"] == "flooder[3]=5"
    # no record at all (e.g. no memory for a bucket): reported after the grace, unnamed
    k2 = Kernel()
    r2, got2 = reporter(k2)
    k2.totals["no_stash"] = 2
    assert not r2.tick(5.0) and not r2.tick(5.2)
    assert r2.tick(5.31)
    assert got2[0].output_fields["n_drops_stash"] == 2
    assert got2[0].output_fields["vigil.drops.top_procs"] == ""


def test_actions():
    k = Kernel()
    k.totals["dropped"] = 1
    r, got = reporter(k, actions=["log"])
    assert not r.tick(1.0)
    assert r.tick(1.5) and got == []
    r, got = reporter(k, actions=["ignore"])
    assert not r.tick(1.0) and got == []


def test_config_sections(tmp_path):
    p = tmp_path / "v.yaml"
    p.write_text("sensors:\n  ringbuf_hi_size: 1MiB\n  budget: {rate: 0}\n"
                 "syscall_event_drops: {actions: [alert], rate: 1, max_burst: 3}\n")
    c = load_config(str(p))
    assert c["sensors"]["ringbuf_hi_size"] == 1 << 20
    assert c["sensors"]["budget"] == {"rate": 0, "burst": 10000}
    assert c["syscall_event_drops"] == {"actions": ["alert"], "rate": 1.0, "max_burst": 3}


@pytest.mark.parametrize("text, where", [
    ("sensors:\n  ringbuf_hi_size: 3000\n", "v.yaml:2: sensors.ringbuf_hi_size"),
    ("sensors:\n  budget:\n    rate: -1\n", "v.yaml:3: sensors.budget.rate"),
    ("sensors:\n  budget:\n    bursts: 5\n", "v.yaml:3: sensors.budget.bursts"),
    ("syscall_event_drops:\n  actions: [exit]\n", "v.yaml:2: syscall_event_drops.actions"),
    ("syscall_event_drops:\n  rate: 0\n", "v.yaml:2: syscall_event_drops.rate"),
])
def test_config_errors_say_where(tmp_path, text, where):
    p = tmp_path / "v.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert str(e.value).startswith(str(tmp_path / where)), str(e.value)
