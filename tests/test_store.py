"""The SQLite alert store, on real files."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from vigil.alerts.alert import Alert
from vigil.state.containers.model import ContainerInfo
from vigil.events import Event, Kind
from vigil.alerts.store import DEFAULT_STORE_PATH, AlertStore, StoreError, row_to_alert

NOW = 1_700_000_000_000_000_000


def mk(rule="Terminal shell in container", priority="notice", t=NOW, cid="3f4a5b6c7d8e",
       cname="nginx", ns="web", pod="nginx-7d9f", output=None, count=1, **kw):
    of = {"proc.name": "bash", "user.name": "root"}
    if cid is not None:
        of["container.id"] = cid
    if cname is not None:
        of["container.name"] = cname
    if ns is not None:
        of["k8s.ns.name"] = ns
    if pod is not None:
        of["k8s.pod.name"] = pod
    return Alert(time=t, rule=rule, priority=priority,
                 output=output or f"A shell was spawned (container={cname})",
                 output_fields=of, tags=["container", "shell", "mitre_execution"],
                 hostname="node-1", count=count, **kw)


@pytest.fixture
def store(tmp_path):
    s = AlertStore(str(tmp_path / "alerts.db"))
    yield s
    s.close()


def test_default_path_constant():
    assert DEFAULT_STORE_PATH == "/var/lib/vigil/alerts.db"


def test_schema_wal_and_indexes(store, tmp_path):
    store.add(mk())
    c = sqlite3.connect(str(tmp_path / "alerts.db"))
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [r[1] for r in c.execute("PRAGMA table_info(alerts)")]
        assert cols == ["id", "time", "rule", "priority", "priority_rank", "source", "hostname",
                        "container_id", "container_name", "k8s_ns", "k8s_pod", "output",
                        "output_fields", "tags", "count", "uuid"]
        indexed = {r[2] for name in [i[1] for i in c.execute("PRAGMA index_list(alerts)")]
                   for r in c.execute(f"PRAGMA index_info({name})")}
        assert {"time", "rule", "priority_rank", "source", "hostname", "container_id",
                "container_name", "k8s_ns"} <= indexed
        row = c.execute("SELECT time, rule, priority, priority_rank, source, hostname, "
                        "container_id, container_name, k8s_ns, k8s_pod, output, "
                        "output_fields, tags, count FROM alerts").fetchone()
    finally:
        c.close()
    assert row == (NOW, "Terminal shell in container", "notice", 5, "syscall", "node-1",
                   "3f4a5b6c7d8e", "nginx", "web", "nginx-7d9f",
                   "A shell was spawned (container=nginx)",
                   '{"proc.name":"bash","user.name":"root","container.id":"3f4a5b6c7d8e",'
                   '"container.name":"nginx","k8s.ns.name":"web","k8s.pod.name":"nginx-7d9f"}',
                   '["container","shell","mitre_execution"]', 1)


def test_add_is_committed_and_visible_to_other_connection(store, tmp_path):
    rid = store.add(mk())
    c = sqlite3.connect(str(tmp_path / "alerts.db"))
    try:
        assert c.execute("SELECT id FROM alerts").fetchall() == [(rid,)]
    finally:
        c.close()


def test_query_roundtrip_and_newest_first(store):
    for i in range(5):
        store.add(mk(t=NOW + i, output=f"o{i}"))
    rows = store.query()
    assert [r["output"] for r in rows] == ["o4", "o3", "o2", "o1", "o0"]
    r = rows[0]
    assert r["output_fields"]["container.id"] == "3f4a5b6c7d8e"
    assert r["tags"] == ["container", "shell", "mitre_execution"]
    a = row_to_alert(r)
    assert a.to_falco_json() == mk(t=NOW + 4, output="o4").to_falco_json()
    assert [r["output"] for r in store.query(limit=2)] == ["o4", "o3"]


def test_query_filters(store):
    store.add(mk(rule="A", priority="critical", t=NOW, cid="aaaa11112222", cname="db"))
    store.add(mk(rule="B", priority="warning", t=NOW + 10, cid="bbbb11112222", cname="web"))
    store.add(mk(rule="A", priority="debug", t=NOW + 20, cid="host", cname="host", ns=None,
                 pod=None))
    store.add(mk(rule="C", priority="emergency", t=NOW + 30, cid="aaab00000000", cname="cache"))

    def rules(**kw):
        return [r["rule"] + str(r["time"] - NOW) for r in store.query(**kw)]

    assert rules(since_ns=NOW + 10) == ["C30", "A20", "B10"]
    assert rules(rule="A") == ["A20", "A0"]
    assert rules(min_priority="warning") == ["C30", "B10", "A0"]
    assert rules(min_priority="crit") == ["C30", "A0"]
    assert rules(container="aaa") == ["C30", "A0"]          # id prefix
    assert rules(container="aaaa") == ["A0"]
    assert rules(container="web") == ["B10"]                # name
    assert rules(container="host") == ["A20"]
    assert rules(rule="A", min_priority="error", since_ns=NOW - 5) == ["A0"]
    assert rules(container="%") == []                       # no LIKE wildcards
    with pytest.raises(ValueError):
        store.query(min_priority="loud")


def test_container_columns_fall_back_to_event_container(store):
    ev = Event(Kind.EXEC)
    ev.container = ContainerInfo(id="c0ffee00c0ffee00", name="api", namespace="prod",
                                 pod_name="api-5c")
    a = Alert(time=NOW, rule="R", priority="error", output="x",
              output_fields={"proc.name": "sh"}, event=ev)
    store.add(a)
    (r,) = store.query()
    assert (r["container_id"], r["container_name"], r["k8s_ns"], r["k8s_pod"]) == (
        "c0ffee00c0ffee00", "api", "prod", "api-5c")
    # output_fields win over the event when both are there
    store.add(Alert(time=NOW + 1, rule="R", priority="error", output="y",
                    output_fields={"container.id": "1234", "container.name": "n"}, event=ev))
    r = store.query(limit=1)[0]
    assert (r["container_id"], r["container_name"], r["k8s_ns"]) == ("1234", "n", "prod")


def test_no_container_info_at_all(store):
    store.add(Alert(time=NOW, rule="R", priority="info", output="x"))
    (r,) = store.query()
    assert r["container_id"] == "" and r["priority"] == "informational"
    assert r["priority_rank"] == 6


def test_count_is_stored(store):
    store.add(mk(count=17))
    (r,) = store.query()
    assert r["count"] == 17
    assert row_to_alert(r).text_line().endswith("(repeated 17 times)")


def test_add_many_one_transaction(store):
    ids = store.add_many([mk(t=NOW + i) for i in range(100)])
    assert len(ids) == 100 and len(set(ids)) == 100
    assert store.count() == 100
    assert store.add_many([]) == []


def test_retention_by_age(tmp_path):
    s = AlertStore(str(tmp_path / "a.db"), max_age_s=3600)
    try:
        now = time.time_ns()
        s.add(mk(t=now - 7200 * 10**9, output="old"))
        s.add(mk(t=now - 60 * 10**9, output="new"))
        assert s.enforce_retention() == 1
        assert [r["output"] for r in s.query()] == ["new"]
    finally:
        s.close()


def test_retention_by_rows_keeps_newest(tmp_path):
    s = AlertStore(str(tmp_path / "a.db"), max_rows=10)
    try:
        s.add_many([mk(t=NOW + i, output=str(i)) for i in range(25)])
        assert s.enforce_retention(now_ns=NOW) == 15
        assert [r["output"] for r in s.query(limit=None)] == [str(i) for i in range(24, 14, -1)]
    finally:
        s.close()


def test_retention_runs_every_n_inserts(tmp_path):
    s = AlertStore(str(tmp_path / "a.db"), max_rows=5, retention_every=10)
    try:
        for i in range(9):
            s.add(mk(t=NOW + i))
        assert s.count() == 9
        s.add(mk(t=NOW + 9))
        assert s.count() == 5
        assert s.stats()["deleted"] == 5
    finally:
        s.close()


def test_maybe_enforce_retention_by_interval(tmp_path):
    s = AlertStore(str(tmp_path / "a.db"), max_rows=1, retention_interval=60)
    try:
        s.add_many([mk(t=NOW + i) for i in range(3)])
        assert s.maybe_enforce_retention(now=time.monotonic()) == 0
        assert s.maybe_enforce_retention(now=time.monotonic() + 61) == 2
        assert s.count() == 1
    finally:
        s.close()


def test_retention_by_size_shrinks_file(tmp_path):
    p = str(tmp_path / "a.db")
    s = AlertStore(p, max_bytes=200_000, retention_every=10**9)
    try:
        s.add_many([mk(t=NOW + i, output="x" * 500 + str(i)) for i in range(4000)])
        s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        before = os.path.getsize(p)
        assert before > 1_000_000
        deleted = s.enforce_retention(now_ns=NOW)
        assert 0 < deleted < 4000
        assert os.path.getsize(p) <= 200_000
        assert os.path.getsize(p + "-wal") == 0
        newest = s.query(limit=1)[0]
        assert newest["output"].endswith("3999")
    finally:
        s.close()


def test_thread_safe_writers_and_reader(store):
    errors = []

    def writer(k):
        try:
            for i in range(200):
                store.add(mk(t=NOW + k * 1000 + i, rule=f"R{k}"))
        except Exception as exc:  # pragma: no cover - would fail the test
            errors.append(exc)

    def reader():
        try:
            for _ in range(100):
                store.query(limit=10)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    ts.append(threading.Thread(target=reader))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert store.count() == 800


def test_readonly_reader_in_other_process_while_writer_open(store, tmp_path):
    store.add_many([mk(t=NOW + i, output=f"o{i}") for i in range(3)])
    code = ("import sys, json; from vigil.alerts.store import AlertStore; "
            "s = AlertStore(sys.argv[1], readonly=True); "
            "print(json.dumps([r['output'] for r in s.query()])); s.close()")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "alerts.db")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '["o2", "o1", "o0"]'
    store.add(mk(t=NOW + 10, output="later"))       # writer still works
    assert store.query(limit=1)[0]["output"] == "later"


def test_readonly_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        AlertStore(str(tmp_path / "nope.db"), readonly=True)
    other = tmp_path / "other.db"
    c = sqlite3.connect(str(other))
    c.execute("CREATE TABLE x (y)")
    c.commit()
    c.close()
    with pytest.raises(StoreError, match="not a vigil alert store"):
        AlertStore(str(other), readonly=True)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        AlertStore(str(junk), readonly=True)
    s = AlertStore(str(tmp_path / "ok.db"))
    s.close()
    ro = AlertStore(str(tmp_path / "ok.db"), readonly=True)
    try:
        with pytest.raises(StoreError):
            ro.add(mk())
        assert ro.query() == []
    finally:
        ro.close()


def test_reopen_keeps_data_and_creates_dirs(tmp_path):
    p = tmp_path / "deep" / "er" / "alerts.db"
    with AlertStore(str(p)) as s:
        s.add(mk())
    with AlertStore(str(p)) as s:
        assert s.count() == 1
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"


def test_size_retention_triggered_by_inserts(tmp_path):
    p = str(tmp_path / "a.db")
    s = AlertStore(p, max_bytes=100_000, retention_every=500)
    try:
        for k in range(6):
            s.add_many([mk(t=NOW + k * 1000 + i, output="y" * 400) for i in range(500)])
        assert os.path.getsize(p) <= 100_000
        assert s.stats()["retention_runs"] == 6
    finally:
        s.close()
