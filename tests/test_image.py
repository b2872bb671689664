"""The image: `make image` builds it from a clean build cache (on a Debian base made
locally from Debian packages), the wheel carries the compiled CO-RE objects, and the
image runs the agent under podman with the DaemonSet's host namespaces, mounts,
capabilities and env: an exec on the host is an alert whose JSON comes out of the
container's stdout."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from image_env import ROOT, build_image, daemonset_run_args, one, rendered
from podman_env import podman

sys.path.insert(0, str(Path(__file__).parent / "data" / "e2e"))
from e2e_harness import wait_until  # noqa: E402


def test_wheel_carries_the_compiled_objects(tmp_path, bpf_objects):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = tmp_path.glob("vigil-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    built = sorted(p.name for p in bpf_objects.glob("*.o"))
    assert "probes.o" in built and len(built) >= 10
    for name in built:
        assert f"vigil/kernel/bpf/build/{name}" in names
    assert "vigil/rules/default/vigil_rules.yaml" in names


@pytest.mark.slow
def test_make_image_builds_from_clean():
    image, secs = build_image()
    r = podman("image", "inspect", image, "--format", "{{json .Config}}")
    assert r.returncode == 0, r.stderr
    conf = json.loads(r.stdout)
    assert conf["Entrypoint"] == ["vigil"] and "VIGIL_HOST_ROOT=/host" in conf["Env"]
    # no compiler in the runtime stage; the objects came in the wheel
    r = podman("run", "--rm", "--entrypoint", "sh", image, "-c",
               "command -v clang || echo no-clang; ls /opt/vigil/lib/python3*/site-packages/"
               "vigil/kernel/bpf/build/")
    assert "no-clang" in r.stdout and "proc.bpf.o" in r.stdout and "probes.o" in r.stdout
    print(f"make image (no cache): {secs:.0f}s")


@pytest.mark.slow
def test_image_runs_the_agent_as_the_daemonset_does(tmp_path, bpf_objects):
    image, _ = build_image()
    ds = one(rendered(ROOT / "deploy" / "kubernetes"), "DaemonSet")
    marker = tmp_path / f"vigil-image-{uuid.uuid4().hex[:8]}"
    marker.write_bytes(Path("/bin/true").read_bytes())
    marker.chmod(0o755)
    (tmp_path / "rules.yaml").write_text(
        "- rule: Image marker exec\n  desc: t\n"
        f"  condition: evt.type = execve and proc.exepath = {marker}\n"
        "  output: marker exec (pid=%proc.pid exe=%proc.exepath)\n  priority: WARNING\n")
    name = f"vigil-image-test-{uuid.uuid4().hex[:6]}"
    out, err = open(tmp_path / "out", "wb"), open(tmp_path / "err", "wb")
    p = subprocess.Popen(["podman", "run", "--rm", "--name", name,
                          *daemonset_run_args(ds, image),
                          "-v", f"{tmp_path}:/test:ro", image,
                          "run", "-r", "/test/rules.yaml", "--output", "json", "--no-store"],
                         stdout=out, stderr=err)
    try:
        wait_until(lambda: "running with" in (tmp_path / "err").read_text() or p.poll() is not None,
                   90, what="the agent in the container to start")
        assert p.poll() is None, (tmp_path / "err").read_text()
        pid = subprocess.Popen([str(marker)]).pid
        wait_until(lambda: any(json.loads(line)["output_fields"].get("proc.pid") == pid
                               for line in (tmp_path / "out").read_text().splitlines() if line),
                   10, what=f"the alert on the container's stdout; stderr:\n"
                            f"{(tmp_path / 'err').read_text()[-2000:]}")
        (alert,) = [json.loads(x) for x in (tmp_path / "out").read_text().splitlines() if x]
        assert alert["rule"] == "Image marker exec"
        assert alert["output_fields"]["proc.exepath"] == str(marker)
    finally:
        podman("stop", "-t", "10", name, timeout=60)
        p.wait(30)
        out.close()
        err.close()
    assert "Traceback" not in (tmp_path / "err").read_text()
    assert p.returncode == 0, (tmp_path / "err").read_text()
