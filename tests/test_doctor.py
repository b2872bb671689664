"""`vigil doctor`: every hook type probed by loading a program, judged against
what the kernel says independently (its config, bpftool's feature probe, the
perf event sources); the features follow; exit 1 when the agent cannot run."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess

import pytest

from conftest import VIGIL


def doctor(*args, env=None, prefix=()):
    r = subprocess.run([*prefix, VIGIL, "doctor", *args], capture_output=True, text=True,
                       timeout=120, env={**os.environ, **(env or {})})
    return r


@pytest.fixture(scope="module")
def report(bpf_objects):
    r = doctor("--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    rep["by_hook"] = {h["hook"]: h for h in rep["hooks"]}
    rep["by_feature"] = {f["feature"]: f for f in rep["features"]}
    return rep


def _kernel_config(option: str):
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return any(line.strip() == f"{option}=y" for line in f)
    except OSError:
        return None


def _bpftool_prog_types() -> dict:
    if not shutil.which("bpftool"):
        return {}
    out = subprocess.run(["bpftool", "feature", "probe", "kernel"], capture_output=True,
                         text=True).stdout
    types = {}
    for line in out.splitlines():
        if line.startswith("eBPF program_type "):
            name = line.split()[2]
            types[name] = "NOT available" not in line
    return types


def test_hooks_this_kernel_has_are_available(report):
    h = report["by_hook"]
    for name in ("tracepoint", "tp_btf", "raw_tp", "cgroup_sock_addr", "cgroup_skb", "uprobe",
                 "ringbuf", "send_signal"):
        assert h[name]["available"], h[name]
        assert h[name]["loaded"] and not h[name]["error"]
    # attached for a moment where loading alone proves little
    assert h["tracepoint"]["attached"] is True and h["cgroup_sock_addr"]["attached"] is True
    assert h["ringbuf"]["attached"] is None


def test_kprobe_fentry_lsm_match_the_kernel(report):
    h = report["by_hook"]
    kprobes = _kernel_config("CONFIG_KPROBES")
    if kprobes is None:
        kprobes = os.path.exists("/sys/bus/event_source/devices/kprobe")
    assert h["kprobe"]["available"] is kprobes, h["kprobe"]
    types = _bpftool_prog_types()
    if not types:
        pytest.skip("bpftool not installed")
    if not types["tracing"]:
        assert h["fentry"]["available"] is False and "load refused" in h["fentry"]["error"]
    if not types["lsm"]:
        assert h["lsm"]["available"] is False and h["lsm"]["error"]
    # on this kind of node (see README): no kprobes, fentry or BPF-LSM, and the report says so
    if not kprobes and not types["tracing"] and not types["lsm"]:
        assert "attach refused" in h["kprobe"]["error"]
        assert not any(h[k]["available"] for k in ("kprobe", "fentry", "lsm"))


def test_features_say_how_and_why(report):
    f = report["by_feature"]
    h = report["by_hook"]
    fi = f["file identity"]
    if not h["fentry_file"]["available"]:
        # this host: the tracepoint path serves, and the report says why fentry does not
        assert fi["available"] and fi["why"] == "tracepoints (sys_exit_openat)"
        assert fi["hook"] == "tracepoints (sys_exit_openat)" and fi["degraded"] is True
        fentry, tp = fi["ways"]
        assert fentry["used"] is False and fentry["why"].startswith("fentry_file load refused")
        assert tp["used"] is True and "at the syscall's exit" in tp["why"]
    else:
        assert fi["hook"].startswith("fentry/security_file_open") and not fi["degraded"]
    assert f["enforcement"]["available"] and f["enforcement"]["why"].startswith(
        "cgroup/connect4, cgroup_skb/ingress, cgroup v2 at ")
    tfs = report["node"]["tracefs"]["path"]
    has_module_tp = os.path.isdir(f"{tfs}/events/syscalls/sys_enter_finit_module")
    assert f["kernel module load rule"]["available"] is has_module_tp
    if not has_module_tp:
        assert f["kernel module load rule"]["why"] == "no module tracepoints"
    assert report["can_run"] is True and report["problems"] == []


def test_each_feature_names_the_hook_that_serves_it(report):
    """Per feature: exactly one way used when available, and every way not
    used says why (a refusal of its hook, or that a better one serves)."""
    h = report["by_hook"]
    for f in report["features"]:
        used = [w for w in f["ways"] if w["used"]]
        assert len(used) == (1 if f["hook"] else 0), f
        for w in f["ways"]:
            assert w["used"] or w["why"], f
    od = report["by_feature"]["open deny (file.deny)"]
    best = ("lsm/file_open (EPERM)" if h["lsm"]["available"] else
            "fmod_ret/security_file_open (EPERM)" if h["fmod_ret"]["available"] else
            "tracepoints sys_exit_open* + bpf_send_signal")
    assert od["available"] and od["hook"] == best
    assert od["degraded"] is best.startswith("tracepoints")
    lsm = od["ways"][0]
    if not h["lsm"]["available"]:
        assert lsm["why"].startswith("lsm ") and h["lsm"]["error"] in lsm["why"]
    if h["lsm"]["available"]:
        assert od["ways"][1]["why"] in ("not needed: lsm/file_open (EPERM) serves",) or \
            not h["fmod_ret"]["available"]
    pk = report["by_feature"]["packets"]
    assert pk["hook"].startswith("tp_btf/netif_receive_skb")
    kp = pk["ways"][-1]
    assert kp["hook"] == "kprobe/netif_receive_skb" and kp["used"] is False
    assert kp["why"].startswith("not needed: ") and kp["available"] is h["kprobe"]["available"]
    cp = report["by_feature"]["connect deny by process (process: selectors)"]
    assert cp["available"] is h["sock_task_storage"]["available"]


def test_bpf_lsm_off_is_explained():
    from vigil.kernel.probe import lsm_reason
    assert lsm_reason(["lockdown", "capability", "yama"]) == (
        "BPF LSM not enabled (lsm= lacks bpf; active: lockdown,capability,yama)")
    assert lsm_reason(["lockdown", "bpf"]) == ""


def test_node_facts(report):
    n = report["node"]
    assert n["kernel"] == os.uname().release
    assert n["btf"]["present"] and n["btf"]["bytes"] == os.path.getsize("/sys/kernel/btf/vmlinux")
    assert n["capabilities"]["CAP_BPF"] and n["capabilities"]["CAP_SYS_ADMIN"]
    from vigil.state.containers.cgroupfs import find_v2_mount
    assert n["cgroup"]["v2_mount"] == find_v2_mount()
    assert n["cgroup"]["mode"] in ("unified", "hybrid")
    assert n["libbpf"].startswith("v1.")
    if shutil.which("podman"):
        assert any(r["runtime"] == "podman" for r in report["runtimes"])


def test_text_report(bpf_objects):
    r = doctor()
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("vigil doctor: this node can run the agent")
    assert ("  yes  file identity: tracepoints (sys_exit_openat)" in out
            or "  yes  file identity: fentry/security_file_open" in out)
    assert "hooks (each probed by loading a program):" in out
    assert "Traceback" not in r.stderr


def test_exit_1_without_btf(bpf_objects):
    r = doctor("--json", env={"VIGIL_BTF": "/nonexistent/vmlinux"})
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["can_run"] is False
    assert any("no kernel BTF at /nonexistent/vmlinux" in p for p in rep["problems"])


def test_exit_1_without_capabilities(bpf_objects):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not installed")
    drop = "-bpf,-perfmon,-sys_admin"
    r = doctor(prefix=("setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the agent CANNOT run here" in r.stdout
    assert "missing capabilities: CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN" in r.stdout
    assert "Traceback" not in r.stderr
