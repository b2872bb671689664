"""The store as the outbox, without the kernel: cursors from the first start,
retries that never drop, order, restarts, retention; schema 1 stores; the
modes and symlink checks of the files vigil makes."""
from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time

import pytest

from vigil.alerts.alert import Alert
from vigil.alerts.outputs.base import Output, OutputDispatcher, Rejected
from vigil.alerts.outputs.file import FileOutput
from vigil.alerts.store import AlertStore
from vigil.safe_files import FileMode, UnsafeFileError, make_dirs, open_private

pytestmark = pytest.mark.usefixtures("no_leftover_threads")

NOW = 1_700_000_000_000_000_000


def mk(i: int) -> Alert:
    return Alert(time=NOW + i, rule="R", priority="warning", output=f"o{i}",
                 output_fields={"i": i}, hostname="h")


class Flaky(Output):
    """A durable output that fails while ``down`` is set."""
    name = "flaky"
    durable = True
    backoff = 0.01
    max_backoff = 0.05

    def __init__(self, inline=True, reject=()):
        self.inline = inline
        self.down = threading.Event()
        self.got = []
        self.attempts = 0
        self.reject = set(reject)

    def emit(self, alert):
        self.send(alert)
        return True

    def send(self, alert, timeout=None):
        self.attempts += 1
        if self.down.is_set():
            raise ConnectionError("receiver down")
        if alert.output_fields["i"] in self.reject:
            raise Rejected("HTTP 400")
        self.got.append(alert)


def wait(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "worker"])
def test_down_receiver_gets_everything_in_order_with_the_same_ids(tmp_path, inline):
    path = str(tmp_path / "a.db")
    out = Flaky(inline=inline)
    d = OutputDispatcher([out], store=AlertStore(path))
    out.down.set()
    alerts = [mk(i) for i in range(50)]
    d.emit_batch(alerts[:20])
    for a in alerts[20:]:
        d.emit(a)
    time.sleep(0.2)
    assert out.got == [] and out.attempts > 1        # retried, nothing given up
    out.down.clear()
    wait(lambda: len(out.got) == 50)
    assert [a.output_fields["i"] for a in out.got] == list(range(50))
    assert [a.uuid for a in out.got] == [a.uuid for a in alerts]
    assert all(a.uuid for a in alerts)
    s = d.stats()["outputs"]["flaky"]
    assert s["sent"] == 50 and s["failed"] >= 1 and s["outbox"]["failing"] is False
    d.close(2)


def test_cursor_survives_restart_and_starts_at_the_end(tmp_path):
    path = str(tmp_path / "a.db")
    st = AlertStore(path)
    st.add_many([mk(i) for i in range(3)])          # before the output ever ran
    out = Flaky()
    out.down.set()
    d = OutputDispatcher([out], store=st)
    d.emit_batch([mk(i) for i in range(3, 8)])
    d.close(0.2)                                    # failing: stops at once, alerts wait
    assert out.got == []
    out2 = Flaky()
    d2 = OutputDispatcher([out2], store=AlertStore(path))
    wait(lambda: len(out2.got) == 5)
    # the three from before its first start are not its business
    assert [a.output_fields["i"] for a in out2.got] == [3, 4, 5, 6, 7]
    d2.emit(mk(8))
    wait(lambda: out2.got[-1].output_fields["i"] == 8)
    d2.emit(mk(9))
    wait(lambda: out2.got[-1].output_fields["i"] == 9)
    d2.close(1)
    with AlertStore(path) as st3:
        assert st3.cursors() == {"flaky": 10}


def test_rejected_alert_is_passed_and_retention_ends_a_wait(tmp_path):
    path = str(tmp_path / "a.db")
    out = Flaky(reject={1})
    st = AlertStore(path, max_rows=2)
    d = OutputDispatcher([out], store=st)
    d.emit_batch([mk(0), mk(1), mk(2)])
    assert [a.output_fields["i"] for a in out.got] == [0, 2]
    out.down.set()
    d.emit_batch([mk(i) for i in range(3, 7)])
    st.enforce_retention()                          # only the newest two are kept
    out.down.clear()
    wait(lambda: out.got[-1].output_fields["i"] == 6)
    assert [a.output_fields["i"] for a in out.got] == [0, 2, 5, 6]
    d.close(1)


def test_stdout_like_outputs_and_no_store_stay_in_memory(tmp_path):
    out = Flaky()
    d = OutputDispatcher([out])                     # no store: straight to the output
    d.emit(mk(0))
    assert len(out.got) == 1 and out.got[0].uuid
    assert "outbox" not in d.stats()["outputs"]["flaky"]
    d.close(1)


def test_schema_1_store_is_migrated(tmp_path):
    path = str(tmp_path / "old.db")
    c = sqlite3.connect(path)
    c.executescript("""
        CREATE TABLE alerts (id INTEGER PRIMARY KEY, time INTEGER NOT NULL, rule TEXT NOT NULL,
          priority TEXT NOT NULL, priority_rank INTEGER NOT NULL, source TEXT NOT NULL DEFAULT '',
          hostname TEXT NOT NULL DEFAULT '', container_id TEXT NOT NULL DEFAULT '',
          container_name TEXT NOT NULL DEFAULT '', k8s_ns TEXT NOT NULL DEFAULT '',
          k8s_pod TEXT NOT NULL DEFAULT '', output TEXT NOT NULL,
          output_fields TEXT NOT NULL DEFAULT '{}', tags TEXT NOT NULL DEFAULT '[]',
          count INTEGER NOT NULL DEFAULT 1);
        INSERT INTO alerts (time, rule, priority, priority_rank, output) VALUES (1, 'R', 'warning', 4, 'a');
        INSERT INTO alerts (time, rule, priority, priority_rank, output) VALUES (2, 'R', 'warning', 4, 'b');
        PRAGMA user_version=1;""")
    c.close()
    ro = AlertStore(path, readonly=True)             # readable as it is
    assert [r["output"] for r in ro.query()] == ["b", "a"]
    ro.close()
    with AlertStore(path) as st:
        rows = st.query()
        assert [r["output"] for r in rows] == ["b", "a"]
        ids = {r["uuid"] for r in rows}
        assert len(ids) == 2 and all(len(u) == 36 and u[14] == "4" for u in ids)
        st.add(mk(0))
        st.enforce_retention()
    with AlertStore(path, max_rows=0 or None) as st:
        st._conn.execute("DELETE FROM alerts")
        assert st.last_id() == 3 and st.add(mk(1)) == 4    # ids are never reused


# --- files ---------------------------------------------------------------------------

def test_modes_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        make_dirs(str(tmp_path / "a" / "b"))
        st = AlertStore(str(tmp_path / "a" / "b" / "s.db"), file_mode=FileMode(0o640, os.getgid()))
        st.add(mk(0))
        out = FileOutput(str(tmp_path / "c" / "x.jsonl"), max_bytes=10, backups=1)
        out.emit(mk(0))
        out.emit(mk(1))
        out.close()
    finally:
        os.umask(old)
    for p in ("a", "a/b", "c"):
        assert stat.S_IMODE(os.stat(tmp_path / p).st_mode) == 0o700, p
    for p in ("s.db", "s.db-wal", "s.db-shm"):
        assert stat.S_IMODE(os.stat(tmp_path / "a" / "b" / p).st_mode) == 0o640, p
    st.close()
    for p in ("x.jsonl", "x.jsonl.1"):
        assert stat.S_IMODE(os.stat(tmp_path / "c" / p).st_mode) == 0o600, p


def test_symlinks_refused_and_file_mode_parsing(tmp_path):
    victim = tmp_path / "victim"
    os.symlink(victim, tmp_path / "link")
    with pytest.raises(UnsafeFileError, match="link.*symbolic link"):
        open_private(str(tmp_path / "link"))
    os.symlink(victim, tmp_path / "s.db-shm")
    with pytest.raises(UnsafeFileError, match="s.db-shm"):
        AlertStore(str(tmp_path / "s.db"))
    assert not victim.exists()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        open_private(str(tmp_path / "fifo"), os.O_WRONLY | os.O_NONBLOCK)
    assert FileMode.parse(None) == FileMode(0o600)
    assert FileMode.parse("0640", 0).mode == 0o640
    assert FileMode.parse(0o640).mode == FileMode.parse(640).mode == 0o640
    for bad in ("0644", 0o777, True, "rw"):
        with pytest.raises(ValueError):
            FileMode.parse(bad)
    with pytest.raises(ValueError, match="unknown group"):
        FileMode.parse("0640", "no-such-group-here")
