"""Reading vigil.yaml: the data, and the line of every key for error messages."""
from __future__ import annotations

import yaml

from vigil.config.errors import ConfigError


def parse_with_lines(text: str, name: str):
    """(data, {key path tuple: line}) for a YAML mapping."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise yaml_error(e, name) from None
    if node is None:
        return {}, {}
    lines = node_lines(node)
    try:
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, TypeError, ValueError) as e:
        # e.g. a tag the safe loader refuses, a key YAML cannot hash
        raise yaml_error(e, name) from None
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of sections", name, 1)
    return data, lines


def node_lines(node) -> dict:
    """{key path tuple: line} of every key and item of a composed YAML node."""
    lines = {}

    def walk(n, path):
        lines.setdefault(path, n.start_mark.line + 1)   # a key's own line wins
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if not isinstance(k, yaml.ScalarNode):
                    continue        # not a usable key; loading says so
                key = k.value
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))

    walk(node, ())
    return lines


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
