"""Reading YAML with line numbers: mappings and sequences that remember the
line each of their values starts on, so every rules error can name it."""
from __future__ import annotations

import yaml

from vigil.rules.errors import RulesError


class LDict(dict):
    """A mapping that remembers where it and each of its values start (1-based lines)."""
    line = 0
    key_lines: dict = {}

    def line_of(self, key) -> int:
        return self.key_lines.get(key, self.line)


class LList(list):
    line = 0
    item_lines: list = []

    def line_of(self, i) -> int:
        return self.item_lines[i] if 0 <= i < len(self.item_lines) else self.line


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):   # libyaml when there
    pass


# Like yaml-cpp (Falco), plain scalars are strings: `0644` stays "0644" and `true` is
# decoded where a boolean is expected.
_Loader.yaml_implicit_resolvers = {}
_DEFAULT_TAGS = {yaml.ScalarNode: "tag:yaml.org,2002:str",
                 yaml.SequenceNode: "tag:yaml.org,2002:seq",
                 yaml.MappingNode: "tag:yaml.org,2002:map"}


def _resolve(self, kind, value, implicit):
    # what the resolver gives without implicit resolvers, without its
    # per-node bookkeeping (a quarter of the time of a large file)
    return _DEFAULT_TAGS[kind]


_Loader.resolve = _resolve


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    d = LDict()
    d.line = node.start_mark.line + 1
    d.key_lines = {}
    for k_node, v_node in node.value:
        k = loader.construct_object(k_node, deep=True)
        try:
            hash(k)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping key is not a scalar", k_node.start_mark) from None
        d[k] = loader.construct_object(v_node, deep=True)
        d.key_lines[k] = v_node.start_mark.line + 1
    return d


def _construct_seq(loader, node):
    out = LList(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def parse_yaml(text: str, name: str):
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        what = e.problem or e.context or "invalid YAML"
        raise RulesError(f"invalid YAML: {what}", name, line) from None
    except yaml.YAMLError as e:
        raise RulesError(f"invalid YAML: {e}", name, None) from None
    except RecursionError:
        raise RulesError("invalid YAML: nested too deeply", name, None) from None
    except Exception as e:  # construction of odd documents
        raise RulesError(f"invalid YAML: {e}", name, None) from None
