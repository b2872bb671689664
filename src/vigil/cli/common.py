"""What every command shares: logging, the one-line error exit, the stop
signals, starting the sensors, and the options several commands take."""
from __future__ import annotations

import errno
import logging
import os
import re
import signal
import sys

import click

from vigil.config.units import parse_duration, parse_size
from vigil.kernel.environment import EnvironmentProblem
from vigil.kernel.libbpf import BpfError


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="vigil: %(levelname)s %(name)s: %(message)s")


def fail(msg: str, code: int = 2):
    click.echo(f"vigil: error: {msg}", err=True)
    sys.exit(code)


# the BPF maps whose size a setting gives, and that setting
MAP_KEYS = {"events": "sensors.ringbuf_size"}


def kernel_problem(e: Exception, cfg=None) -> str:
    """The one line for a machine that cannot run the sensors; a map the
    kernel would not create is named with the setting that sizes it."""
    if not isinstance(e, BpfError):
        return str(e)
    line = f"{e}{': ' + e.details if e.details else ''}"
    m = re.search(r"map '([^']+)': failed to create", e.details or "")
    if m:
        name = m.group(1)
        key = MAP_KEYS.get(name)
        if key is None:
            return f"the kernel would not create BPF map {name!r}: {os.strerror(e.errno)} ({line})"
        val = ""
        if cfg is not None:
            section, _, k = key.partition(".")
            v = cfg[section].get(k)
            val = f" = {v:,} bytes" if isinstance(v, int) else f" = {v}"
        return (f"{key}{val}: the kernel would not create the ring buffer "
                f"({os.strerror(e.errno)}); try a smaller size ({line})")
    if e.errno in (errno.ENOMEM, errno.E2BIG) and cfg is not None:
        # the maps are made with the first object loaded; the ring is the big one
        return (f"{line} (the kernel could not allocate the sensors' maps: is "
                f"sensors.ringbuf_size = {cfg['sensors']['ringbuf_size']:,} bytes too large?)")
    return line


KERNEL_ERRORS = (EnvironmentProblem, BpfError)


def install_signals(target) -> None:
    """Ctrl-C and SIGTERM ask target to stop (its request_stop); the caller
    detaches everything."""
    def _stop(signum, frame):
        target.request_stop()
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)


def exit_at_once(code: int = 0) -> None:
    """End the process now that everything is closed and flushed: skip the
    interpreter's teardown (freeing every object of the process table, the
    rules, the caches took a second under load, which a stop must not).
    Only for the real process, not when a test runs the command in-process
    (stdout replaced)."""
    if sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__:
        return
    logging.shutdown()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def start_or_fail(pipeline, cleanup=()) -> None:
    """Install the stop signals, then load and attach; an unfit machine ends
    the command with one line (exit 2) after running cleanup callables."""
    install_signals(pipeline)   # before start: Ctrl-C while loading stops cleanly
    try:
        pipeline.start()
        return
    except KERNEL_ERRORS as e:
        msg = kernel_problem(e)
    for fn in cleanup:
        fn()
    fail(msg)


class Duration(click.ParamType):
    """A duration as vigil.yaml writes it (30, 1.5s, 250ms, 10m, 1h), in
    seconds, optionally at most ``maximum``."""
    name = "duration"

    def __init__(self, maximum: float | None = None):
        self.maximum = maximum

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            secs = parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if self.maximum is not None and secs > self.maximum:
            self.fail(f"{value!r} is more than {self.maximum:g}s", param, ctx)
        return secs


class Size(click.ParamType):
    """A size as vigil.yaml writes it (4096, 64KiB, 4MiB), in bytes (at least 1)."""
    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            n = parse_size(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if n < 1:
            self.fail(f"{value!r} is less than 1 byte", param, ctx)
        return n


def duration_option(fn):
    return click.option("--duration", type=Duration(), default=None,
                        help="Stop after this long (seconds, or 10s, 1m, 1h).")(fn)


def verbose_option(help: str = "More logging on stderr (-vv for debug)."):
    return click.option("-v", "--verbose", count=True, help=help)


__all__ = ["setup_logging", "fail", "kernel_problem", "KERNEL_ERRORS", "install_signals",
           "start_or_fail", "Duration", "Size", "duration_option", "verbose_option"]
