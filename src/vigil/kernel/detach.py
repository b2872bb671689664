"""Detaching tracepoint programs without waiting for the kernel.

Closing the last reference to a tracepoint perf event unregisters the
tracepoint, which waits for RCU grace periods one tracepoint at a time
(~75 ms each here: the default rules' 48 programs took 3 s to detach, so an
idle SIGTERM took seconds).  Closing a program's BPF link is immediate and
detaches the program (the link is gone from the kernel); only the release of
the bare perf event left behind waits.  So :func:`release_later` hands the
last references of those perf events to a short-lived helper process that
releases them as it exits, while vigil goes on (or exits) at once.  Nothing
runs on them meanwhile: their programs are detached and they are disabled.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger("vigil.kernel.detach")

# the helper waits for its stdin to close, i.e. until we let go of our copies
_HELPER = [sys.executable, "-S", "-E", "-c", "import sys; sys.stdin.buffer.read()"]
_helpers: list = []      # started helpers, reaped when they are done


def _reap() -> None:
    _helpers[:] = [p for p in _helpers if p.poll() is None]


def release_later(fds: list) -> None:
    """Close ``fds`` (perf event fds whose programs are detached) without
    waiting for the kernel to release them; falls back to closing them here."""
    if not fds:
        return
    _reap()
    helper = None
    try:
        helper = subprocess.Popen(_HELPER, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, pass_fds=fds, close_fds=True)
    except OSError as e:
        log.debug("no helper to release %d perf events (%s): releasing them here", len(fds), e)
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    if helper is not None:
        helper.stdin.close()          # the helper exits, and the kernel releases them there
        _helpers.append(helper)
