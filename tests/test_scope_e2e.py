"""In-kernel scoping end to end with real podman containers.

* ``vigil trace --host-only`` / ``--containers-only``: the kernel decides by the
  task's pid-namespace level.
* ``vigil run`` with ``scope: {namespaces: {exclude: [shop]}}``: the agent learns each
  container's k8s namespace and writes a deny entry (0) for its cgroup id into the
  kernel map ``cgroup_scope``; the shell-in-container rule then never sees shop's
  events while another namespace's container still alerts.

The first exec of a brand-new container races the namespace learning (fail-open by
design).  With ``--annotation`` the namespace is in config.json when the cgroup is
made, so the deny entry is in before the container's first exec; with ``--label``
it needs podman's CLI (~0.1-0.3 s): measured and printed (``-s``), not asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from podman_env import V2, make_rootfs, podman, poll, skip_reason
from test_containers_e2e import (ANNOTATIONS, LABELS, TraceProc, _env, alerts_in, json_events,
                                 run_container, running_agent)

pytestmark = pytest.mark.slow
SKIP = skip_reason()
if SKIP:
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=SKIP)]

SHOP_ANN = ["--annotation", "io.kubernetes.pod.namespace=shop",
            "--annotation", "io.kubernetes.pod.name=web-2"]
OTHER_LABELS = ["--label", "io.kubernetes.pod.namespace=other",
                "--label", "io.kubernetes.pod.name=job-1"]
RACE_RUNS = 5


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("scope-e2e")


@pytest.fixture(scope="module")
def rootfs(work):
    return make_rootfs(work / "rootfs")


def _sh(tr, m):
    return json_events(tr, lambda e: e["comm"] == "sh" and e["args"][-1:] == [f": {m}"])


def test_trace_host_only_and_containers_only(bpf_objects, rootfs, work):
    host = TraceProc(["exec", "--containers", "--json", "--host-only"], work / "h.out", _env())
    ctrs = TraceProc(["exec", "--containers", "--json", "--containers-only"], work / "c.out",
                     _env())
    try:
        host.wait_ready()
        # the containers-only trace is ready once it sees a container
        ok = False
        for _ in range(20):
            m = "ready-" + uuid.uuid4().hex[:8]
            run_container(rootfs, f": {m}", ANNOTATIONS, tmp=work)
            if poll(lambda: _sh(ctrs, m), 1.5):
                ok = True
                break
        assert ok, ctrs.stderr()
        cm = "in-" + uuid.uuid4().hex[:8]
        hm = "out-" + uuid.uuid4().hex[:8]
        cid, _, _ = run_container(rootfs, f": {cm}", LABELS, tmp=work)
        subprocess.run(["/bin/sh", "-c", f": {hm}"])
        got = poll(lambda: _sh(ctrs, cm), 10)
        assert got and got[0]["container_id"] == cid
        got = poll(lambda: _sh(host, hm), 10)
        assert got and got[0]["container_id"] == "host"
        # a marker after both: everything before it has been read
        end = "end-" + uuid.uuid4().hex[:8]
        subprocess.run(["/bin/sh", "-c", f": {end}"])
        run_container(rootfs, f": {end}", ANNOTATIONS, tmp=work)
        assert poll(lambda: _sh(host, end) and len(_sh(ctrs, end)) == 1, 10)
        assert _sh(host, cm) == []
        assert _sh(ctrs, hm) == []
        assert all(e["container_id"] != "host" for e in json_events(ctrs))
        assert all(e["container_id"] == "host" or e["comm"] == "runc"
                   for e in json_events(host)), \
            [(e["comm"], e["exe"], e["args"]) for e in json_events(host)
             if e["container_id"] != "host"][:3]
    finally:
        host.stop()
        ctrs.stop()


# --- vigil run, namespace exclusion ----------------------------------------------------

RULES = """
- rule: Shell in container
  desc: a shell was started inside a container
  condition: evt.type = execve and container.id != host and proc.name in (sh, bash, ash)
  output: shell in container (id=%container.id ns=%k8s.ns.name pod=%k8s.pod.name cmd=%proc.cmdline)
  priority: WARNING
"""


@pytest.fixture(scope="module")
def agent(bpf_objects, work):
    with running_agent(work, RULES, "--no-store",
                       config="scope: {namespaces: {exclude: [shop]}}\n") as a:
        yield a


def _alerted(out, m):
    return [a for a in alerts_in(out) if m in a.get("output", "")]


def kernel_denied() -> set:
    """cgroup ids with a 0 (drop) entry in any loaded `cgroup_scope` map."""
    r = subprocess.run(["bpftool", "-j", "map", "dump", "name", "cgroup_scope"],
                       capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return set()
    try:
        data = json.loads(r.stdout)
    except ValueError:
        return set()
    out = set()
    ents = []
    for ent in data if isinstance(data, list) else []:
        # several maps of that name: [{"id": .., "elements": [...]}, ...]
        ents.extend(ent["elements"] if isinstance(ent.get("elements"), list) else [ent])
    for ent in ents:
        f = ent.get("formatted")
        if f is not None:
            if f.get("value") == 0:
                out.add(int(f["key"]))
            continue
        key, val = ent.get("key"), ent.get("value")
        if isinstance(key, list) and isinstance(val, list):
            k = int.from_bytes(bytes(int(b, 16) for b in key), "little")
            if int(val[0], 16) == 0:
                out.add(k)
    return out


def cgroup_id_of(cid: str) -> int:
    path = f"{V2}/libpod_parent/libpod-{cid}"
    return os.stat(path).st_ino


def test_run_namespace_exclude(agent, rootfs, work):
    p, out, err = agent
    # a known (long-running) container in shop, by labels, and one in another namespace
    shop, _, _ = run_container(rootfs, "sleep 60", LABELS, tmp=work, detach=True)
    other, _, _ = run_container(rootfs, "sleep 60", OTHER_LABELS, tmp=work, detach=True)
    try:
        shop_cg = cgroup_id_of(shop)
        other_cg = cgroup_id_of(other)
        # the deny entry shows up in the kernel once the namespace is known
        assert poll(lambda: shop_cg in kernel_denied(), 10), err.read_text()[-1000:]
        assert other_cg not in kernel_denied()
        m1, m2 = "shop-" + uuid.uuid4().hex[:8], "other-" + uuid.uuid4().hex[:8]
        assert podman("exec", shop, "/bin/sh", "-c", f": {m1}").returncode == 0
        assert podman("exec", other, "/bin/sh", "-c", f": {m2}").returncode == 0
        got = poll(lambda: _alerted(out, m2), 10)
        assert got and got[0]["output_fields"]["k8s.ns.name"] == "other"
        assert got[0]["output_fields"]["container.id"] == other[:12]
        # a short container of namespace other, by annotations-less labels: still alerts
        m3 = "other2-" + uuid.uuid4().hex[:8]
        run_container(rootfs, f": {m3}", OTHER_LABELS, tmp=work)
        assert poll(lambda: _alerted(out, m3), 10)
        # brand-new shop containers: annotations (namespace in config.json at mkdir) and
        # labels (namespace only through podman's CLI).  The kernel's deny entry can come
        # after a new container's first exec (it fails open); those events are held for
        # metadata and dropped by the agent once the namespace is known.  Count leaks.
        leaks = {"annotations": 0, "labels": 0}
        marks = []
        for i in range(RACE_RUNS):
            for kind, meta in (("annotations", SHOP_ANN), ("labels", LABELS)):
                m = f"new-{kind}-{uuid.uuid4().hex[:8]}"
                run_container(rootfs, f": {m}", meta, tmp=work)
                marks.append((kind, m))
        end = "end-" + uuid.uuid4().hex[:8]
        run_container(rootfs, f": {end}", OTHER_LABELS, tmp=work)
        assert poll(lambda: _alerted(out, end), 10)
        for kind, m in marks:
            leaks[kind] += bool(_alerted(out, m))
        print(f"\nnew shop containers whose first exec alerted anyway (of {RACE_RUNS} each): "
              f"{leaks}")
        assert _alerted(out, m1) == []            # known shop container: dropped in the kernel
        assert leaks["annotations"] == 0, leaks
    finally:
        podman("rm", "-f", "-t", "0", shop, other)
