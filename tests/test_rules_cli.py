"""`vigil rules validate` and `vigil rules list`."""
import json
import os

from click.testing import CliRunner

from vigil.cli.main import main

DATA = os.path.join(os.path.dirname(__file__), "data", "rules")
SAMPLE = os.path.join(DATA, "sample_rules.yaml")
OVERRIDES = os.path.join(DATA, "sample_overrides.yaml")


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_validate_ok():
    r = run("rules", "validate", SAMPLE, OVERRIDES)
    assert r.exit_code == 0, r.output
    assert "6 rules loaded" in r.output


def test_validate_json_summary():
    r = run("rules", "validate", "--json", SAMPLE)
    assert r.exit_code == 0
    out = json.loads(r.output)
    assert out["ok"] is True and out["rules_loaded"] == 6 and out["errors"] == []
    assert out["files"] == [SAMPLE]
    assert {"rule": "K8s audit rule", "reason": "source k8s_audit"} in out["rules_skipped"]
    assert any("k8s_audit" in w["message"] for w in out["warnings"])
    assert set(out["required_kinds"]) == {"exec", "open", "connect", "ptrace"}


def test_validate_error_json(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: R\n  desc: d\n  condition: proc.nam = x\n  output: o\n  priority: INFO\n")
    r = run("rules", "validate", "--json", SAMPLE, str(bad))
    assert r.exit_code == 1
    out = json.loads(r.output)
    assert out["ok"] is False
    (err,) = out["errors"]
    assert err["file"] == str(bad) and err["line"] == 3 and "unknown field 'proc.nam'" in err["message"]
    r = run("rules", "validate", str(bad))
    assert r.exit_code == 1
    assert f"{bad}:3:" in r.output


def test_list_rules():
    r = run("rules", "list", "--rules", SAMPLE)
    assert r.exit_code == 0
    assert "Terminal shell in container" in r.output and "(disabled)" in r.output
    r = run("rules", "list", "--rules", SAMPLE, "--json")
    rows = json.loads(r.output)
    assert rows[0]["rule"] == "Terminal shell in container" and rows[0]["kinds"] == ["exec"]
