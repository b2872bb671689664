"""`vigil profiles list|show|export|import|lock|reset|learn|policy`: behavioural profiles."""
from __future__ import annotations

import json
import time

import click

from vigil.cli.common import Duration, fail

REQUEST_WAIT = 15.0      # s the running agent gets to apply a request


def _book_path(store, config):
    if store:
        return store
    from vigil.config import ConfigError, load_config
    from vigil.profiles.book import default_book_path
    try:
        return default_book_path(load_config(config))
    except ConfigError as e:
        fail(str(e), 1)


def _open(store, config, readonly=True):
    from vigil.alerts.store import StoreError
    from vigil.profiles.book import ProfileBook
    path = _book_path(store, config)
    try:
        return ProfileBook(path, readonly=readonly)
    except StoreError as e:
        fail(str(e), 1)


def store_options(fn):
    fn = click.option("--store", default=None, metavar="PATH",
                      help="The store file (default: profiles.store, else store.path of the "
                           "config, else /var/lib/vigil/alerts.db).")(fn)
    return click.option("-c", "--config", default=None, type=click.Path(dir_okay=False),
                        help="vigil.yaml (default /etc/vigil/vigil.yaml when it exists).")(fn)


def _profile_doc(book, workload) -> dict:
    for key, _status, doc in book.summary():
        if key == workload:
            return doc
    fail(f"no profile {workload!r} (see `vigil profiles list`)", 1)


def _submit(book, action, workload="", arg=""):
    """A request for the running agent (applied at its next tick), or applied
    here when no agent runs."""
    if book.agent_alive():
        rid = book.request(action, workload, arg)
        deadline = time.monotonic() + REQUEST_WAIT
        while book.pending(rid):
            if time.monotonic() > deadline:
                fail(f"the agent did not take the request in {REQUEST_WAIT:g}s; it stays "
                     "queued and is applied when the agent gets to it", 1)
            time.sleep(0.1)
        click.echo(f"{action}: applied by the running agent")
        return
    from vigil.profiles.book import apply_request
    book.request(action, workload, arg)
    profiles = book.load_all()
    settings: dict = {}
    msgs, removed = [], []

    def apply(a, w, x):
        msg, gone = apply_request(profiles, a, w, x, time.time_ns(), settings)
        removed.extend(gone)
        return msg
    msgs = [apply(*req) for req in book.take_requests()]
    if "window" in settings:
        book.set_setting("window", settings["window"])
    book.save([p for p in profiles.values() if p.dirty])
    book.delete(removed)
    for m in msgs:
        click.echo(m)


@click.group("profiles")
def profiles() -> None:
    """Behavioural profiles: each workload's learned normal (docs/PROFILES.md)."""


@profiles.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per profile.")
def list_(store, config, as_json):
    """Every profile: status, partial reason, entries, replicas, window."""
    book = _open(store, config)
    rows = book.summary()
    now = time.time_ns()
    if as_json:
        for key, status, d in rows:
            click.echo(json.dumps({"workload": key, "status": status, "partial": d["partial"],
                                   "entries": _entries(d), "replicas": d["replicas"]}))
        return
    click.echo(f"{'WORKLOAD':50} {'STATUS':9} {'ENTRIES':>7} {'REPL':>4} {'LEFT':>8}  PARTIAL")
    for key, status, d in rows:
        left = "-"
        if status == "learning":
            s = max(0.0, d["window_start"] / 1e9 + d["window"] - now / 1e9)
            left = f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m"
        click.echo(f"{key:50} {status:9} {_entries(d):7} {d['replicas']:4} {left:>8}  "
                   f"{d['partial'] or '-'}")


def _entries(d) -> int:
    return sum(len(d[k]) for k in ("execs", "files", "prefixes", "egress", "dns", "listen",
                                   "ingress"))


@profiles.command("show")
@store_options
@click.argument("workload")
@click.option("--json", "as_json", is_flag=True, help="As JSON instead of YAML.")
def show(store, config, workload, as_json):
    """One profile, everything it learned."""
    from vigil.profiles.documents import to_documents
    d = _profile_doc(_open(store, config), workload)
    click.echo(json.dumps(d, indent=1) if as_json else to_documents([d]), nl=as_json)


@profiles.command("export")
@store_options
@click.argument("workloads", nargs=-1)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file (default: stdout).")
def export(store, config, workloads, output):
    """Profiles as YAML (WorkloadProfile documents; all of them without WORKLOADS)."""
    from vigil.profiles.documents import to_documents
    book = _open(store, config)
    docs = [_profile_doc(book, w) for w in workloads] if workloads else \
        [d for _k, _s, d in book.summary()]
    text = to_documents(docs)
    if output:
        with open(output, "w") as f:
            f.write(text)
        click.echo(f"{len(docs)} profile(s) written to {output}", err=True)
    else:
        click.echo(text, nl=False)


@profiles.command("import")
@store_options
@click.argument("file", type=click.Path(dir_okay=False))
def import_(store, config, file):
    """Add the profiles of a YAML file (merged into a profile of the same workload;
    a locked one locks it)."""
    from vigil.enforce.documents import PolicyError
    from vigil.profiles.documents import read_profiles
    try:
        docs = read_profiles(file)
    except PolicyError as e:
        fail(str(e), 1)
    _submit(_open(store, config, readonly=False), "import", "", docs)


@profiles.command("lock")
@store_options
@click.argument("workload", required=False, default="")
@click.option("--all", "all_", is_flag=True, help="Every profile.")
def lock(store, config, workload, all_):
    """End learning now: deviations alert from here on."""
    _submit(_open(store, config, readonly=False), "lock", _one(workload, all_))


@profiles.command("reset")
@store_options
@click.argument("workload", required=False, default="")
@click.option("--all", "all_", is_flag=True, help="Every profile.")
def reset(store, config, workload, all_):
    """Forget a profile: it learns again from its next event."""
    _submit(_open(store, config, readonly=False), "reset", _one(workload, all_))


def _one(workload, all_) -> str:
    if bool(workload) == bool(all_):
        fail("name one WORKLOAD, or --all", 2)
    return workload


@profiles.command("learn")
@store_options
@click.argument("workload", required=False, default="")
@click.option("--for", "window", type=Duration(), required=True,
              help="The learning window (10m, 1h, 24h).")
def learn(store, config, workload, window):
    """Set the learning window: of WORKLOAD (which learns again from now if it was
    locked), or of every profile still learning and every new one."""
    if window <= 0:
        fail("--for: expected a duration above 0", 2)
    _submit(_open(store, config, readonly=False), "learn", workload, window)


@profiles.command("policy")
@store_options
@click.argument("workload")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file (default: stdout).")
@click.option("--enforce", is_flag=True,
              help="Enforcing policies (default: audit mode, alerts only).")
@click.option("--ingress-any-peer", is_flag=True,
              help="Let any peer reach the listening ports (default: the peers seen).")
def policy(store, config, workload, output, enforce, ingress_any_peer):
    """A NetworkPolicy and a VigilPolicy (exec allow-list) from what WORKLOAD did."""
    from vigil.profiles.policy import PolicyFromProfileError, policy_yaml
    d = _profile_doc(_open(store, config), workload)
    try:
        text = policy_yaml(d, enforce, ingress_any_peer)
    except PolicyFromProfileError as e:
        fail(str(e), 1)
    if output:
        with open(output, "w") as f:
            f.write(text)
        click.echo(f"policies for {workload} written to {output}", err=True)
    else:
        click.echo(text, nl=False)


__all__ = ["profiles"]
