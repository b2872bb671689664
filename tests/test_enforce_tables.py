"""The enforcement tables in the kernel: the ctypes mirrors against the
objects' BTF, and through the real hooks (this test process is a host
process): a reload never leaves a moment unenforced, vigil itself is never
judged, a protected process name is never killed."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading

import pytest

from conftest import BPF_SRC
from test_structs import btf_structs, compare
from vigil.enforce import events as E
from vigil.enforce.compiler import Compiler, PolicyIndex
from vigil.enforce.loader import load_policies
from vigil.enforce.model import HOST_WORKLOAD
from vigil.enforce.tables import MIRRORS, Tables

pytestmark = pytest.mark.usefixtures("bpf_objects")

HOST_DENY = """
apiVersion: vigil.dev/v1
kind: VigilPolicy
metadata: {{name: {name}}}
spec:
  selector: {{host: true}}
  egress:
    deny: [{{cidr: 127.0.0.1/32, ports: ["{port}"]}}]
  exec:
    deny: [{exec}]
"""


@pytest.fixture(scope="module")
def btf(bpf_objects):
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    return {s: btf_structs(bpf_objects / f"{s}.bpf.o") for s in ("enforce_net", "enforce_exec")}


@pytest.mark.parametrize("sensor", ["enforce_net", "enforce_exec"])
def test_mirrors_match_the_c_layouts(btf, sensor):
    diffs = [d for name, cls in MIRRORS.items() for d in compare(btf[sensor], name, cls)]
    assert diffs == []


def test_verdict_enums_match(btf):
    enums = btf["enforce_net"]["enums"]
    assert {f"ENF_{v.upper()}": k for k, v in E.VERDICTS.items()} == enums["enf_verdict"]
    assert {f"ENF_{v.upper()}": k for k, v in E.DIRECTIONS.items()} == enums["enf_dir"]
    assert "ENF_RANGES 16" in (BPF_SRC / "enforce.h").read_text()


@pytest.fixture(scope="module")
def kernel(bpf_objects):
    from vigil.enforce.kernel import EnforceKernel
    from vigil.kernel.sensors import SensorManager
    sm = SensorManager(set()).start()
    ek = EnforceKernel(sm.maps).start()
    yield ek
    ek.stop()
    sm.stop()


def host_sets(tmp_path, name, port, exec_="{name: vigil-nothing}"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(HOST_DENY.format(name=name, port=port, exec=exec_))
    return Compiler(load_policies([str(p)]), [HOST_WORKLOAD], PolicyIndex()).compile()["host"]


def connect_errno(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        return 0
    except OSError as e:
        return e.errno
    finally:
        s.close()


def test_reloads_switch_without_an_unenforced_moment(kernel, tmp_path):
    t = Tables(kernel.maps)
    port = 9
    a, b = host_sets(tmp_path, "a", port), host_sets(tmp_path, "b", port)
    t.replace_all({}, a)
    results, stop = [], threading.Event()

    def loop():
        while not stop.is_set():
            results.append(connect_errno(port))
    th = threading.Thread(target=loop)
    th.start()
    try:
        for i in range(200):
            t.replace_all({}, b if i % 2 == 0 else a)
    finally:
        stop.set()
        th.join()
        t.replace_all({}, (None, None))
    assert results and set(results) == {1}, set(results)     # EPERM every time
    assert connect_errno(port) == 111                         # refused: nothing enforced


def test_vigil_itself_is_never_judged(kernel, tmp_path):
    t = Tables(kernel.maps)
    t.replace_all({}, host_sets(tmp_path, "v", 9))
    try:
        t.set_vigil(os.getpid())
        assert connect_errno(9) == 111
        child = subprocess.run(["python3", "-c", "import socket,sys\ns=socket.socket()\n"
                                "try: s.connect(('127.0.0.1', 9))\nexcept OSError as e: "
                                "sys.exit(e.errno)"])
        assert child.returncode == 1
    finally:
        t.set_vigil(0)
        t.replace_all({}, (None, None))


def test_protected_names_are_never_killed(kernel, tmp_path):
    t = Tables(kernel.maps)
    t.replace_all({}, host_sets(tmp_path, "k", 9, exec_="{name: sleep}"))
    try:
        t.set_protected(())
        assert subprocess.run(["sleep", "0"]).returncode == -9
        t.set_protected(("sleep",))
        assert subprocess.run(["sleep", "0"]).returncode == 0
    finally:
        t.set_protected(())
        t.replace_all({}, (None, None))
    assert subprocess.run(["sleep", "0"]).returncode == 0
