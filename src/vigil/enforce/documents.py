"""Reading policy files: several YAML documents per file, the line of every
key, and the one error type (:class:`PolicyError`) that names
``file:line``, the document and the key path Kubernetes-style
(``spec.egress[0].to[1].ipBlock.cidr``)."""
from __future__ import annotations

from dataclasses import dataclass

import yaml

from vigil.config import expand_rules_paths
from vigil.config.errors import ConfigError
from vigil.config.source import line_of, node_lines, yaml_error


def key_path(key: tuple) -> str:
    out = ""
    for k in key:
        if isinstance(k, int):
            out += f"[{k}]"
        else:
            out += ("." if out else "") + str(k)
    return out


class PolicyError(ConfigError):
    """``file:line: Kind "ns/name": key.path[0].sub: message``."""

    def __init__(self, msg: str, file: str = "", line: int = 0, key: tuple = (), at: tuple = (),
                 what: str = ""):
        self.what = what
        super().__init__(msg, file, line, key, at)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else "")
        what = f"{self.what}: " if self.what else ""
        key = f"{key_path(self.key)}: " if self.key else ""
        return where + what + key + self.msg

    def located(self, file: str, line: int) -> "PolicyError":
        return PolicyError(self.msg, file, line, self.key, self.at, self.what)


@dataclass
class Document:
    data: dict
    file: str
    lines: dict      # key path -> line
    index: int       # 0-based position in its file
    start: int       # line of the document's first key

    def where(self, key: tuple = ()) -> str:
        return f"{self.file}:{line_of(self.lines, key) or self.start}"

    def error(self, msg: str, key: tuple = (), what: str = "") -> PolicyError:
        return PolicyError(msg, self.file, line_of(self.lines, key) or self.start, key, what=what)


def read_documents(path: str) -> list:
    """Every non-empty YAML document of a file, with lines."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise PolicyError(f"cannot read policy file: {e.strerror}", path) from None
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        datas = list(yaml.load_all(text, Loader=yaml.SafeLoader))
    except (yaml.YAMLError, TypeError, ValueError) as e:
        err = yaml_error(e, path)
        raise PolicyError(err.msg, err.file, err.line) from None
    out = []
    for i, (node, data) in enumerate(zip(nodes, datas)):
        if node is None or data is None:
            continue
        start = node.start_mark.line + 1
        if not isinstance(data, dict):
            raise PolicyError("a policy document must be a mapping (apiVersion, kind, metadata, "
                              "spec)", path, start)
        out.append(Document(data, path, node_lines(node, path), i, start))
    return out


def expand_policy_paths(paths) -> list:
    """Files as given; a directory gives its *.yaml / *.yml files in name order
    (the same expansion as rules paths)."""
    return expand_rules_paths(list(paths))


__all__ = ["PolicyError", "Document", "read_documents", "expand_policy_paths", "key_path"]
