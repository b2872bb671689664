"""Where the tests find Falco's own rules files (never copied into vigil):
$VIGIL_FALCO_RULES_DIR, else <repo>/../shared/falco-rules, else
/work/shared/falco-rules.  Imported by the test modules (pytest puts tests/ on
sys.path)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STABLE, INCUBATING, SANDBOX = ("falco_rules.yaml", "falco-incubating_rules.yaml",
                               "falco-sandbox_rules.yaml")
# each file is loaded after the ones before it, as Falco's users do
CHAIN = (STABLE, INCUBATING, SANDBOX)


def falco_dir() -> Path | None:
    env = os.environ.get("VIGIL_FALCO_RULES_DIR")
    for d in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "falco-rules",
                                              Path("/work/shared/falco-rules")]:
        if (d / STABLE).is_file():
            return d
    return None


def falco_files(upto: str) -> list:
    """The files up to and including `upto`, in load order (skips the test if
    the files are not there)."""
    d = falco_dir()
    if d is None:
        pytest.skip("Falco's rules files not found (set VIGIL_FALCO_RULES_DIR)")
    files = CHAIN[:CHAIN.index(upto) + 1]
    return [d / f for f in files]
