"""Shared helpers for vigil's benchmarks: building the C load generator,
machine facts, and writing results (JSON + markdown) to bench/results/."""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
BUILD = BENCH / ".build"          # compiled load generator (ignored by git)

sys.path.insert(0, str(ROOT / "src"))


def loadgen() -> str:
    """Compile bench/loadgen.c (if newer than the binary) and return its path."""
    src = BENCH / "loadgen.c"
    out = BUILD / "loadgen"
    BUILD.mkdir(exist_ok=True)
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(src)], check=True)
    return str(out)


def parse_loadgen(text: str):
    """(ops, elapsed seconds) from loadgen's one-line output."""
    ops, ns = text.split()[:2]
    return int(ops), int(ns) / 1e9


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    osname = ""
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "os": osname,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_mb": mem,
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git": _git_rev(),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def command_line() -> str:
    """The command that reproduces this run (from the repository root)."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join([".venv/bin/python", script] + [shlex.quote(a) for a in sys.argv[1:]])


def write_results(name: str, data: dict, markdown: str) -> tuple:
    RESULTS.mkdir(parents=True, exist_ok=True)
    j = RESULTS / f"{name}.json"
    m = RESULTS / f"{name}.md"
    j.write_text(json.dumps(data, indent=2, default=str) + "\n")
    m.write_text(markdown)
    return j, m


def md_table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out) + "\n"


def text_table(headers, rows) -> str:
    rows = [[str(c) for c in r] for r in rows]
    w = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
         for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w[i]) for i, h in enumerate(headers)),
             "  ".join("-" * x for x in w)]
    for r in rows:
        lines.append("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    return "\n".join(lines)


def which(name: str, extra=()) -> str | None:
    p = shutil.which(name)
    if p:
        return p
    for d in extra:
        c = Path(d) / name
        if c.exists():
            return str(c)
    return None


def need_root() -> None:
    if os.geteuid() != 0:
        sys.exit("the benchmarks load BPF programs: run them as root")
