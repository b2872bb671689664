"""`vigil policy validate|show|remove`: policy files and what the agent enforces."""
from __future__ import annotations

import json
import os

import click

from vigil.cli.common import fail


@click.group("policy")
def policy() -> None:
    """NetworkPolicy / VigilPolicy files: check them, see what is enforced, clear pins."""


@policy.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="A JSON summary on stdout.")
def validate(files, as_json):
    """Load policy files (or directories) as `vigil run --policy` would; the first
    mistake is reported as file:line with the key (exit 1)."""
    from vigil.enforce.documents import PolicyError
    from vigil.enforce.loader import load_policies
    for f in files:
        if not os.path.exists(f):
            fail(f"{f}: no such file or directory", 1)
    try:
        pols = load_policies(files)
    except PolicyError as e:
        fail(str(e), 1)
    if as_json:
        click.echo(json.dumps([{"policy": p.key, "mode": p.mode, "source": p.source,
                                "isolates": sorted(p.isolates),
                                "exec_deny": [f"{h}:{t}" for h, t in p.exec_deny]}
                               for p in pols], indent=1))
        return
    for p in pols:
        what = ",".join(sorted(p.isolates)) or "-"
        click.echo(f"{p.source}: {p.key} ({p.mode}; default-deny: {what})")
    click.echo(f"{len(pols)} policies OK")


@policy.command("show")
@click.option("--json", "as_json", is_flag=True, help="The agent's status as JSON.")
def show(as_json):
    """What the running agent enforces, per workload."""
    from vigil.enforce.kernel import PIN_ROOT
    from vigil.enforce.manager import STATUS_DIR, STATUS_FILE
    path = os.path.join(STATUS_DIR, STATUS_FILE)
    try:
        with open(path) as f:
            st = json.load(f)
    except (OSError, ValueError):
        pinned = os.path.isdir(PIN_ROOT)
        fail("no running agent enforces policies" + (
            f" (pinned enforcement is left in {PIN_ROOT}: `vigil policy remove --all`)"
            if pinned else ""), 1)
    alive = True
    try:
        os.kill(st["pid"], 0)
    except OSError:
        alive = False
    st["running"] = alive
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    click.echo(f"agent pid {st['pid']}{'' if alive else ' (not running)'}; "
               f"{len(st['policies'])} policies; {st['kernel_entries']} kernel entries; "
               f"programs: {', '.join(st['programs']) or '-'}"
               + ("; persisted" if st.get("persist") else ""))
    if st.get("file_hook"):
        why = "; ".join(f"{h}: {w}" for h, w in (st.get("file_hook_why") or {}).items())
        click.echo(f"file opens denied by: {st['file_hook']}"
                   + (" (kill at the open's exit)" if st["file_hook"] == "tracepoint" else
                      " (EPERM)") + (f"; not used: {why}" if why else ""))
    for p in st["policies"]:
        click.echo(f"  {p['policy']} ({p['mode']}) from {p['source']}")
    for w in st["workloads"]:
        enf = ", ".join(w["enforce"]) or "-"
        aud = ", ".join(w["audit"])
        click.echo(f"{w['workload']}: enforce {enf}" + (f"; audit {aud}" if aud else "")
                   + f" ({w['entries']} entries, cgroups {','.join(map(str, w['cgroups'])) or '-'})")


@policy.command("remove")
@click.option("--all", "all_", is_flag=True, required=True,
              help="Everything pinned by `vigil run --persist`.")
def remove(all_):
    """Clear enforcement left pinned in bpffs (after --persist or a crash): the
    programs detach and processes it held stopped are resumed."""
    from vigil.enforce.kernel import PIN_ROOT, clear_pins
    try:
        n = clear_pins(PIN_ROOT)
    except OSError as e:
        fail(f"{PIN_ROOT}: {e.strerror or e}", 1)
    click.echo(f"removed {n} pinned enforcement objects from {PIN_ROOT}" if n else
               f"nothing pinned in {PIN_ROOT}")
