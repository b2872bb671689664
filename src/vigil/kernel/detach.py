"""Detaching tracepoint programs without waiting for the kernel.

Two waits make detaching slow, ~35 ms each per program on this kernel (the
default rules' 48 programs took 3 s, so an idle SIGTERM took seconds):

* closing a program's BPF link waits for an RCU grace period (syscall
  tracepoints may fault, so the kernel waits for tasks-trace RCU).  Waiters
  share grace periods: :func:`detach_all` closes the links from parallel
  threads, and 67 links go in ~65 ms;
* releasing the tracepoint perf event left behind waits again, one
  tracepoint at a time under a kernel mutex.  :func:`release_later` hands the
  last references of those perf events to a short-lived helper process that
  releases them as it exits, while vigil goes on (or exits) at once.  Nothing
  runs on them meanwhile: their programs are detached and they are disabled.

The links are gone from the kernel when detach_all returns.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("vigil.kernel.detach")

# the helper waits for its stdin to close, i.e. until we let go of our copies
_HELPER = [sys.executable, "-S", "-E", "-c", "import sys; sys.stdin.buffer.read()"]
_helpers: list = []      # started helpers, reaped when they are done


MAX_THREADS = 64


def detach_all(links: list) -> list:
    """Destroy every link (vigil.kernel.libbpf.Link) at once; their
    ``destroy()`` results (perf event fds to release, or None), in order."""
    if len(links) <= 1:
        return [link.destroy() for link in links]
    with ThreadPoolExecutor(min(MAX_THREADS, len(links)),
                            thread_name_prefix="vigil-detach") as pool:
        return list(pool.map(lambda link: link.destroy(), links))


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
