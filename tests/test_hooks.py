"""Optional hooks: used where this kernel takes them, refused cleanly where it
does not, the same events either way.  On this host (no fentry) the file
sensor's open__identity program is refused at load with one info line and
the tracepoint programs serve; on a kernel with fentry (make test-kernels) it
is attached and the events carry the same fields."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest

from vigil.events import Kind
from vigil.kernel.filters import OPEN_WANT_ALL


def fentry_file_available() -> bool:
    from vigil.kernel.environment import tracefs_path
    from vigil.kernel.probe import HOOKS, probe_hook
    hook = next(h for h in HOOKS if h.name == "fentry_file")
    return probe_hook(hook, tracefs_path(), None).available


@pytest.fixture(scope="module")
def opened(start_pipeline, tmp_path_factory):
    from test_enforce_file import identity_dir
    d, made = identity_dir(tmp_path_factory, "hooks")
    (d / "secret").write_text("s")
    (d / "other").write_text("o")
    yield d
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)


def test_file_identity_takes_the_best_hook_and_gives_the_same_event(start_pipeline, opened,
                                                                    caplog):
    d = opened
    with caplog.at_level(logging.INFO, logger="vigil.kernel.sensors"):
        c = start_pipeline({Kind.OPEN}, open_prefixes={str(d) + "/": OPEN_WANT_ALL})
    try:
        st = {p.name: p for p in c.sensors.report.programs}
        ident = st["open__identity"]
        have = fentry_file_available()
        assert ident.optional and ident.attached is have, ident
        assert st["open__exit_openat"].attached
        notes = [r.getMessage() for r in caplog.records if "open__identity" in r.getMessage()]
        if have:
            assert not ident.error and notes == []
        else:
            # one line, at info: nothing is lost, the tracepoints serve
            assert ident.error.startswith("load refused"), ident
            assert len(notes) == 1 and "not used" in notes[0], notes
            assert all(r.levelno == logging.INFO for r in caplog.records
                       if "open__identity" in r.getMessage())
        code = (f"import os\nfd = os.open({str(d / 'secret')!r}, os.O_RDONLY)\n"
                f"os.dup2(os.open({str(d / 'other')!r}, os.O_RDONLY), fd)\nprint(os.getpid())")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        pid = int(p.stdout.split()[-1])
        evs = c.wait_for(lambda e: e.kind == Kind.OPEN and e.pid == pid
                         and e.path == str(d / "secret"), timeout=10)
        s = os.stat(d / "secret")
        e = evs[0]
        assert (e.dev, e.ino) == (s.st_dev, s.st_ino)
        assert e.ret >= 0 and e.syscall == "openat"
    finally:
        c.stop()
