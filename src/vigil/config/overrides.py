"""``-o key=value`` on the command line, as Falco takes it: any configuration
key, dotted for nested ones (``outputs.webhook.url=http://x/``), the value
read as YAML (``rules=[a.yaml,b.yaml]``, ``store.enabled=false``,
``sensors.dns_ports=[53,5353]``).  Repeatable; later ones win.

Each override becomes a nested mapping merged over vigil.yaml; a mistake in
its value is reported by the schema as ``-o: key.path: what is wrong``.
"""
from __future__ import annotations

import re

import yaml

from vigil.config.errors import ConfigError

SOURCE = "-o"        # the "file" an override's errors are reported in
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")


def parse_override(text: str) -> tuple:
    """``"a.b=v"`` -> ``(("a", "b"), value)``; ConfigError for a bad form."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"expected key=value, got {text!r}", SOURCE)
    if not _KEY.fullmatch(key):
        raise ConfigError(f"{key!r} is not a configuration key (dotted names: "
                          "outputs.webhook.url)", SOURCE)
    path = tuple(key.split("."))
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"value is not valid YAML: {getattr(e, 'problem', None) or e}",
                          SOURCE, key=path) from None
    return path, value


def overrides_tree(items) -> tuple:
    """(nested mapping, set of key paths) for a sequence of ``key=value``."""
    tree: dict = {}
    paths = set()
    for text in items:
        path, value = parse_override(text)
        node = tree
        for i, k in enumerate(path[:-1]):
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                if nxt is not None:
                    raise ConfigError(f"another -o gives {'.'.join(path[:i + 1])} a value "
                                      "that is not a mapping", SOURCE, key=path)
                nxt = node[k] = {}
            node = nxt
        node[path[-1]] = value
        paths.add(path)
    return tree, paths


__all__ = ["parse_override", "overrides_tree", "SOURCE"]
