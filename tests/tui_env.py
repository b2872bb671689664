"""A real terminal for the TUI tests: a tmux server on its own socket running one
command in a detached 200x50 session; ``screen()`` is what the terminal shows
(``capture-pane``), ``keys()`` types into it."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time

TMUX = shutil.which("tmux")


class Tmux:
    def __init__(self, argv, width: int = 200, height: int = 50, env=None):
        self.sock = f"vigil-test-{os.getpid()}-{time.monotonic_ns()}"
        self.session = "t"
        e = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
             "HOME": os.environ.get("HOME", "/root")}
        e.update(env or {})
        cmd = " ".join(shlex.quote(a) for a in argv)
        self._tmux("new-session", "-d", "-s", self.session, "-x", str(width), "-y",
                   str(height), cmd, env=e)
        self._tmux("set-option", "-t", self.session, "remain-on-exit", "on")

    def _tmux(self, *args, env=None, check=True):
        return subprocess.run([TMUX, "-L", self.sock, *args], capture_output=True, text=True,
                              env=env, check=check)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.session).stdout

    def keys(self, *keys) -> None:
        self._tmux("send-keys", "-t", self.session, *keys)

    def dead(self) -> bool:
        r = self._tmux("display-message", "-p", "-t", self.session, "#{pane_dead}",
                       check=False)
        return r.returncode != 0 or r.stdout.strip() == "1"

    def wait_for(self, check, timeout: float = 20.0) -> str:
        """Poll the screen until check(screen) holds; returns the last screen."""
        deadline = time.monotonic() + timeout
        s = ""
        while time.monotonic() < deadline:
            s = self.screen()
            if check(s):
                return s
            time.sleep(0.2)
        return s

    def close(self) -> None:
        self._tmux("kill-server", check=False)
