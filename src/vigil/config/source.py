"""Reading vigil.yaml (and policy files): the data, and the line of every key
for error messages."""
from __future__ import annotations

import yaml

from vigil.config.errors import ConfigError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)     # libyaml when there


def parse_with_lines(text: str, name: str):
    """(data, {key path tuple: line}) for a YAML mapping."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except (yaml.YAMLError, RecursionError) as e:
        raise yaml_error(e, name) from None
    if node is None:
        return {}, {}
    lines = node_lines(node, name)
    try:
        data = yaml.load(text, Loader=_LOADER)
    except (yaml.YAMLError, TypeError, ValueError, RecursionError) as e:
        # e.g. a tag the safe loader refuses, a key YAML cannot hash
        raise yaml_error(e, name) from None
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of sections", name, 1)
    return data, lines


def node_lines(node, name: str = "") -> dict:
    """{key path tuple: line} of every key and item of a composed YAML node;
    a YAML alias that refers to itself is an error (named after ``name``)."""
    lines = {}
    seen: set = set()           # nodes walked: an alias is walked once
    stack: list = [(node, ())]  # iterative: nesting depth is the file's business
    while stack:
        n, path = stack.pop()
        lines.setdefault(path, n.start_mark.line + 1)   # a key's own line wins
        if id(n) in seen:
            if _reaches(n, n):
                raise ConfigError("a YAML alias refers to itself", name,
                                  n.start_mark.line + 1)
            continue
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            for k, v in reversed(n.value):
                if not isinstance(k, yaml.ScalarNode):
                    continue        # not a usable key; loading says so
                lines[path + (k.value,)] = k.start_mark.line + 1
                stack.append((v, path + (k.value,)))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in reversed(list(enumerate(n.value))):
                stack.append((v, path + (i,)))
    return lines


def _reaches(start, target) -> bool:
    """Whether ``target`` is inside ``start`` (a cycle through aliases)."""
    todo, done = [start], set()
    while todo:
        n = todo.pop()
        if id(n) in done:
            continue
        done.add(id(n))
        kids = (n.value if isinstance(n, yaml.SequenceNode) else
                [x for kv in n.value for x in kv] if isinstance(n, yaml.MappingNode) else [])
        for c in kids:
            if c is target:
                return True
            todo.append(c)
    return False


def yaml_error(e: Exception, name: str) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    line = mark.line + 1 if mark else 0
    return ConfigError(f"not valid YAML: {getattr(e, 'problem', None) or e}", name, line)


def line_of(lines: dict, keypath: tuple) -> int:
    """The line of the key, else of its nearest parent that has one (0: none)."""
    for i in range(len(keypath), 0, -1):
        if keypath[:i] in lines:
            return lines[keypath[:i]]
    return 0


__all__ = ["parse_with_lines", "line_of", "node_lines", "yaml_error"]
