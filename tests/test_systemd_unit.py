"""deploy/systemd/vigil.service: systemd accepts it (`systemd-analyze verify`), and its
hardening keeps what BPF needs: the capabilities vigil doctor asks for, /sys writable
where the agent writes (tracefs, bpffs), other processes visible."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "vigil.service"
VIGIL = str(Path(sys.executable).parent / "vigil")


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(UNIT.read_text())
    return cp


def test_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze not installed")
    # the unit names the installed binary; here it is the venv's
    f = tmp_path / "vigil.service"
    f.write_text(UNIT.read_text().replace("/usr/local/bin/vigil", VIGIL))
    r = subprocess.run([tool, "verify", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_hardening_leaves_bpf_working():
    s = unit()["Service"]
    caps = set(s["CapabilityBoundingSet"].split())
    assert {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_NET_ADMIN"} <= caps
    assert "CAP_SYS_RESOURCE" not in caps and "LimitMEMLOCK" not in s
    for off in ("PrivateDevices", "ProtectKernelTunables", "ProtectControlGroups",
                "ProtectProc", "SystemCallFilter", "PrivatePIDs"):
        assert off not in s, off
    assert {"/sys/kernel/tracing", "/sys/fs/bpf", "/var/lib/vigil"} <= set(s["ReadWritePaths"].split())
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["ExecStart"].split()[:2] == ["/usr/local/bin/vigil", "run"]
