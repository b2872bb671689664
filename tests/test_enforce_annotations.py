"""OCI annotations stand in for pod labels when the Kubernetes API is not
enabled: a podman container carrying only `--annotation`s is selected by a
NetworkPolicy like a pod of that namespace and those labels."""
from __future__ import annotations

import pytest

from podman_env import make_rootfs, skip_reason
from test_enforce_e2e import Agent, Listeners, free_port, nc_script, run_in
from vigil.enforce.workloads import stand_in_labels
from vigil.state.containers.metadata import ANNOTATIONS_MAX, bounded_annotations, merge_into
from vigil.state.containers.model import ContainerInfo

SKIP = skip_reason()


def test_annotations_are_kept_bounded_and_labels_win():
    ann = {f"k{i}": "v" for i in range(ANNOTATIONS_MAX + 10)}
    ann["big"] = "x" * 5000
    kept = bounded_annotations(ann)
    assert len(kept) == ANNOTATIONS_MAX and "big" not in kept
    fields: dict = {}
    merge_into(fields, {"annotations": {"app": "from-ann", "tier": "db",
                                        "io.kubernetes.pod.namespace": "web"}})
    info = ContainerInfo(id="c" * 64, labels={"app": "from-label"}, **fields)
    assert stand_in_labels(info) == {"app": "from-label", "tier": "db"}
    assert ContainerInfo.from_dict(info.to_dict()).annotations == info.annotations


@pytest.mark.slow
@pytest.mark.skipif(bool(SKIP), reason=SKIP or "")
def test_a_container_selected_by_its_annotations(tmp_path):
    a, b = free_port(), free_port()
    lst = Listeners((a, b))
    pol = tmp_path / "p.yaml"
    pol.write_text(f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: ann-egress, namespace: annot}}
spec:
  podSelector: {{matchLabels: {{app: annot-web}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: 127.0.0.0/8}}}}]
    ports: [{{port: {a}}}]
""")
    rootfs = make_rootfs(tmp_path / "rootfs", tools=("sh", "echo", "nc"))
    ag = Agent(tmp_path, str(pol))
    try:
        ns = ["--annotation", "io.kubernetes.pod.namespace=annot"]
        out = run_in(rootfs, ns + ["--annotation", "app=annot-web"],
                     nc_script(("A", "127.0.0.1", a), ("B", "127.0.0.1", b)))
        assert "A-ok" in out and "B-fail" in out, out
        out = run_in(rootfs, ns + ["--annotation", "app=other"], nc_script(("B", "127.0.0.1", b)))
        assert "B-ok" in out, out
    finally:
        ag.stop()
        lst.close()
