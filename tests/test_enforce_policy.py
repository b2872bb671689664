"""Policy files without the kernel: NetworkPolicy semantics as Kubernetes
defines them, VigilPolicy, the compiled longest-prefix entries, and the
messages of `vigil policy validate` (file:line, Kubernetes-style paths)."""
from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vigil.enforce.compiler import (ALLOW, DENY, Compiler, PolicyIndex, lpm_entries, F_DENY_EGRESS,
                                    F_DENY_INGRESS)
from vigil.enforce.documents import PolicyError
from vigil.enforce.loader import load_policies
from vigil.enforce.manager import exec_match
from vigil.enforce.model import HOST_WORKLOAD, Workload

VIGIL = str(Path(sys.executable).parent / "vigil")


def pols(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    return load_policies([str(p)])


def np(name="p", ns="web", spec="podSelector: {}"):
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}\n")


def compile_for(policies, *workloads):
    return Compiler(policies, [HOST_WORKLOAD, *workloads], PolicyIndex()).compile()


def nets(pset, direction=1, lst=ALLOW):
    return {str(ipaddress.ip_network((ipaddress.ip_address(packed), plen))): rs
            for (d, l, _f, packed, plen), rs in pset.nets if d == direction and l == lst}


WEB = Workload("c-web", "web", {"app": "web", "tier": "front"}, "web-1",
               ips=(ipaddress.ip_address("10.1.0.5"),), ports={"http": [(6, 8080)]})
DB = Workload("c-db", "db", {"app": "db"}, "db-1", ips=(ipaddress.ip_address("10.2.0.7"),),
              ports={"pg": [(6, 5432)]})


def test_policy_types_default_to_ingress_plus_egress_when_egress_rules_exist(tmp_path):
    p1, p2 = pols(tmp_path, np("a", spec="podSelector: {}") + "---\n"
                  + np("b", spec="podSelector: {}\negress: [{}]"))
    assert p1.isolates == {"ingress"} and p2.isolates == {"ingress", "egress"}
    e, _ = compile_for([p1], WEB)["c-web"]
    assert e.flags & F_DENY_INGRESS and not e.flags & F_DENY_EGRESS
    assert nets(e, 2) == {}          # selected for ingress, no rule: nothing allowed


def test_empty_rule_allows_everything_and_no_rule_nothing(tmp_path):
    (p,) = pols(tmp_path, np(spec="podSelector: {}\npolicyTypes: [Egress]\negress: [{}]"))
    e, _ = compile_for([p], WEB)["c-web"]
    assert nets(e) == {"0.0.0.0/0": ((0, 65535, 0, 0),), "::/0": ((0, 65535, 0, 0),)}
    (p,) = pols(tmp_path, np(spec="podSelector: {}\npolicyTypes: [Egress]\negress: []"))
    e, _ = compile_for([p], WEB)["c-web"]
    assert e.flags & F_DENY_EGRESS and nets(e) == {}


def test_pod_selector_match_expressions_and_namespace(tmp_path):
    (p,) = pols(tmp_path, np(spec="""
        podSelector:
          matchExpressions:
          - {key: tier, operator: In, values: [front, back]}
          - {key: legacy, operator: DoesNotExist}
        policyTypes: [Egress]"""))
    other_ns = Workload("c-x", "other", {"tier": "front"})
    legacy = Workload("c-l", "web", {"tier": "front", "legacy": "1"})
    out = compile_for([p], WEB, other_ns, legacy)
    assert out["c-web"][0] is not None
    assert out["c-x"] == (None, None) and out["c-l"] == (None, None)
    assert out["host"] == (None, None)


def test_allowed_is_the_union_of_all_selecting_policies(tmp_path):
    ps = pols(tmp_path, np("a", spec="""
        podSelector: {}
        egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}}], ports: [{port: 80}]}]""") + "---\n" + np("b", spec="""
        podSelector: {matchLabels: {app: web}}
        egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}}], ports: [{port: 443}, {protocol: UDP, port: 53}]}]"""))
    e, _ = compile_for(ps, WEB)["c-web"]
    assert nets(e) == {"10.0.0.0/8": ((53, 53, 17, 1), (80, 80, 6, 0), (443, 443, 6, 1))}
    assert set(e.default_policies("egress")) == {"NetworkPolicy web/a", "NetworkPolicy web/b"}


def test_ip_block_except_shadows_the_block_in_the_longest_prefix_entries():
    n = ipaddress.ip_network
    got = lpm_entries([(n("10.0.0.0/8"), (n("10.1.0.0/16"),), {(80, 80, 6, 0)}),
                       (n("10.1.2.0/24"), (), {(443, 443, 6, 0)})], "t")
    assert got == {n("10.0.0.0/8"): ((80, 80, 6, 0),), n("10.1.0.0/16"): (),
                   n("10.1.2.0/24"): ((443, 443, 6, 0),)}


def test_pod_and_namespace_selector_peers_resolve_to_pod_ips_and_named_ports(tmp_path):
    (p,) = pols(tmp_path, np(spec="""
        podSelector: {matchLabels: {app: web}}
        policyTypes: [Egress, Ingress]
        egress:
        - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: db}},
                podSelector: {matchLabels: {app: db}}}]
          ports: [{port: pg}]
        ingress:
        - from: [{podSelector: {}}]
          ports: [{port: http}]"""))
    e, _ = compile_for([p], WEB, DB)["c-web"]
    assert nets(e, 1) == {"10.2.0.7/32": ((5432, 5432, 6, 0),)}
    # ingress: pods of the policy's own namespace (web-1 itself), the pod's own named port
    assert nets(e, 2) == {"10.1.0.5/32": ((8080, 8080, 6, 0),)}


def test_end_port_and_sctp(tmp_path):
    (p,) = pols(tmp_path, np(spec="""
        podSelector: {}
        egress: [{ports: [{port: 8000, endPort: 8099}, {protocol: SCTP, port: 9}]}]"""))
    e, _ = compile_for([p], WEB)["c-web"]
    assert nets(e)["0.0.0.0/0"] == ((9, 9, 132, 0), (8000, 8099, 6, 0))


def test_vigil_policy_selector_deny_lists_exec_and_audit(tmp_path):
    text = """
    apiVersion: vigil.dev/v1
    kind: VigilPolicy
    metadata: {name: web-hardening}
    spec:
      mode: audit
      selector: {namespaces: [web], podLabels: {app: web}}
      exec:
        deny: [{path: /usr/bin/nc}, {name: ncat}]
      egress:
        deny: [{cidr: 0.0.0.0/0, ports: ["80", "8000-8099"], protocol: TCP}]
    """
    (p,) = pols(tmp_path, text)
    out = compile_for([p], WEB, DB)
    e, a = out["c-web"]
    assert e is None and a is not None          # audit only: nothing enforced
    assert nets(a, 1, DENY) == {"0.0.0.0/0": ((80, 80, 6, 0), (8000, 8099, 6, 0))}
    assert exec_match(a, "ncat", "/bin/x") == 0 and exec_match(a, "sh", "/usr/bin/nc") == 0
    assert exec_match(a, "sh", "/bin/sh") is None
    assert out["c-db"] == (None, None) and out["host"] == (None, None)


def test_vigil_policy_host_selection(tmp_path):
    (p,) = pols(tmp_path, """
    apiVersion: vigil.dev/v1
    kind: VigilPolicy
    metadata: {name: h}
    spec: {selector: {host: true, namespaces: [web]}, exec: {deny: [{name: nc}]}}
    """)
    out = compile_for([p], WEB, DB)
    assert out["host"][0] is not None and out["c-web"][0] is not None
    assert out["c-db"] == (None, None)


def test_the_shipped_example_holds_both_forms():
    ex = Path(__file__).resolve().parent.parent / "examples" / "policies" / "deny-egress-80.yaml"
    ps = load_policies([str(ex)])
    assert [p.kind for p in ps] == ["VigilPolicy", "NetworkPolicy"]
    for p in ps:
        e, _ = Compiler([p], [HOST_WORKLOAD, WEB], PolicyIndex()).compile()["c-web"]
        v4 = nets(e, 1, DENY).get("0.0.0.0/0") or nets(e, 1, ALLOW).get("0.0.0.0/0")
        covers80 = any(lo <= 80 <= hi and proto in (0, 6) for lo, hi, proto, _ in v4)
        covers81 = any(lo <= 81 <= hi and proto in (0, 6) for lo, hi, proto, _ in v4)
        # the deny list names 80; the allow list covers every TCP port but 80
        assert (covers80, covers81) == ((True, False) if p.kind == "VigilPolicy" else (False, True))


BAD = [
    (np(spec="podSelector: {}\negress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/33}"), 8,
     'NetworkPolicy "web/p": spec.egress[0].to[0].ipBlock.cidr: Invalid value: "10.0.0.0/33"'),
    (np(spec="podSelector: {}\npolicyTypes: [Ingress, Sideways]"), 6,
     'spec.policyTypes[1]: Unsupported value: "Sideways": supported values: "Ingress", "Egress"'),
    (np(spec="podSelector: {}\negress:\n- ports: [{protocol: ICMP}]"), 7,
     'spec.egress[0].ports[0].protocol: Unsupported value: "ICMP"'),
    (np(spec="podSelector: {}\negress:\n- ports: [{port: 90, endPort: 80}]"), 7,
     "spec.egress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`"),
    (np(spec="podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}"),
     8, 'spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "11.0.0.0/16": must be a strict '
        'subset of `cidr`'),
    (np(spec="podSelector: {}\ningress:\n- from:\n  - {ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}"),
     8, "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"),
    (np(spec="podSelector: {}\ningress:\n- from: [{}]"), 7,
     "spec.ingress[0].from[0]: Required value: must specify a peer"),
    (np(spec="policyTypes: [Ingress]"), 4, "spec.podSelector: Required value"),
    (np(spec="podSelector:\n  matchExpressions: [{key: a, operator: In}]"), 6,
     "spec.podSelector.matchExpressions[0].values: Required value"),
    ("apiVersion: vigil.dev/v1\nkind: VigilPolicy\nmetadata: {name: v}\nspec:\n  exec:\n"
     "    deny: [{name: /bin/nc}]\n", 6, 'VigilPolicy "v": spec.exec.deny[0].name: name '),
    ("apiVersion: vigil.dev/v1\nkind: VigilPolicy\nmetadata: {name: v}\nspec:\n  egress:\n"
     "    deny:\n    - {ports: [\"99999\"]}\n", 7, "spec.egress.deny[0].ports[0]: invalid port"),
    ("apiVersion: vigil.dev/v1\nkind: VigilPolicy\nmetadata: {name: v}\nspec: {mode: loud}\n", 4,
     "spec.mode: unknown mode 'loud'"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: v}\n", 2, "unsupported kind 'Pod'"),
    ("kind: [\n", 2, "not valid YAML"),
]


@pytest.mark.parametrize("text,line,msg", BAD)
def test_validate_names_file_line_and_key(tmp_path, text, line, msg):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(PolicyError) as ei:
        load_policies([str(f)])
    assert f"{f}:{line}: " in str(ei.value) and msg in str(ei.value), str(ei.value)
    r = subprocess.run([VIGIL, "policy", "validate", str(f)], capture_output=True, text=True)
    assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_second_document_errors_name_their_own_line(tmp_path):
    f = tmp_path / "two.yaml"
    f.write_text(np("a") + "---\n" + np("b", spec="podSelector: {}\npolicyTypes: [X]"))
    with pytest.raises(PolicyError, match=rf"{f}:12: NetworkPolicy \"web/b\": spec.policyTypes\[0\]"):
        load_policies([str(f)])


def test_duplicate_policies_are_refused(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text(np("a") + "---\n" + np("a"))
    with pytest.raises(PolicyError, match="defined twice"):
        load_policies([str(f)])


def test_validate_ok_and_directories(tmp_path):
    (tmp_path / "a.yaml").write_text(np("a"))
    (tmp_path / "b.yml").write_text(np("b"))
    r = subprocess.run([VIGIL, "policy", "validate", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and "2 policies OK" in r.stdout, r.stderr


def test_a_deny_lists_except_is_kept_so_the_block_inside_is_not_denied(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("apiVersion: vigil.dev/v1\nkind: VigilPolicy\nmetadata: {name: d}\nspec:\n"
                 "  selector: {host: true}\n  egress:\n"
                 "    deny: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16], ports: [\"80\"]}]\n")
    e, _ = Compiler(load_policies([str(p)]), [HOST_WORKLOAD], PolicyIndex()).compile()["host"]
    assert nets(e, 1, DENY) == {"10.0.0.0/8": ((80, 80, 6, 0),), "10.1.0.0/16": ()}
