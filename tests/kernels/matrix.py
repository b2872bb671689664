"""`make test-kernels`: the kernel smoke suite on each kernel, and the matrix of the results.

    .venv/bin/python tests/kernels/matrix.py [--bpf-dir DIR] [ROW ...]   (rows: 6.1 6.1-cloud 6.12 host)

Each Debian kernel (tests/kernels/kernels.py) is booted in QEMU by virtme-ng, in TCG (no KVM),
sharing this host's root file system read-write; the guest runs ``pytest tests/kernels`` from
this checkout and writes its results as JSON (tests/kernels/conftest.py) where the host reads
them.  The ``host`` row runs the same suite here, without a VM.  One VM at a time: TCG on two
cores is slow enough.  The matrix (kernel x feature: works / degraded / FAILED, with why) is
printed and written to bench/results/kernels.md (and kernels.json beside it).

Exit status: 1 when a row FAILED or did not report, else 0 (degraded is not failure: it is
the kernel saying what it lacks).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import kernels  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VM_TIMEOUT = int(os.environ.get("VIGIL_KERNEL_VM_TIMEOUT", "1200"))
VM_MEMORY = os.environ.get("VIGIL_KERNEL_VM_MEMORY", "3G")
JOBS = int(os.environ.get("VIGIL_KERNEL_JOBS", "2"))     # rows run at once
ROOT_FS = os.environ.get("VIGIL_KERNEL_ROOTFS", "auto")   # auto | virtiofs | 9p


def log(msg: str) -> None:
    print(msg, flush=True)


def suite_command(out: Path, bpf_dir: str | None, tests=None) -> list:
    env = {"VIGIL_KERNELS_OUT": str(out), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    if bpf_dir:
        env["VIGIL_BPF_DIR"] = bpf_dir
    py = str(ROOT / ".venv" / "bin" / "python")
    return (["env"] + [f"{k}={v}" for k, v in env.items()]
            + [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "console_output_style=classic",
               # pyproject's 300 s per test is too short for an agent's start under TCG
               "-o", f"timeout={VM_TIMEOUT}", "-rfE", "--tb=short", "--durations=12",
               *(tests or [str(HERE)])])


def run_host(out: Path, bpf_dir: str | None, tests=None) -> dict:
    t0 = time.monotonic()
    r = subprocess.run(suite_command(out, bpf_dir, tests), cwd=ROOT, capture_output=True, text=True)
    total = time.monotonic() - t0
    (out.with_suffix(".log")).write_text(r.stdout + r.stderr)
    return {"row": "host", "what": "this host's own kernel (no VM)", "package": "",
            "boot_seconds": 0.0, "total_seconds": round(total, 1), "rc": r.returncode,
            "tail": (r.stdout + r.stderr).strip().splitlines()[-3:]}


VIRTIOFSD = "/usr/lib/qemu/virtiofsd"      # qemu-system-common's (the C one)


def has_9p(k: "kernels.Kernel") -> bool:
    """Whether the kernel can mount the host's root over 9p (its config says)."""
    config = k.vmlinuz.parent / k.vmlinuz.name.replace("vmlinuz-", "config-")
    try:
        return "CONFIG_NET_9P=" in config.read_text()
    except OSError:
        return True


def start_virtiofsd(sock: Path) -> tuple:
    """(the virtiofsd process serving / on sock, the QEMU options that give the guest
    it as tag ROOTFS, on memory QEMU shares with it)."""
    if sock.exists():
        sock.unlink()
    p = subprocess.Popen([VIRTIOFSD, f"--socket-path={sock}", "-o", "source=/",
                          "-o", "cache=always", "-o", "sandbox=chroot"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    opts = (f"-chardev socket,id=vfs,path={sock} -device vhost-user-fs-pci,chardev=vfs,tag=ROOTFS "
            f"-object memory-backend-memfd,id=mem,size={VM_MEMORY},share=on -numa node,memdev=mem")
    return p, opts


# the guests' own directories: virtme-ng puts an overlay on the host's /tmp, so what a guest
# writes there never reaches the host
GUEST_PRIVATE = ("/tmp",)
EXCHANGE = Path(os.environ.get("VIGIL_KERNEL_EXCHANGE", "/var/lib/vigil/kernels-exchange"))


def exchange_path(out: Path) -> Path:
    """Where the guest writes its results: ``out`` itself, unless it is in a directory the
    guest has its own of (a checkout cloned under /tmp), then a shared one (copied back)."""
    if not any(str(out).startswith(d + "/") for d in GUEST_PRIVATE):
        return out
    d = EXCHANGE / str(os.getpid())
    d.mkdir(parents=True, exist_ok=True)
    return d / out.name


def run_vm(k: "kernels.Kernel", out: Path, bpf_dir: str | None, tests=None) -> dict:
    final, out = out, exchange_path(out)
    out.unlink(missing_ok=True)
    inner = " ".join(shlex.quote(a) for a in suite_command(out, bpf_dir, tests))
    # the guest's clock (from the emulated RTC) stamps the suite's start: boot = start - launch
    guest = f"cd {shlex.quote(str(ROOT))} && date +%s.%N > {shlex.quote(str(out))}.start && {inner}"
    # -v: the guest's console (kernel log, then the suite's output) goes to the log; without it
    # this QEMU has no script I/O port and the output is lost
    cmd = [str(ROOT / ".venv" / "bin" / "vng"), "-v", "-r", str(k.vmlinuz), "--disable-kvm",
           "--memory", VM_MEMORY, "--cpus", "2", "--rw"]
    if k.line.append:
        cmd += ["--append", k.line.append]
    vfsd = None
    if ROOT_FS == "virtiofs" or (ROOT_FS == "auto" and (os.access(VIRTIOFSD, os.X_OK)
                                                        or not has_9p(k))):
        # the host's root over virtio-fs, served by QEMU's own virtiofsd (as root: virtme-ng
        # only takes the Rust one, which Debian 12 does not package), on the tag virtme-ng's
        # init mounts first: the suite runs in half the time it takes over 9p (its Python
        # imports, every command's start), and a kernel without 9p (Debian's cloud kernel)
        # boots at all; else 9p
        sock = final.with_suffix(".vfs.sock")
        vfsd, sock_opts = start_virtiofsd(sock)
        cmd += [f"--qemu-opts={sock_opts}"]
    cmd += ["--exec", guest]
    logf = final.with_suffix(".log")
    launched = time.time()
    t0 = time.monotonic()
    rc = None
    with open(logf, "w") as f:
        # vng runs virtme-run from PATH; its own session, so a timeout stops QEMU too
        env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=f,
                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(VM_TIMEOUT)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                time.sleep(2)
            p.wait()
            if vfsd is not None:
                vfsd.kill()
                vfsd.wait()
                final.with_suffix(".vfs.sock").unlink(missing_ok=True)
    total = time.monotonic() - t0
    start = Path(f"{out}.start")
    boot = None
    if start.exists():
        try:
            boot = round(float(start.read_text().strip()) - launched, 1)
        except ValueError:
            pass
        start.unlink()
    if out != final and out.exists():
        shutil.move(str(out), str(final))
    return {"row": k.line.name, "what": k.line.what, "package": k.package,
            "append": k.line.append, "boot_seconds": boot, "total_seconds": round(total, 1),
            "rc": rc, "tail": logf.read_text(errors="replace").strip().splitlines()[-3:]}


def status_of(res: dict | None) -> str:
    if not res or "features" not in res:
        return "no report"
    st = {f["status"] for f in res["features"].values()}
    return "FAILED" if "FAILED" in st else "degraded" if "degraded" in st else "works"


def render(rows: list, cmdline: str, load: str) -> str:
    features = []
    for r in rows:
        for name in (r.get("result") or {}).get("features", {}):
            if name not in features:
                features.append(name)
    lines = ["# Kernel matrix", "",
             f"Command: `{cmdline}` (docs/KERNELS.md). Load average at the start: {load}.",
             "Boot = VM launch to the suite's first command (guest clock); suite = pytest inside;",
             "total = the whole VM run. TCG (no KVM), 2 vCPUs, " + VM_MEMORY + ".", "",
             "| kernel (`uname -r`) | boot s | suite s | total s | "
             + " | ".join(features) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in features) + " |"]
    for r in rows:
        res = r.get("result") or {}
        name = res.get("uname_r") or f"({r['row']}: no report)"
        extra = f" `{r['append']}`" if r.get("append") else ""
        cells = []
        for f in features:
            row = res.get("features", {}).get(f)
            cells.append(row["status"] if row else "—")
        boot = "—" if r.get("boot_seconds") is None else f"{r['boot_seconds']:.0f}"
        suite = res.get("suite_seconds")
        suite = "—" if suite is None else f"{suite:.0f}"
        lines.append(f"| {r['row']}: {name}{extra} | {boot} | {suite} | {r['total_seconds']:.0f} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        res = r.get("result") or {}
        lines.append(f"## {r['row']}: {res.get('uname_r', 'no report')}")
        lines.append("")
        lines.append(f"{r['what']}" + (f"; package `{r['package']}`" if r.get("package") else "")
                     + (f"; objects from `{res['bpf_dir']}`" if res.get("bpf_dir") else ""))
        lines.append("")
        if "features" not in res:
            lines.append(f"No report (exit {r['rc']}); last lines of the log:")
            lines.append("")
            lines += [f"    {t}" for t in r.get("tail", [])]
            lines.append("")
            continue
        for name, row in res["features"].items():
            how = "; ".join(row["notes"])
            why = "; ".join(row["why"])
            text = f"- **{name}**: {row['status']}"
            if how:
                text += f" — {how}"
            if why:
                text += f" — why: {why}"
            lines.append(text)
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="*", default=["6.1", "6.1-cloud", "6.12", "host"])
    ap.add_argument("--bpf-dir", default=None, help="the BPF objects to load (VIGIL_BPF_DIR)")
    ap.add_argument("--out", default=str(RESULTS / "kernels.md"))
    ap.add_argument("--tests", action="append", default=None,
                    help="pytest paths or node ids instead of all of tests/kernels (repeatable)")
    a = ap.parse_args(argv)
    unknown = [r for r in a.rows if r != "host" and r not in kernels.LINES]
    if unknown:
        ap.error(f"unknown rows {unknown}; known: {', '.join(kernels.LINES)}, host")
    bpf_dir = str(Path(a.bpf_dir).resolve()) if a.bpf_dir else None
    # on the shared file system, written through: the guest's /var/cache and /tmp are its own
    work = ROOT / "bench" / "out" / "kernels"
    work.mkdir(parents=True, exist_ok=True)
    import workload
    workload.ensure_vtool(str(work))          # here, not in each guest: clang under TCG is slow
    load = open("/proc/loadavg").read().split()[:3]
    started = time.monotonic()
    rows = []
    cmdline = "make test-kernels" + (f" KERNELS=\"{' '.join(a.rows)}\"" if a.rows else "") \
        + (" BROKEN=1" if bpf_dir else "")

    def write(final: bool) -> str:
        text = render(rows, cmdline, " ".join(load))
        text += (f"\nWhole run: {time.monotonic() - started:.0f} s.\n" if final
                 else "\n(partial: the run is still going or was stopped)\n")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
        Path(a.out).with_suffix(".json").write_text(json.dumps(rows, indent=1, sort_keys=True))
        return text

    lock = threading.Lock()

    def run_row(name: str, k) -> dict:
        out = work / f"{name}.json"
        out.unlink(missing_ok=True)
        if name == "host":
            log("kernels: host: the suite on this kernel")
            r = run_host(out, bpf_dir, a.tests)
        else:
            log(f"kernels: {name}: booting {k.release} ({k.package})")
            r = run_vm(k, out, bpf_dir, a.tests)
        r["result"] = json.loads(out.read_text()) if out.exists() else None
        log(f"kernels: {name}: {status_of(r['result'])} "
            f"(boot {r['boot_seconds']} s, total {r['total_seconds']} s, log {out.with_suffix('.log')})")
        with lock:
            rows.append(r)
            rows.sort(key=lambda x: a.rows.index(x["row"]))
            write(False)
        return r

    # the kernels first (downloads, one at a time), then the rows, JOBS at once: one VM
    # keeps about one core busy (the guest's work is mostly one thread), so two share
    # this machine's two
    todo = []
    for name in a.rows:
        if name == "host":
            todo.append((name, None))
            continue
        try:
            todo.append((name, kernels.fetch(kernels.LINES[name], log=log)))
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            # no kernel to boot (no repository reachable): said, not a vigil failure
            err = getattr(e, "stderr", b"") or b""
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
            log(f"kernels: {name}: not run: {e}")
            rows.append({"row": name, "what": kernels.LINES[name].what, "package": "",
                         "boot_seconds": None, "total_seconds": 0.0, "rc": "not fetched",
                         "tail": [f"not fetched: {e}", *err.strip().splitlines()[-2:]],
                         "result": None})
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, JOBS)) as pool:
        for f in [pool.submit(run_row, name, k) for name, k in todo]:
            f.result()
    text = write(True)
    print(text)
    bad = [r["row"] for r in rows if r["rc"] != "not fetched"
           and status_of(r["result"]) in ("FAILED", "no report")]
    if bpf_dir and not bad:
        bad = broken_check(rows)
    if bad:
        log(f"kernels: FAILED rows: {', '.join(bad)}")
    return 1 if bad else 0


def broken_check(rows: list) -> list:
    """BROKEN=1: on every row the refused program is named in the sensors row (degraded) and
    nothing FAILED; the rows where that does not hold."""
    bad = []
    for r in rows:
        res = r.get("result") or {}
        sensors = res.get("features", {}).get("sensors load", {})
        named = any("chmod__broken_for_tests" in w for w in sensors.get("why", []))
        if res and not (sensors.get("status") == "degraded" and named):
            bad.append(f"{r['row']} (the broken program is not reported as disabled)")
    return bad


if __name__ == "__main__":
    sys.exit(main())
