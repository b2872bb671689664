"""`vigil trace`: watch what processes do, tracepoint-only, like the BCC tools."""
from __future__ import annotations

import click

from vigil.cli.common import (Duration, duration_option, fail, setup_logging, start_or_fail,
                              verbose_option)
from vigil.cli.trace_tools import TOOLS
from vigil.cli.trace_views import TRACE_KINDS, TracePrinter


@click.command("trace")
@click.argument("view", type=click.Choice(sorted(TRACE_KINDS) + sorted(TOOLS)), default="all")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--pid", "pids", type=int, multiple=True, help="Only this pid and its descendants. Repeatable.")
@click.option("--comm", "comms", multiple=True, help="Only processes with this name. Repeatable.")
@click.option("--uid", "uids", type=int, multiple=True, help="Only this user id. Repeatable.")
@duration_option
@click.option("--containers", is_flag=True, help="Add container and Kubernetes pod columns/keys.")
@click.option("--hold", type=Duration(maximum=10), default=0.5, show_default=True,
              help="With --containers: how long (at most 10s) an event may wait for a new "
                   "container's metadata (runtime API / CLI) before it is printed without it.")
@click.option("--host-only", is_flag=True, help="Only host processes (decided in the kernel).")
@click.option("--containers-only", is_flag=True, help="Only processes in containers (decided in the kernel).")
@click.option("--open-prefix", "open_prefixes", multiple=True,
              help="Only opens below this path prefix (filtered in the kernel). Repeatable.")
@click.option("--dns-port", "dns_ports", type=int, multiple=True,
              help="UDP ports decoded as DNS (default 53). Repeatable.")
@click.option("--args-max", type=click.IntRange(16, 4096), default=4096, show_default=True,
              help="Bytes of argv captured per exec.")
@click.option("--interval", type=Duration(), default=None,
              help="biolatency, runqlat, syscount: print (and start over) every interval "
                   "(default: once, at the end).")
@click.option("--disks", is_flag=True, help="biolatency: one histogram per disk.")
@click.option("--latency", is_flag=True, help="syscount: also the time spent in each syscall.")
@verbose_option()
def trace(view, as_json, pids, comms, uids, duration, containers, hold, host_only, containers_only,
          open_prefixes, dns_ports, args_max, interval, disks, latency, verbose):
    """Print events as they happen: VIEW is exec, open, connect, accept, dns,
    file, net or all (default).  Columns like execsnoop/opensnoop/tcpconnect,
    or --json.  BCC's biolatency, runqlat, syscount, tcpconnlat, tcplife and
    tcpretrans print what they print (log2 histograms as bars; --interval)."""
    setup_logging(verbose)
    if view in TOOLS:
        from vigil.cli.trace_tools import run_tool
        run_tool(view, interval, duration, per_disk=disks, latency=latency)
        return
    if host_only and containers_only:
        fail("--host-only and --containers-only exclude each other", 1)
    from vigil.kernel.filters import KernelFilters
    from vigil.pipeline import Pipeline

    resolver = None
    if containers:
        from vigil.state.containers.resolver import ContainerResolver
        resolver = ContainerResolver(hold=hold)
        resolver.seed()
    scope = "host" if host_only else "containers" if containers_only else "all"
    filters = KernelFilters(TRACE_KINDS[view], args_max=args_max, scope=scope,
                            open_prefixes=list(open_prefixes) or None,
                            dns_ports=dns_ports or (53,))
    pipe = Pipeline(filters, containers=resolver, ignore_children=True)
    printer = TracePrinter(view, as_json=as_json, pids=pids, comms=comms, uids=uids,
                           containers=containers, proctable=pipe.proctable)
    pipe.add_handler(printer)
    pipe.batch_end.append(printer.flush)
    pipe.add_ticker(lambda now: printer.flush())  # held container events
    start_or_fail(pipe, [resolver.stop] if resolver is not None else [])
    if not pipe.filters.active_kinds() & TRACE_KINDS[view]:
        pipe.stop()
        if resolver is not None:
            resolver.stop()
        fail(f"no sensor for '{view}' could be attached on this kernel (see the warnings above)")
    try:
        printer.header()
        pipe.run(duration)
    except BrokenPipeError:
        pass
    finally:
        st = pipe.stats()
        pipe.stop()
        if resolver is not None:
            resolver.stop()
            st["containers"] = resolver.stats()
    dropped = st.get("dropped", 0)
    if dropped or verbose:
        click.echo(f"vigil: {st['events']} events, {dropped} dropped in the kernel", err=True)
    if verbose and resolver is not None:
        c = st["containers"]
        click.echo(f"vigil: containers: {c['containers']} known, {c['fetches']} fetches, "
                   f"{c['fetch_empty']} empty, {c['timeouts']} events released before their "
                   f"metadata (hold {resolver.hold}s)", err=True)
