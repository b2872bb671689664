"""A program the verifier refuses is one disabled program, not a failed agent.

fsops.bpf.c carries a test-only program (built only with -DVIGIL_TEST_BROKEN, as
`make test-kernels BROKEN=1` does) that the verifier must refuse.  Built here into a private
object directory beside copies of the normal objects: the sensors load, that one program is
disabled with the kernel's reason, every other chmod program works and `vigil run` starts.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import BPF_BUILD, BPF_SRC, VIGIL
from vigil.events import Kind

BROKEN = "chmod__broken_for_tests"


@pytest.fixture(scope="module")
def broken_dir(bpf_objects, tmp_path_factory):
    d = tmp_path_factory.mktemp("broken-objs")
    shutil.copytree(BPF_BUILD, d, dirs_exist_ok=True)
    r = subprocess.run(["clang", "-target", "bpf", "-g", "-O2", "-D__TARGET_ARCH_x86", "-Wall",
                        "-Werror", f"-I{BPF_SRC}", "-DVIGIL_TEST_BROKEN", "-c",
                        str(BPF_SRC / "fsops.bpf.c"), "-o", str(d / "fsops.bpf.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return d


def test_normal_objects_have_no_broken_program(bpf_objects):
    from vigil.kernel import libbpf
    obj = libbpf.BpfObject(str(bpf_objects / "fsops.bpf.o"))
    try:
        assert BROKEN not in [p.name for p in obj.programs()]
    finally:
        obj.close()


def test_broken_program_is_disabled_alone(broken_dir, start_pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_BPF_DIR", str(broken_dir))
    c = start_pipeline({Kind.CHMOD, Kind.MKDIR})
    progs = {p.name: p for p in c.sensors.report.programs}
    bad = progs[BROKEN]
    assert not bad.attached and bad.error.startswith("refused by the kernel")
    others = [p for p in progs.values() if p.name != BROKEN]
    assert others and all(p.attached and not p.error for p in others)
    # chmod is still seen, through chmod(2)'s programs (a child: our own pid is ignored)
    f = tmp_path / "f"
    f.write_text("x")
    subprocess.run([sys.executable, "-c", f"import os; os.chmod({str(f)!r}, 0o604)"], check=True)
    e = c.wait_for(lambda e: e.kind == Kind.CHMOD and e.path == str(f), timeout=10)[0]
    assert e.mode == 0o604 and e.ret == 0
    c.stop()


def test_agent_runs_with_the_broken_program(broken_dir, tmp_path):
    err = tmp_path / "err"
    env = dict(os.environ, VIGIL_BPF_DIR=str(broken_dir))
    rules = tmp_path / "r.yaml"
    rules.write_text("- rule: chmod seen\n  desc: d\n  condition: evt.type = chmod and "
                     "fs.path.name startswith /nonexistent-km\n  output: x %fs.path.name\n"
                     "  priority: DEBUG\n")
    with open(err, "wb") as fe:
        p = subprocess.Popen([VIGIL, "run", "--no-store", "-r", str(rules)], stdout=subprocess.DEVNULL,
                             stderr=fe, env=env)
    try:
        deadline = time.monotonic() + 60
        while b"running with" not in err.read_bytes() and p.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        text = err.read_text()
        assert p.poll() is None and "running with" in text, text
        assert f"fsops/{BROKEN}" in text and "refused by the kernel" in text
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)
