"""Starting and stopping the sensors many times leaks nothing: no file
descriptors, no BPF programs/links/maps left in the kernel, no ring buffer
mappings, bounded memory; a start that fails half-way cleans up too."""
import os
import shutil
import subprocess

import pytest

from vigil.kernel import libbpf
from vigil.events import Kind
from vigil.kernel.ringbuf import RingBuffer
from vigil.kernel.sensors import SensorManager

RING = 64 * 1024


def fds() -> set:
    """This process's open fds but sockets: the pipeline opens none, and daemon threads
    of earlier tests in the process (a DNS lookup of the rules' domain names) may hold
    one for a moment."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
        except OSError:
            continue
        out.add(fd)
    return out


def bpf_fds() -> dict:
    """fd -> (object kind, kernel id) for every BPF object this process holds."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            with open(f"/proc/self/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        if not target.startswith("anon_inode:") or "bpf" not in target and "btf" not in target:
            continue
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        for key in ("link_id", "prog_id", "map_id", "btf_id"):
            if key in fields:
                out[fd] = (key[:-3], int(fields[key]))
                break
    return out


def bpf_mappings() -> list:
    with open("/proc/self/maps") as f:
        return [line for line in f if "anon_inode:bpf" in line]


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def kernel_has(kind: str, ident: int) -> bool:
    r = subprocess.run(["bpftool", kind, "show", "id", str(ident)], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def clean(bpf_objects):
    """fd set before the test; the test must end with the same set."""
    before = fds()
    yield before
    assert fds() == before, "file descriptors leaked"
    assert bpf_mappings() == []


def test_start_stop_50_times(clean):
    ids = set()
    rss = []
    for i in range(50):
        m = SensorManager({Kind.EXEC, Kind.EXIT}, ringbuf_size=RING).start()
        if i < 3:
            held = bpf_fds()
            ids |= {v for v in held.values() if v[0] in ("prog", "link")}
            assert {k for k, _ in held.values()} >= {"prog", "link", "map"}
        ring = RingBuffer(m.maps["events"].fd, RING)
        ring.close()
        m.stop()
        assert bpf_fds() == {}
        rss.append(rss_kb())
    assert fds() == clean
    # what the first iterations created is gone from the kernel
    assert ids and all(k in ("prog", "link") for k, _ in ids)
    if shutil.which("bpftool"):
        still = [(k, i) for k, i in ids if kernel_has(k, i)]
        assert still == []
    # memory settles: no growth between the 10th and the 50th round beyond noise
    assert rss[-1] - rss[9] < 4096, rss


def test_start_stop_many_objects_with_refused_programs(clean, caplog):
    """Several objects, shared maps reused, and the module programs that cannot
    attach on this kernel: nothing of any of it stays behind."""
    for _ in range(4):
        m = SensorManager({Kind.EXEC, Kind.OPEN, Kind.SETUID, Kind.MODULE, Kind.CONNECT},
                          ringbuf_size=RING).start()
        assert {Kind.EXEC, Kind.OPEN, Kind.SETUID, Kind.CONNECT} <= m.active_kinds()
        m.stop()
        assert bpf_fds() == {}


def test_pipeline_start_stop_releases_ring_mappings(clean):
    from vigil.kernel.filters import KernelFilters
    from vigil.pipeline import Pipeline
    for _ in range(10):
        p = Pipeline(KernelFilters({Kind.EXEC}, ringbuf_size=RING), seed=False).start()
        # per ring (high-priority and bulk): consumer page + producer/data
        assert len(bpf_mappings()) == 4
        p.drain(settle=0)
        p.stop()
        assert bpf_mappings() == []
        p.stop()   # twice is harmless


def test_ring_close_is_idempotent_and_releases(clean):
    m = SensorManager({Kind.EXEC}, ringbuf_size=RING).start()
    try:
        r = RingBuffer(m.maps["events"].fd, RING)
        assert len(bpf_mappings()) == 2
        assert r.available() == 0
        r.close()
        r.close()
        assert bpf_mappings() == []
    finally:
        m.stop()


def test_ring_rejects_bad_size(bpf_objects):
    with pytest.raises(ValueError):
        RingBuffer(-1, 3 * 4096)


def test_failed_start_cleans_up(clean, tmp_path, bpf_objects):
    """An object that cannot be opened stops the start; what was loaded before goes."""
    d = tmp_path / "objs"
    shutil.copytree(bpf_objects, d)
    (d / "file.bpf.o").write_bytes(b"\x7fELF not really")
    m = SensorManager({Kind.EXEC, Kind.OPEN}, ringbuf_size=RING, directory=d)
    with pytest.raises(libbpf.BpfError):
        m.start()
    assert m.links == [] and m.objects == {} and not m.started
    assert bpf_fds() == {}


def test_context_manager(clean):
    with SensorManager({Kind.EXIT}, ringbuf_size=RING) as m:
        assert m.started
        assert m.active_kinds() == {Kind.EXIT}
    assert not m.started
    assert bpf_fds() == {}
