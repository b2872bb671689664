"""`vigil fields`: every field rules and outputs can use (Falco's `falco --list`)."""
from __future__ import annotations

import json

import click


@click.command("fields")
@click.argument("prefix", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="A JSON list: name, type, falco_type, desc, arg, takes_argument, ...")
def fields(prefix, as_json) -> None:
    """List the supported fields with their type and meaning, like
    `falco --list`; PREFIX (e.g. proc. or fd.sip) keeps the fields it starts."""
    from vigil.rules.fields import field_listing
    rows = field_listing()
    if prefix:
        rows = [r for r in rows if r["name"].startswith(prefix)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        name = r["name"] + r["argument_form"] if r["arg"] != "family" else r["name"]
        click.echo(f"{name:<34} {r['falco_type']:<8} {r['desc']}")
