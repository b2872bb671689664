"""Falco-compatible rules engine: load Falco rules files, evaluate vigil events."""
import glob
import os

from vigil.rules.engine import RuleEngine
from vigil.rules.loader import RulesError, RulesWarning, RuleSet

__all__ = ["RuleEngine", "RulesError", "RulesWarning", "RuleSet", "default_rules_files"]

DEFAULT_RULES_DIR = os.path.join(os.path.dirname(__file__), "default")


def default_rules_files() -> list:
    """The shipped ruleset's files, in load order."""
    return sorted(glob.glob(os.path.join(DEFAULT_RULES_DIR, "*.yaml")))
