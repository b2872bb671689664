"""What every command shares: logging, the one-line error exit, the stop
signals, starting the sensors, and the options several commands take."""
from __future__ import annotations

import logging
import os
import signal
import sys

import click

from vigil.config.units import parse_duration
from vigil.kernel.environment import EnvironmentProblem
from vigil.kernel.libbpf import BpfError


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="vigil: %(levelname)s %(name)s: %(message)s")


def fail(msg: str, code: int = 2):
    click.echo(f"vigil: error: {msg}", err=True)
    sys.exit(code)


def kernel_problem(e: Exception) -> str:
    """The one line for a machine that cannot run the sensors."""
    if isinstance(e, BpfError):
        return f"{e}{': ' + e.details if e.details else ''}"
    return str(e)


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


def duration_option(fn):
    return click.option("--duration", type=Duration(), default=None,
                        help="Stop after this long (seconds, or 10s, 1m, 1h).")(fn)


def verbose_option(help: str = "More logging on stderr (-vv for debug)."):
    return click.option("-v", "--verbose", count=True, help=help)


__all__ = ["setup_logging", "fail", "kernel_problem", "KERNEL_ERRORS", "install_signals",
           "start_or_fail", "Duration", "duration_option", "verbose_option"]
