"""Rate limiting: identical alerts folded within a window, nothing lost."""
from __future__ import annotations

import dataclasses

from hypothesis import given, settings, strategies as st

from vigil.alerts.alert import Alert
from vigil.alerts.ratelimit import RateLimiter


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def mk(rule="Shell in container", output="shell spawned (user=root)", t=1, **kw):
    return Alert(time=t, rule=rule, priority="notice", output=output, **kw)


def make(window=1.0, **kw):
    clock = Clock()
    got = []
    rl = RateLimiter(sink=got.append, window=window, clock=clock, **kw)
    return rl, clock, got


def test_first_goes_out_at_once_repeats_fold_into_one_with_count():
    rl, clock, got = make()
    rl.emit(mk(t=1))
    assert [a.time for a in got] == [1] and got[0].count == 1
    for i in range(2, 6):
        clock.t += 0.1
        rl.emit(mk(t=i))
    assert len(got) == 1                      # repeats held back
    assert rl.stats()["pending"] == 4
    clock.t = 1000.99
    rl.tick()
    assert len(got) == 1                      # window not over yet
    rl.tick(1001.0)
    assert len(got) == 2
    folded = got[1]
    assert folded.count == 4
    assert folded.time == 2                   # the first folded occurrence
    assert folded.text_line().endswith("(repeated 4 times)")
    assert folded.to_falco_json()["output_fields"]["vigil.repeat_count"] == 4
    s = rl.stats()
    assert s["received"] == 5 and s["passed"] == 1 and s["folded"] == 4
    assert s["folded_emitted"] == 1 and s["pending"] == 0


def test_quiet_window_forgets_key_and_next_goes_out_at_once():
    rl, clock, got = make()
    rl.emit(mk())
    clock.t += 1.5
    rl.tick()
    assert rl.stats()["keys"] == 0
    rl.emit(mk(t=7))
    assert [a.time for a in got] == [1, 7]
    assert all(a.count == 1 for a in got)


def test_sustained_storm_gives_one_alert_per_window():
    rl, clock, got = make(window=1.0)
    n = 0
    for step in range(1000):        # 10 s at 100 alerts/s
        clock.t = 1000.0 + step * 0.01
        rl.emit(mk(t=step))
        n += 1
        rl.tick()
    rl.flush()
    assert sum(a.count for a in got) == n
    assert 10 <= len(got) <= 12
    assert got[0].count == 1


def test_lazy_expiry_without_tick():
    rl, clock, got = make()
    rl.emit(mk(t=1))
    clock.t += 0.5
    rl.emit(mk(t=2))
    clock.t += 0.6                    # window over; no tick was called
    rl.emit(mk(t=3))
    assert [(a.time, a.count) for a in got] == [(1, 1), (2, 1)]
    rl.flush()
    assert [(a.time, a.count) for a in got] == [(1, 1), (2, 1), (3, 1)]


def test_different_rule_or_output_are_not_folded():
    rl, clock, got = make()
    rl.emit(mk(rule="A"))
    rl.emit(mk(rule="B"))
    rl.emit(mk(rule="A", output="other"))
    rl.emit(mk(rule="A"))
    assert [(a.rule, a.output) for a in got] == [
        ("A", "shell spawned (user=root)"), ("B", "shell spawned (user=root)"), ("A", "other")]
    rl.flush()
    assert got[-1].rule == "A" and got[-1].count == 1 and len(got) == 4


def test_flush_emits_pending_and_clears():
    rl, clock, got = make(window=60)
    for i in range(5):
        rl.emit(mk(t=i))
    rl.flush()
    assert [(a.time, a.count) for a in got] == [(0, 1), (1, 4)]
    assert rl.stats()["keys"] == 0
    rl.flush()
    assert len(got) == 2


def test_incoming_counts_are_added():
    rl, clock, got = make()
    rl.emit(mk())
    rl.emit(mk(count=3))
    rl.emit(mk())
    rl.flush()
    assert [a.count for a in got] == [1, 4]


def test_window_zero_passes_everything():
    rl, clock, got = make(window=0)
    for i in range(3):
        rl.emit(mk(t=i))
    assert [a.count for a in got] == [1, 1, 1]


def test_max_keys_bound_passes_untracked():
    rl, clock, got = make(max_keys=2)
    for r in "ABC":
        rl.emit(mk(rule=r))
    rl.emit(mk(rule="C"))             # C was not tracked: not folded
    assert [a.rule for a in got] == ["A", "B", "C", "C"]
    assert rl.stats()["untracked"] == 2
    assert rl.stats()["keys"] == 2


def test_batch_sink_gets_lists():
    clock = Clock()
    batches = []
    rl = RateLimiter(batch_sink=batches.append, window=1.0, clock=clock)
    rl.emit_many([mk(rule="A"), mk(rule="A"), mk(rule="B")])
    assert [[a.rule for a in b] for b in batches] == [["A", "B"]]
    clock.t += 2
    rl.tick()
    assert [(a.rule, a.count) for a in batches[-1]] == [("A", 1)]


def test_folded_alert_is_a_copy():
    rl, clock, got = make()
    first_repeat = mk(t=2)
    rl.emit(mk(t=1))
    rl.emit(first_repeat)
    rl.emit(mk(t=3))
    rl.flush()
    assert first_repeat.count == 1 and got[1].count == 2
    assert dataclasses.asdict(got[1])["rule"] == first_repeat.rule


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABC"), st.floats(0, 3), st.booleans()),
                max_size=60),
       st.floats(0.01, 2.0))
def test_property_nothing_lost(steps, window):
    rl, clock, got = make(window=window)
    sent = 0
    for rule, dt, tick in steps:
        clock.t += dt
        rl.emit(mk(rule=rule))
        sent += 1
        if tick:
            rl.tick()
    rl.flush()
    assert sum(a.count for a in got) == sent
    for r in "ABC":
        # never more than one alert of a key per window, apart from the first
        assert sum(1 for a in got if a.rule == r) <= sum(1 for s in steps if s[0] == r)


def test_tick_is_cheap_when_nothing_is_due_and_keys_freed_by_tick():
    rl, clock, got = make(window=1.0, max_keys=1000)
    for i in range(1000):
        rl.emit(mk(rule=f"R{i}"))
    calls = []
    orig = rl._close_window
    rl._close_window = lambda *a: calls.append(1) or orig(*a)
    clock.t += 0.5
    rl.tick()
    assert calls == []
    rl.emit(mk(rule="overflow"))              # full: passes straight through
    assert rl.stats()["untracked"] == 1
    clock.t += 0.5
    rl.tick()
    assert len(calls) == 1000 and rl.stats()["keys"] == 0
    rl.emit(mk(rule="overflow"))
    assert rl.stats()["keys"] == 1 and len(got) == 1002
