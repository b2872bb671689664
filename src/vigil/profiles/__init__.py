"""Behavioural profiles (docs/PROFILES.md): each workload's normal behaviour,
learned over a window, alerts on drift, and least-privilege policies from it.

``observe`` (events -> identity and values), ``shapes`` (path folding, argument
shapes), ``profile`` (one profile), ``book`` (the store tables, requests from
the command line), ``manager`` (the agent's handler), ``documents`` (YAML
export/import), ``policy`` (NetworkPolicy + VigilPolicy from a profile).
"""
from __future__ import annotations

from vigil.kernel.filters import OPEN_WANT_ALL


def kernel_kinds(cfg) -> set:
    """The event kinds profiles need from the kernel (none when disabled)."""
    if not cfg["profiles"]["enabled"]:
        return set()
    from vigil.profiles.observe import KINDS
    return set(KINDS)


def open_prefixes(cfg, rule_prefixes):
    """The kernel's open filter with the profiling prefixes added (every open
    mode below them): ``rule_prefixes`` as RuleEngine.open_path_filter() gives it."""
    if not cfg["profiles"]["enabled"] or rule_prefixes is None:
        return rule_prefixes
    out = dict(rule_prefixes)
    for p in cfg["profiles"]["file_prefixes"]:
        out[p] = out.get(p, 0) | OPEN_WANT_ALL
    return out


def make_manager(cfg, proctable, alerts, dropped=None):
    """The agent's ProfileManager on the configured store file (through the
    alert pipeline's store when it is that file)."""
    import os
    from vigil.profiles.book import ProfileBook, default_book_path
    from vigil.profiles.manager import ProfileManager
    path = default_book_path(cfg)
    store = getattr(getattr(alerts, "dispatcher", None), "store", None)
    same = store is not None and os.path.abspath(store.path) == os.path.abspath(path)
    book = ProfileBook(path, store=store if same else None)
    emit = alerts.emit
    return ProfileManager(cfg["profiles"], book, emit, proctable=proctable, dropped=dropped,
                          runtimes=cfg["enforce"]["protected"])


__all__ = ["kernel_kinds", "open_prefixes", "make_manager"]
