"""Profiles in the embedded store (tables ``profiles``, ``profile_requests``,
``profile_settings`` of vigil.alerts.store, schema 3).

The agent owns the profiles while it runs: it loads them at start, keeps them
in memory and writes the changed ones every few seconds and at exit.  The
command line never edits a profile under a running agent: ``vigil profiles
lock|reset|learn|import`` leave a *request*, which the agent applies at its
next tick (and deletes).  With no agent running (its heartbeat in
``profile_settings`` older than ``HEARTBEAT_STALE``) the command line applies
the request itself.  Either side claims a request by deleting its row in the
transaction that applies it, so it is applied once.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Optional

from vigil.alerts.store import AlertStore, StoreError
from vigil.profiles.profile import LOCKED, Profile

HEARTBEAT_STALE = 10.0      # s: an agent heartbeat older than this is no agent
ACTIONS = ("lock", "reset", "learn", "import")


class ProfileBook:
    """The profile tables of one store file."""

    def __init__(self, path: str, readonly: bool = False, store: Optional[AlertStore] = None):
        """``store``: the agent's own AlertStore of that file, shared (a second
        one in the same process would drop the first one's POSIX locks on the
        file when it closes its descriptors)."""
        self.shared = store is not None
        try:
            self.store = store if store is not None else AlertStore(path, readonly=readonly)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the profile store {path}: {e}") from None
        self.path = path
        if readonly:
            with self.store.sql() as c:
                ok = c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                               "name='profiles'").fetchone()
            if not ok:
                self.store.close()
                raise StoreError(f"{path} holds no profiles (no agent with profiles enabled "
                                 "has used it)")

    def close(self) -> None:
        if not self.shared:
            self.store.close()

    # --- profiles ---

    def load_all(self) -> dict:
        with self.store.sql() as c:
            rows = c.execute("SELECT workload, doc FROM profiles").fetchall()
        out = {}
        for key, doc in rows:
            try:
                out[key] = Profile.from_dict(json.loads(doc))
            except (ValueError, KeyError, TypeError) as e:
                raise StoreError(f"{self.path}: profile {key!r} cannot be read: {e}") from None
        return out

    def save(self, profiles) -> int:
        """Write the given profiles (one transaction); returns how many."""
        rows = [(p.workload, p.status, json.dumps(p.to_dict(), separators=(",", ":")),
                 time.time_ns()) for p in profiles]
        if rows:
            with self.store.sql(write=True) as c:
                c.executemany("INSERT OR REPLACE INTO profiles (workload, status, doc, updated) "
                              "VALUES (?, ?, ?, ?)", rows)
        for p in profiles:
            p.dirty = False
        return len(rows)

    def delete(self, keys) -> None:
        keys = list(keys)
        if keys:
            with self.store.sql(write=True) as c:
                c.executemany("DELETE FROM profiles WHERE workload = ?", [(k,) for k in keys])

    def summary(self) -> list:
        """(workload, status, doc dict) of every profile, by workload."""
        with self.store.sql() as c:
            rows = c.execute("SELECT workload, status, doc FROM profiles ORDER BY workload")
            return [(k, s, json.loads(d)) for k, s, d in rows.fetchall()]

    # --- settings ---

    def setting(self, name: str, default=None):
        with self.store.sql() as c:
            row = c.execute("SELECT value FROM profile_settings WHERE name = ?",
                            (name,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, name: str, value) -> None:
        with self.store.sql(write=True) as c:
            c.execute("INSERT OR REPLACE INTO profile_settings (name, value) VALUES (?, ?)",
                      (name, json.dumps(value)))

    def heartbeat(self) -> None:
        self.set_setting("agent", {"pid": os.getpid(), "time": time.time()})

    def agent_alive(self) -> bool:
        hb = self.setting("agent") or {}
        if time.time() - float(hb.get("time", 0)) > HEARTBEAT_STALE:
            return False
        try:
            os.kill(int(hb.get("pid", 0)), 0)
        except (OSError, ValueError):
            return False
        return True

    # --- requests ---

    def request(self, action: str, workload: str = "", arg="") -> int:
        if action not in ACTIONS:
            raise ValueError(f"unknown profile request {action!r}")
        with self.store.sql(write=True) as c:
            cur = c.execute("INSERT INTO profile_requests (time, action, workload, arg) "
                            "VALUES (?, ?, ?, ?)", (time.time_ns(), action, workload,
                                                    json.dumps(arg)))
            return cur.lastrowid

    def pending(self, request_id: int) -> bool:
        with self.store.sql() as c:
            return c.execute("SELECT 1 FROM profile_requests WHERE id = ?",
                             (request_id,)).fetchone() is not None

    def take_requests(self) -> list:
        """Claim every pending request (deleted in the transaction that reads
        it, so one side applies it once): [(action, workload, arg)], oldest first."""
        with self.store.sql(write=True) as c:
            rows = c.execute("SELECT id, action, workload, arg FROM profile_requests "
                             "ORDER BY id").fetchall()
            c.executemany("DELETE FROM profile_requests WHERE id = ?", [(r[0],) for r in rows])
        return [(a, w, json.loads(x or '""')) for _i, a, w, x in rows]


def apply_request(profiles: dict, action: str, workload: str, arg, now_ns: int,
                  settings: dict) -> tuple:
    """One request on a dict of profiles (the agent's, or the command line's
    when no agent runs).  ``settings`` is updated for a learning window given
    to every profile.  Returns (message, keys removed)."""
    chosen = [profiles[workload]] if workload in profiles else \
        (list(profiles.values()) if not workload else [])
    if workload and not chosen and action != "import":
        return f"no profile {workload!r}", ()
    if action == "lock":
        for p in chosen:
            if p.status != LOCKED:
                p.lock(now_ns, "locked by vigil profiles lock")
        return f"locked {len(chosen)} profile(s)", ()
    if action == "reset":
        keys = [p.workload for p in chosen]
        for k in keys:
            del profiles[k]
        return f"reset {len(keys)} profile(s): they learn again from their next event", keys
    if action == "learn":
        window = float(arg)
        if not workload:
            settings["window"] = window
        for p in chosen:
            if not workload and p.status == LOCKED:
                p.window = window      # every profile: only the ones learning change now
                p.dirty = True
                continue
            if p.status == LOCKED:
                p.relearn(now_ns, window)
            else:
                p.window = window
                p.dirty = True
        return f"learning window {window:g}s for {len(chosen)} profile(s)" + \
            ("" if workload else " and every new one"), ()
    if action == "import":
        n = 0
        for d in arg:
            new = Profile.from_dict(d)
            old = profiles.get(new.workload)
            if old is None:
                profiles[new.workload] = new
            else:
                old.merge(new)
                if new.status == LOCKED and old.status != LOCKED:
                    old.lock(now_ns, "locked by import")
            profiles[new.workload].dirty = True
            n += 1
        return f"imported {n} profile(s)", ()
    return f"unknown request {action!r}", ()


def default_book_path(cfg) -> str:
    from vigil.alerts.store import DEFAULT_STORE_PATH
    return (cfg["profiles"].get("store") or (cfg.get("store") or {}).get("path")
            or DEFAULT_STORE_PATH)


__all__ = ["ProfileBook", "apply_request", "default_book_path", "HEARTBEAT_STALE"]
