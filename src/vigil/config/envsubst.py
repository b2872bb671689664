"""``${NAME}`` and ``${NAME:-default}`` in vigil.yaml values, from the environment
(as falco.yaml allows): a DaemonSet passes a Secret's webhook URL or token as
environment variables and the ConfigMap's vigil.yaml names them.

A value that is one reference as a whole is read as YAML (``${ENABLED:-false}``
is the boolean false, as ``-o key=value`` values are); a reference inside a
longer string is text.  An unset variable without a default is a ConfigError
naming the key."""
from __future__ import annotations

import os
import re

import yaml

from vigil.config.errors import ConfigError

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _value(m: re.Match, env, key: tuple) -> str:
    name, default = m.group(1), m.group(2)
    v = env.get(name)
    if v is None:
        if default is None:
            raise ConfigError(f"environment variable {name} is not set (write ${{{name}:-}} "
                              "for an empty default)", key=key)
        v = default
    return v


def expand(tree, env=None, key: tuple = ()):
    """``tree`` with every reference in its string values replaced."""
    env = os.environ if env is None else env
    if isinstance(tree, dict):
        return {k: expand(v, env, key + (k,)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [expand(v, env, key + (i,)) for i, v in enumerate(tree)]
    if not isinstance(tree, str) or "${" not in tree:
        return tree
    whole = _REF.fullmatch(tree)
    if whole:
        text = _value(whole, env, key)
        try:
            return yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            return text
    return _REF.sub(lambda m: _value(m, env, key), tree)


__all__ = ["expand"]
