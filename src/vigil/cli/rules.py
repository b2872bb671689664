"""`vigil rules ...`: validate and list Falco-format rules files."""
from __future__ import annotations

import json
import sys

import click

from vigil.cli.common import Size
from vigil.rules.engine import RuleEngine
from vigil.rules.loader import RulesError

from vigil.config import expand_rules_paths
from vigil.rules import default_rules_files


def _files(paths) -> list:
    """Files as given, directories as their *.yaml/*.yml in name order (as `run -r`)."""
    out = expand_rules_paths(list(paths))
    if not out:
        click.echo(f"error: no rules files (*.yaml, *.yml) in {', '.join(paths)}", err=True)
        sys.exit(1)
    return out


@click.group("rules")
def rules() -> None:
    """Work with Falco-format rules files."""


@rules.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.option("--min-priority", default="debug", show_default=True,
              help="Skip rules less severe than this.")
@click.option("--max-size", type=Size(), default="4MiB", show_default=True,
              help="Refuse a rules file larger than this (vigil.yaml: rules_max_size).")
def validate(files, as_json, min_priority, max_size) -> None:
    """Load FILE... in order (as one ruleset; a directory stands for its
    *.yaml/*.yml in name order) and report every error, each with file:line;
    exit 0 only if everything loads."""
    files = _files(files)
    try:
        eng = RuleEngine(min_priority=min_priority, max_file_bytes=max_size)
    except ValueError as e:
        raise click.UsageError(f"--min-priority: {e}") from None
    errors = []
    try:
        eng.load(files)
    except RulesError as e:
        errors = e.errors
    if as_json:
        out = {
            "files": files,
            "ok": not errors,
            "rules_loaded": len(eng.rules) if not errors else 0,
            "rules_skipped": [{"rule": n, "reason": why} for n, why in eng.skipped] if not errors else [],
            "warnings": [w.to_dict() for w in (eng.warnings if not errors else eng.ruleset.warnings)],
            "errors": [e.to_dict() for e in errors],
        }
        if not errors:
            out["required_kinds"] = sorted(k.label for k in eng.required_kinds())
            out["open_path_prefixes"] = eng.open_path_prefixes()
            out["open_path_filter"] = eng.open_path_filter()
        click.echo(json.dumps(out, indent=2))
    else:
        for w in (eng.warnings if not errors else eng.ruleset.warnings):
            click.echo(f"warning: {w}", err=True)
        for e in errors:
            click.echo(f"error: {e}", err=True)
        if not errors:
            click.echo(f"{', '.join(files)}: ok ({len(eng.rules)} rules loaded, "
                       f"{len(eng.skipped)} skipped, {len(eng.warnings)} warnings)")
    sys.exit(1 if errors else 0)


@rules.command("list")
@click.option("-r", "--rules", "rules_files", multiple=True, type=click.Path(),
              help="Rules file or directory (repeatable); default: vigil's default ruleset.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--min-priority", default="debug", show_default=True)
def list_rules(rules_files, as_json, min_priority) -> None:
    """List the rules a ruleset defines."""
    files = _files(rules_files) if rules_files else default_rules_files()
    if not files:
        click.echo("no rules files given and no default ruleset installed", err=True)
        sys.exit(1)
    try:
        eng = RuleEngine.from_files(files, min_priority=min_priority)
    except RulesError as e:
        for err in e.errors:
            click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except ValueError as e:
        raise click.UsageError(f"--min-priority: {e}") from None
    rows = []
    for r in eng.rules:
        rows.append({"rule": r.name, "priority": r.priority, "enabled": r.enabled, "tags": r.tags,
                     "kinds": sorted(k.label for k in r.kinds), "file": r.file, "line": r.line,
                     "desc": r.desc})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        flag = "" if row["enabled"] else " (disabled)"
        click.echo(f"{row['priority']:<13} {row['rule']}{flag}  [{', '.join(row['kinds'])}]")
