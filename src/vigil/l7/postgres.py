"""PostgreSQL (protocol 3): the queries of a frontend chunk (simple Query,
extended Parse/Bind/Execute up to Sync) and the answers of a backend chunk
(each ends with ReadyForQuery; an ErrorResponse before it makes it an error)."""
from __future__ import annotations

import struct

_LEN = struct.Struct(">I")
_FRONT = frozenset(b"QPBDEFSHCcdfpX")


def _messages(data: bytes):
    """(type byte, complete) of each message in data; the last may be cut."""
    i, n = 0, len(data)
    while i + 5 <= n:
        t = data[i]
        size = _LEN.unpack_from(data, i + 1)[0]
        if size < 4:
            return
        end = i + 1 + size
        yield t, end <= n
        if end > n:
            return
        i = end
    if i < n:
        yield data[i], False


def units(data: bytes) -> list:
    """One entry per request unit in a frontend chunk -- what one
    ReadyForQuery answers: True for a query (a simple Query, or an extended
    batch with an Execute), False for a unit that runs nothing (Parse/Describe
    only).  A batch the capture cuts before its Sync counts as one, a query
    if it began with Parse or Bind."""
    out = []
    batch = None          # None: outside an extended batch; else "has Execute"
    for t, complete in _messages(data):
        if t not in _FRONT:
            break
        if t == ord("Q"):
            out.append(True)
        elif t == ord("S"):
            out.append(bool(batch))
            batch = None
        elif t in (ord("P"), ord("B"), ord("D"), ord("E"), ord("C"), ord("H"), ord("F")):
            if batch is None:
                batch = False
            if t == ord("E") or (not complete and t in (ord("P"), ord("B"))):
                batch = True
        if not complete:
            break
    if batch is not None:
        out.append(batch)
    return out


def answers(data: bytes) -> list:
    """One bool per unit answered in a backend chunk (True: an error): every
    ReadyForQuery ends one; a chunk with none (a long result cut by the
    capture or the read) answers the first unit still waiting."""
    out = []
    error = False
    for t, _complete in _messages(data):
        if t == ord("E"):
            error = True
        elif t == ord("Z"):
            out.append(error)
            error = False
    if not out:
        out.append(error)
    return out
