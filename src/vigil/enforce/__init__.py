"""Enforcement in the kernel: Kubernetes NetworkPolicy and VigilPolicy
(vigil.dev/v1) compiled into per-cgroup verdict maps read by cgroup socket
hooks and an exec tracepoint (kernel/bpf/enforce_*.bpf.c).

documents/loader (files) -> networkpolicy, vigilpolicy (-> model.Policy) ->
compiler (policy sets per workload) -> tables (the maps, switched atomically)
<- manager.Enforcer (the agent's part; kernel.py loads and attaches)."""
from __future__ import annotations


def make_enforcer(cfg, resolver, kube, emit):
    """The agent's Enforcer from its configuration (policies are loaded here:
    a PolicyError stops the agent before anything is attached)."""
    from vigil.config import expand_rules_paths
    from vigil.enforce.manager import Enforcer
    en = cfg["enforce"]
    return Enforcer(expand_rules_paths(cfg["policies"]), resolver=resolver, kube=kube, emit=emit,
                    hold=cfg["containers"]["hold"], persist=en["persist"],
                    protected=en["protected"])


__all__ = ["make_enforcer"]
