"""Capture files: the decoded event stream, recorded so rules can run on it
offline with the same results as live.

Format: JSON lines (gzip when the name ends in .gz).
  {"vigil_capture": 1, "version": ..., "started": ns, "procs": [...]}   header
  {"c": {...container...}}      a container as known when first used (or updated)
  {"e": {...event...}, "c": id} an event and the id of its container
The header holds the process table as it was when capture started, so
ancestry of processes older than the capture resolves in replay too.
A capture holds what the node did (command lines, paths): it is created
0600, its directory 0700, never through a symlink (:mod:`vigil.safe_files`).
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import time
from typing import IO, Iterator, Optional

from vigil import __version__
from vigil.state.containers.model import ContainerInfo
from vigil.events import Event
from vigil.state.proctable import ProcessTable
from vigil.safe_files import open_private

FORMAT = 1

log = logging.getLogger("vigil.events.capture")


class CaptureError(ValueError):
    pass


def _open(path: str, mode: str) -> IO:
    if path.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def _create(path: str) -> IO:
    """A new capture file (text; gzip for .gz), 0600, never through a symlink."""
    try:
        fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as e:
        raise CaptureError(f"cannot write capture {path}: {e.strerror or e}") from None
    raw = os.fdopen(fd, "wb")
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw, mode="wb"), encoding="utf-8")
    return io.TextIOWrapper(raw, encoding="utf-8")


class CaptureWriter:
    """A pipeline handler that records every event it sees.  The file is
    made at once (CaptureError if it cannot be); the header is written with
    the process table given here or, later, to :meth:`begin`."""

    def __init__(self, path: str, proctable: Optional[ProcessTable] = None):
        self.path = os.fspath(path)
        self.f = _create(self.path)
        self._containers: dict = {}
        self.count = 0
        if proctable is not None:
            self.begin(proctable)

    def begin(self, proctable: ProcessTable) -> None:
        self.f.write(json.dumps({"vigil_capture": FORMAT, "version": __version__,
                                 "started": time.time_ns(), "procs": proctable.snapshot()}) + "\n")

    def __call__(self, ev: Event) -> None:
        c = ev.container
        cid = None
        if c is not None:
            cid = c.id
            if self._containers.get(cid) is not c:
                self._containers[cid] = c
                self.f.write(json.dumps({"c": c.to_dict()}) + "\n")
        self.f.write(json.dumps({"e": ev.to_dict(with_context=False), "c": cid}) + "\n")
        self.count += 1

    def close(self) -> None:
        if self.f is not None:
            f, self.f = self.f, None
            if isinstance(f, io.TextIOWrapper) and isinstance(f.buffer, gzip.GzipFile):
                raw = f.buffer.fileobj
                f.close()           # closes the gzip stream, not the file under it
                raw.close()
            else:
                f.close()


class ReplayContainers:
    """Stands in for the container resolver: what the capture recorded."""

    def __init__(self):
        self.by_id: dict = {}

    def resolve_recorded(self, cid: Optional[str]) -> Optional[ContainerInfo]:
        if cid is None:
            return None
        return self.by_id.get(cid)


# the header every event has; live they are ints from the decoder, a file may say anything
_INT_FIELDS = ("time", "pid", "tid", "ppid", "uid", "gid", "cgroup_id")


def _event(d) -> Event:
    if not isinstance(d, dict):
        raise ValueError("event is not a JSON object")
    for k in _INT_FIELDS:
        v = d.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise ValueError(f"event field {k!r} is not an integer: {v!r}")
    return Event.from_dict(d)


def read_capture(path: str):
    """(header, iterator of (Event, container id or None), ReplayContainers)."""
    try:
        f = _open(path, "r")
        first = f.readline()
        header = json.loads(first) if first else None
    except (OSError, ValueError, EOFError) as e:
        raise CaptureError(f"{path}: cannot read capture: {e}") from None
    if not isinstance(header, dict) or header.get("vigil_capture") != FORMAT:
        f.close()
        raise CaptureError(f"{path}:1: not a vigil capture file (format {FORMAT})")
    containers = ReplayContainers()

    def events() -> Iterator:
        lineno = 1
        try:
            for line in f:
                lineno += 1
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise ValueError("not a JSON object")
                    if "e" in rec:
                        yield _event(rec["e"]), rec.get("c")
                    elif "c" in rec:
                        info = ContainerInfo.from_dict(rec["c"])
                        containers.by_id[info.id] = info
                except (ValueError, KeyError, TypeError) as e:
                    raise CaptureError(f"{path}:{lineno}: bad record: {e}") from None
        except EOFError:
            # a capture cut short (agent killed) still replays what it has
            log.warning("%s: capture ends early (cut short?) after line %d", path, lineno)
            return
        except OSError as e:        # e.g. corrupt gzip data
            raise CaptureError(f"{path}:{lineno}: cannot read capture: {e}") from None
        finally:
            f.close()

    return header, events(), containers


def replay(path: str, pipeline) -> int:
    """Feed a capture through a pipeline (seeded from the capture's process
    table); returns the number of events."""
    header, events, containers = read_capture(path)
    try:
        pipeline.proctable.load_snapshot(header.get("procs") or [])
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        events.close()
        raise CaptureError(f"{path}:1: bad process table in the header: {e!r}") from None
    n = 0
    for ev, cid in events:
        ev.container = containers.resolve_recorded(cid)
        pipeline.process(ev)
        n += 1
    return n
