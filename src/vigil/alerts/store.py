"""The embedded alert store: every alert in a local SQLite file.

The agent writes (one connection, guarded by a lock, so any agent thread may
call :meth:`AlertStore.add`); ``vigil alerts`` reads from another process
through its own read-only connection.  The database runs in WAL mode so
readers never block the writer.

Durability: each :meth:`add` / :meth:`add_many` is one committed transaction,
and the dispatcher calls it *before* handing the alert to any output.  With
the default ``synchronous="FULL"`` the WAL is fsynced at every commit, so an
alert that reached a webhook or syslog is on disk even if the node loses
power right after; ``synchronous="NORMAL"`` survives a crash of the agent
process but not of the machine, and is faster.  Callers that produce many
alerts at once should use :meth:`add_many` (one fsync per batch).

Retention (:meth:`enforce_retention`) removes the oldest alerts by age, by
row count and by database size; it runs every ``retention_every`` inserts and
whenever :meth:`maybe_enforce_retention` finds ``retention_interval`` seconds
have passed since the last run.

The store is also the outbox the outputs deliver from (see
:mod:`vigil.alerts.outbox`): every alert has a stable ``uuid``, ids only
grow (AUTOINCREMENT: never reused after retention), and the ``outbox``
table keeps each output's cursor, the id of the last alert it delivered.

Files: the database and its -wal/-shm are created 0600 (or 0640 with a
group, ``file_mode``) before SQLite opens them, directories 0700, and a
symlink at any of the three paths is refused (:mod:`vigil.safe_files`).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import urllib.parse
from typing import Iterable, Optional

from vigil.alerts.alert import Alert, normalize_priority, priority_rank
from vigil.safe_files import PRIVATE, FileMode, open_private, refuse_symlink, set_mode

DEFAULT_STORE_PATH = "/var/lib/vigil/alerts.db"

SCHEMA_VERSION = 3      # 3: the behavioural profiles' tables (vigil.profiles.book)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    time           INTEGER NOT NULL,          -- ns since the epoch
    rule           TEXT    NOT NULL,
    priority       TEXT    NOT NULL,          -- canonical lower-case name
    priority_rank  INTEGER NOT NULL,          -- 0 emergency .. 7 debug
    source         TEXT    NOT NULL DEFAULT '',
    hostname       TEXT    NOT NULL DEFAULT '',
    container_id   TEXT    NOT NULL DEFAULT '',
    container_name TEXT    NOT NULL DEFAULT '',
    k8s_ns         TEXT    NOT NULL DEFAULT '',
    k8s_pod        TEXT    NOT NULL DEFAULT '',
    output         TEXT    NOT NULL,          -- without the time/priority prefix
    output_fields  TEXT    NOT NULL DEFAULT '{}',   -- JSON object
    tags           TEXT    NOT NULL DEFAULT '[]',   -- JSON array
    count          INTEGER NOT NULL DEFAULT 1,
    uuid           TEXT    NOT NULL DEFAULT ''  -- the stable alert id
);
CREATE TABLE IF NOT EXISTS outbox (
    name           TEXT    PRIMARY KEY,       -- output type and target
    last_id        INTEGER NOT NULL,          -- the last alert delivered
    started        INTEGER NOT NULL           -- ns since the epoch, first start
);
-- vigil.profiles: one row per workload profile (a JSON document), the requests
-- `vigil profiles lock|reset|learn|import` leave for the agent, and settings
CREATE TABLE IF NOT EXISTS profiles (
    workload       TEXT    PRIMARY KEY,
    status         TEXT    NOT NULL,          -- learning | locked
    doc            TEXT    NOT NULL,          -- JSON (vigil.profiles.profile.Profile.to_dict)
    updated        INTEGER NOT NULL           -- ns since the epoch
);
CREATE TABLE IF NOT EXISTS profile_requests (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    time           INTEGER NOT NULL,
    action         TEXT    NOT NULL,          -- lock | reset | learn | import
    workload       TEXT    NOT NULL DEFAULT '',   -- '' = every profile
    arg            TEXT    NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS profile_settings (
    name           TEXT    PRIMARY KEY,
    value          TEXT    NOT NULL           -- JSON
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(time);
CREATE INDEX IF NOT EXISTS alerts_rule_time ON alerts(rule, time);
CREATE INDEX IF NOT EXISTS alerts_rank_time ON alerts(priority_rank, time);
CREATE INDEX IF NOT EXISTS alerts_source ON alerts(source);
CREATE INDEX IF NOT EXISTS alerts_hostname ON alerts(hostname);
CREATE INDEX IF NOT EXISTS alerts_container_id ON alerts(container_id);
CREATE INDEX IF NOT EXISTS alerts_container_name ON alerts(container_name);
CREATE INDEX IF NOT EXISTS alerts_k8s ON alerts(k8s_ns, k8s_pod);
"""

COLUMNS = ("id", "time", "rule", "priority", "priority_rank", "source", "hostname",
           "container_id", "container_name", "k8s_ns", "k8s_pod", "output",
           "output_fields", "tags", "count", "uuid")

_INSERT = ("INSERT INTO alerts (time, rule, priority, priority_rank, source, hostname, "
           "container_id, container_name, k8s_ns, k8s_pod, output, output_fields, tags, count, "
           "uuid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")

# a version-4 UUID in SQL, for the alerts of a schema-1 store
_SQL_UUID4 = ("lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || "
              "substr(lower(hex(randomblob(2))), 2) || '-' || "
              "substr('89ab', 1 + (abs(random()) % 4), 1) || "
              "substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))")
_V1_COLUMNS = ", ".join(COLUMNS[:-1])


class StoreError(Exception):
    """The store cannot be opened or read."""


def _text(v) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else str(v)


def _row_values(alert: Alert) -> tuple:
    of = alert.output_fields or {}
    c = getattr(alert.event, "container", None) if alert.event is not None else None

    def pick(key, attr):
        v = of.get(key)
        if v in (None, "") and c is not None:
            v = getattr(c, attr, None)
        return _text(v)

    prio = normalize_priority(alert.priority) or "debug"
    return (
        int(alert.time), _text(alert.rule), prio, priority_rank(prio), _text(alert.source),
        _text(alert.hostname),
        pick("container.id", "id"), pick("container.name", "name"),
        pick("k8s.ns.name", "namespace"), pick("k8s.pod.name", "pod_name"),
        _text(alert.output),
        json.dumps(of, ensure_ascii=False, separators=(",", ":"), default=str),
        json.dumps(list(alert.tags or ()), ensure_ascii=False, separators=(",", ":"), default=str),
        max(1, int(alert.count or 1)), _text(alert.uuid),
    )


def row_to_alert(row: dict) -> Alert:
    """Rebuild an :class:`Alert` (without ``event``) from a :meth:`AlertStore.query` row."""
    return Alert(time=row["time"], rule=row["rule"], priority=row["priority"],
                 output=row["output"], output_fields=row["output_fields"], tags=row["tags"],
                 source=row["source"], hostname=row["hostname"], count=row["count"],
                 uuid=row.get("uuid") or None)


class AlertStore:
    """SQLite alert store.  See the module docstring."""

    def __init__(self, path: str = DEFAULT_STORE_PATH, max_age_s: Optional[float] = None,
                 max_rows: Optional[int] = None, max_bytes: Optional[int] = None,
                 readonly: bool = False, synchronous: str = "FULL",
                 retention_every: int = 1000, retention_interval: float = 60.0,
                 file_mode: FileMode = PRIVATE):
        self.path = os.fspath(path)
        self.file_mode = file_mode
        self._columns = COLUMNS
        self.max_age_s = max_age_s
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.readonly = readonly
        self.retention_every = max(1, int(retention_every))
        self.retention_interval = float(retention_interval)
        self._lock = threading.RLock()
        self._since_retention = 0
        self._last_retention = time.monotonic()
        self._stats = {"added": 0, "deleted": 0, "retention_runs": 0}
        self._cursor_updates: dict = {}     # outbox cursors not written yet
        sync = str(synchronous).upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        if readonly:
            self._conn = self._open_readonly()
        else:
            self._conn = self._open_rw(sync)

    # -- opening --------------------------------------------------------------
    def _files(self) -> tuple:
        return self.path, self.path + "-wal", self.path + "-shm"

    def _open_rw(self, sync: str) -> sqlite3.Connection:
        # SQLite makes -wal and -shm with the database's mode; all three are
        # made here first (no symlink followed, the mode set) and checked after
        for p in self._files():
            refuse_symlink(p)
        # the descriptors stay open as long as the connection: closing any
        # descriptor of a file drops every POSIX lock this process holds on it,
        # SQLite's included (another process could then delete the WAL under us)
        self._fds = [open_private(p, os.O_RDWR, self.file_mode) for p in self._files()]
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            # auto_vacuum (only settable before the first table exists) gives freed
            # pages back to the file system at commit, so size retention shrinks it
            conn.execute("PRAGMA auto_vacuum=FULL")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous={sync}")
            v = conn.execute("PRAGMA user_version").fetchone()[0]
            if v > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {v} is newer than this vigil "
                                 f"({SCHEMA_VERSION})")
            if v == 1:
                self._migrate_v1(conn)
            conn.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
            if v < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            for i, p in enumerate(self._files()):
                refuse_symlink(p)
                if not os.path.exists(p):
                    continue
                if not os.path.samestat(os.fstat(self._fds[i]), os.lstat(p)):
                    # SQLite made the file anew: hold that one (and set its mode)
                    self._fds.append(open_private(p, os.O_RDONLY, self.file_mode))
                else:
                    set_mode(self._fds[i], self.file_mode)
        except BaseException:
            conn.close()
            self._close_fds()
            raise
        return conn

    def _close_fds(self) -> None:
        for fd in getattr(self, "_fds", ()):
            os.close(fd)
        self._fds = []

    @staticmethod
    def _migrate_v1(conn: sqlite3.Connection) -> None:
        """Schema 1 -> 2: ids that are never reused, a uuid for every alert."""
        conn.executescript(
            "BEGIN;"
            "ALTER TABLE alerts RENAME TO alerts_v1;"
            + _SCHEMA.split("CREATE INDEX")[0] +
            f"INSERT INTO alerts ({_V1_COLUMNS}, uuid) "
            f"SELECT {_V1_COLUMNS}, {_SQL_UUID4} FROM alerts_v1;"
            "DROP TABLE alerts_v1;"
            "COMMIT;")

    def _open_readonly(self) -> sqlite3.Connection:
        if not os.path.exists(self.path):
            raise StoreError(f"alert store {self.path} does not exist")
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            # A WAL database needs its -shm file; when no writer has it open and
            # we may not create it, the file on disk is complete: read it as is.
            try:
                conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open alert store {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open alert store {self.path}: {exc}") from None
        try:
            ok = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alerts'"
                              ).fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot read alert store {self.path}: {exc}") from None
        if not ok:
            conn.close()
            raise StoreError(f"{self.path} is not a vigil alert store (no alerts table)")
        conn.execute("PRAGMA busy_timeout=10000")
        have = {r[1] for r in conn.execute("PRAGMA table_info(alerts)")}
        # a schema-1 store (no agent has opened it since): alerts without ids
        self._columns = tuple(c if c in have else f"'' AS {c}" for c in COLUMNS)
        return conn

    @contextlib.contextmanager
    def sql(self, write: bool = False):
        """The connection, under the store's lock, for the tables other parts of
        vigil keep here (vigil.profiles); ``write``: in one committed transaction."""
        with self._lock:
            if self._conn is None:
                raise StoreError("alert store is closed")
            if not write:
                yield self._conn
                return
            if self.readonly:
                raise StoreError("alert store opened read-only")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    # -- writing ----------------------------------------------------------------
    def add(self, alert: Alert) -> int:
        """Insert and commit one alert; returns its row id."""
        return self.add_many((alert,))[-1]

    def add_many(self, alerts: Iterable[Alert]) -> list:
        """Insert and commit several alerts in one transaction; returns their row ids."""
        if self.readonly:
            raise StoreError("alert store opened read-only")
        rows = [_row_values(a) for a in alerts]
        if not rows:
            return []
        ids = []
        with self._lock:
            if self._conn is None:
                raise StoreError("alert store is closed")
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for r in rows:
                    cur.execute(_INSERT, r)
                    ids.append(cur.lastrowid)
                self._write_cursors(cur)     # no commit of their own under load
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            self._stats["added"] += len(rows)
            self._since_retention += len(rows)
            if self._since_retention >= self.retention_every:
                self.enforce_retention()
        return ids

    # -- the outbox: each output's cursor ------------------------------------------
    def cursor(self, name: str) -> int:
        """The id of the last alert output ``name`` delivered.  On the output's
        first start that is the newest alert now (it gets what comes after),
        written at once so that a crash right after loses nothing."""
        with self._lock:
            row = self._conn.execute("SELECT last_id FROM outbox WHERE name = ?",
                                     (name,)).fetchone()
            if row is not None:
                return int(row[0])
            last = self.last_id()
            self._conn.execute("INSERT INTO outbox (name, last_id, started) VALUES (?, ?, ?)",
                               (name, last, time.time_ns()))
            return last

    def advance(self, name: str, last_id: int, commit: bool = False) -> None:
        """Record that ``name`` delivered every alert up to ``last_id``: written
        with the next insert, by :meth:`flush_cursors`, or now (``commit``)."""
        with self._lock:
            self._cursor_updates[name] = int(last_id)
            if commit:
                self.flush_cursors()

    def flush_cursors(self) -> None:
        """Write the cursors advanced since the last write (one transaction)."""
        with self._lock:
            if not self._cursor_updates or self._conn is None or self.readonly:
                return
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                self._write_cursors(cur)
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise

    def _write_cursors(self, cur) -> None:
        if self._cursor_updates:
            cur.executemany("UPDATE outbox SET last_id = max(last_id, ?) WHERE name = ?",
                            [(v, k) for k, v in self._cursor_updates.items()])
            self._cursor_updates.clear()

    def cursors(self) -> dict:
        """{output name: last delivered id} as written."""
        with self._lock:
            return dict(self._conn.execute("SELECT name, last_id FROM outbox").fetchall())

    def last_id(self) -> int:
        """The id of the newest alert ever stored (0: none); ids are never reused."""
        with self._lock:
            c = self._conn
            row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'alerts'").fetchone()
            top = c.execute("SELECT max(id) FROM alerts").fetchone()[0] or 0
            return max(int(row[0]) if row else 0, int(top))

    def read_after(self, last_id: int, limit: int = 500) -> list:
        """Up to ``limit`` stored alerts with an id above ``last_id``, oldest
        first, as ``(id, Alert)`` (what retention removed is simply not there)."""
        sql = ("SELECT " + ", ".join(self._columns) + " FROM alerts WHERE id > ? "
               "ORDER BY id LIMIT ?")
        with self._lock:
            if self._conn is None:
                raise StoreError("alert store is closed")
            rows = self._conn.execute(sql, (int(last_id), int(limit))).fetchall()
        return [(d["id"], row_to_alert(d)) for d in map(_decode, rows)]

    # -- retention ----------------------------------------------------------------
    def maybe_enforce_retention(self, now: Optional[float] = None) -> int:
        """Run retention if ``retention_interval`` s passed since the last run."""
        if self.readonly:
            return 0
        now = time.monotonic() if now is None else now
        if now - self._last_retention < self.retention_interval:
            return 0
        return self.enforce_retention()

    def enforce_retention(self, now_ns: Optional[int] = None) -> int:
        """Delete alerts beyond the age, row and size limits; returns rows deleted."""
        if self.readonly:
            raise StoreError("alert store opened read-only")
        now_ns = time.time_ns() if now_ns is None else int(now_ns)
        deleted = 0
        with self._lock:
            self._since_retention = 0
            self._last_retention = time.monotonic()
            self._stats["retention_runs"] += 1
            c = self._conn
            if self.max_age_s is not None:
                cutoff = now_ns - int(self.max_age_s * 1_000_000_000)
                deleted += c.execute("DELETE FROM alerts WHERE time < ?", (cutoff,)).rowcount
            if self.max_rows is not None:
                n = c.execute("SELECT count(*) FROM alerts").fetchone()[0]
                if n > self.max_rows:
                    deleted += self._delete_oldest(n - self.max_rows)
            if self.max_bytes is not None:
                for _ in range(20):
                    used = self._used_bytes()
                    if used <= self.max_bytes:
                        break
                    n = c.execute("SELECT count(*) FROM alerts").fetchone()[0]
                    if n == 0:
                        break
                    # drop the share of rows needed to get to 90 % of the limit
                    frac = 1.0 - 0.9 * self.max_bytes / used
                    deleted += self._delete_oldest(max(1, min(n, int(n * frac) + 1)))
            if deleted:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._stats["deleted"] += deleted
        return deleted

    def _delete_oldest(self, n: int) -> int:
        return self._conn.execute(
            "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts ORDER BY time, id LIMIT ?)",
            (int(n),)).rowcount

    def _used_bytes(self) -> int:
        c = self._conn
        page = c.execute("PRAGMA page_size").fetchone()[0]
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        free = c.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * page

    # -- reading ------------------------------------------------------------------
    def query(self, since_ns: Optional[int] = None, rule: Optional[str] = None,
              min_priority: Optional[str] = None, container: Optional[str] = None,
              limit: Optional[int] = 100, until_ns: Optional[int] = None) -> list:
        """Alerts matching every given filter, newest first, as dicts.

        ``min_priority`` keeps that priority and more severe ones; ``container``
        matches a container id prefix or an exact container name.
        """
        where, args = [], []
        if since_ns is not None:
            where.append("time >= ?")
            args.append(int(since_ns))
        if until_ns is not None:
            where.append("time <= ?")
            args.append(int(until_ns))
        if rule is not None:
            where.append("rule = ?")
            args.append(rule)
        if min_priority is not None:
            p = normalize_priority(min_priority)
            if p is None:
                raise ValueError(f"unknown priority {min_priority!r}")
            where.append("priority_rank <= ?")
            args.append(priority_rank(p))
        if container is not None and container != "":
            where.append("(substr(container_id, 1, ?) = ? OR container_name = ?)")
            args += [len(container), container, container]
        sql = "SELECT " + ", ".join(self._columns) + " FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [_decode(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM alerts").fetchone()[0]

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                if not self.readonly:
                    try:
                        self.flush_cursors()
                    except sqlite3.Error:
                        pass
                    try:
                        self._conn.execute("PRAGMA optimize")
                    except sqlite3.Error:
                        pass
                self._conn.close()
                self._conn = None
                self._close_fds()

    def __enter__(self) -> "AlertStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _decode(row: tuple) -> dict:
    d = dict(zip(COLUMNS, row))
    d["output_fields"] = _loads(d["output_fields"], {})
    d["tags"] = _loads(d["tags"], [])
    return d


def _loads(s, default):
    try:
        return json.loads(s)
    except (TypeError, ValueError):
        return default
