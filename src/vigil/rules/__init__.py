"""Falco-compatible rules engine: load Falco rules files, evaluate vigil events."""
from .engine import RuleEngine
from .loader import RulesError, RulesWarning, RuleSet

__all__ = ["RuleEngine", "RulesError", "RulesWarning", "RuleSet"]
