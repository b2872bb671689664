"""Scope policies and the tracker that feeds in-kernel cgroup filtering."""
import pytest

from vigil.state.containers.model import HOST, UNKNOWN, ContainerInfo
from vigil.state.containers.scope import ScopePolicy, ScopeTracker, in_scope


def c(ns="", complete=True, cid="a" * 64):
    return ContainerInfo(id=cid, runtime="containerd", namespace=ns, complete=complete)


def test_policy_from_config():
    assert ScopePolicy.from_config(None).everything
    p = ScopePolicy.from_config({"host_only": True})
    assert p.host and not p.containers
    p = ScopePolicy.from_config({"containers_only": True, "namespaces": ["shop"]})
    assert not p.host and p.include_namespaces == ("shop",)
    p = ScopePolicy.from_config({"namespaces": {"exclude": ["kube-system"]}, "exclude_namespaces": ["x"]})
    assert p.exclude_namespaces == ("kube-system", "x")
    with pytest.raises(ValueError):
        ScopePolicy.from_config({"host_only": True, "containers_only": True})
    with pytest.raises(ValueError):
        ScopePolicy.from_config({"namespaces": "shop"})


def test_in_scope_table():
    host_only = ScopePolicy.from_config({"host_only": True})
    cont_only = ScopePolicy.from_config({"containers_only": True})
    inc = ScopePolicy.from_config({"namespaces": ["shop"]})
    exc = ScopePolicy.from_config({"namespaces": {"exclude": ["kube-system"]}})
    assert in_scope(host_only, HOST) is True and in_scope(host_only, c("shop")) is False
    assert in_scope(cont_only, HOST) is False and in_scope(cont_only, c()) is True
    assert in_scope(inc, c("shop")) is True and in_scope(inc, c("other")) is False
    assert in_scope(inc, HOST) is False
    assert in_scope(inc, c("", complete=False)) is None       # not known yet
    assert in_scope(inc, c("", complete=True)) is False       # plain (non-k8s) container
    assert in_scope(exc, c("kube-system")) is False and in_scope(exc, c("shop")) is True
    assert in_scope(exc, HOST) is True and in_scope(exc, c("")) is True
    assert in_scope(exc, UNKNOWN) is None


class FakeResolver:
    def __init__(self, known=None):
        self.listeners = []
        self._known = known or {}

    def add_listener(self, fn):
        self.listeners.append(fn)

    def known(self):
        return dict(self._known)

    def emit(self, cgid, info):
        for fn in self.listeners:
            fn(cgid, info)


def test_tracker_follows_resolver():
    r = FakeResolver({1: HOST})
    changes = []
    t = ScopeTracker(r, ScopePolicy.from_config({"namespaces": ["shop"]}),
                     on_change=lambda g, s: changes.append((g, s)))
    assert t.cgroup_ids_out_of_scope() == {1}
    r.emit(10, c("", complete=False))                          # pending: fail open
    assert 10 in t.cgroup_ids_in_scope() and t.is_in_scope(10)
    r.emit(10, c("other"))                                     # metadata arrived
    assert 10 in t.cgroup_ids_out_of_scope() and not t.is_in_scope(10)
    r.emit(11, c("shop"))
    r.emit(11, c("shop"))                                      # no change, no callback
    r.emit(10, None)
    assert t.cgroup_ids_in_scope() == {11} and t.cgroup_ids_out_of_scope() == {1}
    assert changes == [(1, False), (10, True), (10, False), (11, True), (10, None)]
    assert t.is_in_scope(999)                                  # never seen: in scope
