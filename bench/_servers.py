"""What the throughput benches (bench_l7, bench_tls, bench_metrics) share: a
local nginx answering `return 200` on loopback, wrk against it, and `vigil
run` started and stopped between their alternated rounds."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

VIGIL = os.path.join(os.path.dirname(sys.executable), "vigil")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NO_NGINX_WRK = "nginx or wrk not installed (apt-get install nginx-light wrk)"

_NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
{servers}
}}
"""
_HTTP = '  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}'
_HTTPS = """  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {dir}/cert.pem;
    ssl_certificate_key {dir}/key.pem;
    location / {{ return 200 "ok\\n"; }}
  }}"""


def nginx_and_wrk() -> bool:
    return os.path.exists(NGINX) and shutil.which("wrk") is not None


class Nginx:
    """nginx in a temporary directory, one server per port: http = [ports] plain,
    https = [ports] over TLS (a self-signed certificate made here, cert.pem and
    key.pem in .dir).  A context manager: stopped and removed on exit."""

    def __init__(self, http=(), https=(), prefix: str = "vigil-nginx-"):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        if https:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                            "1", "-subj", "/CN=localhost", "-keyout", f"{self.dir}/key.pem",
                            "-out", f"{self.dir}/cert.pem"], check=True, capture_output=True)
        servers = ([_HTTPS.format(dir=self.dir, port=p) for p in https]
                   + [_HTTP.format(port=p) for p in http])
        self.conf = f"{self.dir}/nginx.conf"
        with open(self.conf, "w") as f:
            f.write(_NGINX_CONF.format(dir=self.dir, servers="\n".join(servers)))
        subprocess.run([NGINX, "-c", self.conf, "-p", self.dir], check=True)

    def stop(self) -> None:
        subprocess.run([NGINX, "-c", self.conf, "-p", self.dir, "-s", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wrk(url: str, secs: int):
    """wrk -t1 -c20 for secs against url: its Requests/sec, or None (with its
    output) when it printed none."""
    w = subprocess.run(["wrk", "-t1", "-c20", f"-d{secs}s", url], capture_output=True, text=True)
    for line in w.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1]), w
    return None, w


def start_vigil(args, env=None, wait: float = 60) -> subprocess.Popen:
    """`vigil run --no-store ARGS`, once it says it is running (or wait seconds
    passed) and a second more.  env: variables to set over this process's, a
    None value removes one (the default removes VIGIL_METRICS_ADDRESS)."""
    e = dict(os.environ)
    for k, v in (env if env is not None else {"VIGIL_METRICS_ADDRESS": None}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    p = subprocess.Popen([VIGIL, "run", "--no-store", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=e)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and p.poll() is None:
        if "running with" in p.stderr.readline():
            break
    time.sleep(1)
    return p


def stop_vigil(p: subprocess.Popen, timeout: float = 30) -> None:
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=timeout)
