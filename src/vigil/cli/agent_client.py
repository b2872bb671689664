"""Reading a running agent from the command line: its address (``--metrics-url``, else
``metrics.address`` of vigil.yaml), ``/metrics`` parsed into samples, and JSON paths,
with one clear error when no agent answers."""
from __future__ import annotations

import click

from vigil.cli.common import fail


def metrics_url_option(fn):
    fn = click.option("-c", "--config", type=click.Path(dir_okay=False), default=None,
                      help="vigil.yaml to read metrics.address from (default "
                           "/etc/vigil/vigil.yaml when present).")(fn)
    return click.option("--metrics-url", default=None, metavar="URL",
                        help="The agent's metrics endpoint (default: http://<metrics.address>, "
                             "127.0.0.1:9476).")(fn)


def base_url(metrics_url, config_path) -> str:
    """http://host:port of the agent (without a path)."""
    if metrics_url:
        url = metrics_url if "://" in metrics_url else "http://" + metrics_url
        for suffix in ("/metrics", "/"):
            if url.endswith(suffix):
                url = url[: -len(suffix)]
        return url
    from vigil.config import ConfigError, load_config
    try:
        addr = load_config(config_path)["metrics"]["address"]
    except ConfigError as e:
        fail(str(e))
    if not addr:
        fail("metrics.address is \"\" in the configuration (the agent serves no metrics): "
             "pass --metrics-url")
    host, _, port = addr.rpartition(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("[::]",):
        host = "[::1]"
    return f"http://{host}:{port}"


def get(base: str, path: str, timeout: float = 5.0) -> "requests.Response":
    import requests     # here: every other command starts without it (0.1 s of imports)
    try:
        r = requests.get(base + path, timeout=timeout)
    except requests.RequestException as e:
        fail(f"no vigil agent answers at {base}{path}: {type(e).__name__} (is `vigil run` "
             "running with its metrics on? see --metrics-url)")
    if r.status_code != 200:
        fail(f"{base}{path} answered {r.status_code}: {r.text.strip()[:200]}")
    return r


def samples(text: str, names) -> list:
    """[(sample name, labels dict, value)] of the families named (without suffixes)."""
    out = []
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        if fam.name in names:
            out.extend((s.name, s.labels, s.value) for s in fam.samples)
    return out


__all__ = ["metrics_url_option", "base_url", "get", "samples"]
