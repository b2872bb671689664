"""Debian's kernels for the matrix: the newest of each line, downloaded and unpacked once.

``apt-get download`` the package, ``dpkg -x`` it under CACHE/<package>/, and copy its
``lib/modules/<version>`` to ``/lib/modules/`` (virtme-ng builds the guest's initramfs from
there: the 9p/virtio modules of that kernel).  Idempotent: an unpacked kernel is reused.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("VIGIL_KERNEL_CACHE", "/var/cache/vigil/kernels"))


@dataclass(frozen=True)
class KernelLine:
    """A row of the matrix: which package line, and what the boot adds."""
    name: str            # the row's short name: 6.1, 6.1-cloud, 6.12 ...
    pattern: str         # the package names of this line (the newest is taken)
    append: str = ""     # kernel command line added at boot
    what: str = ""


# Debian's kernels list bpf among their default LSMs; this one leaves it out, as kernels
# built without it in CONFIG_LSM (Ubuntu's, many clouds') have it: the fallback path
LSM_NO_BPF = "lsm=lockdown,capability,landlock,yama,apparmor"

LINES = {
    "6.1": KernelLine("6.1", r"^linux-image-6\.1\.0-[0-9]+-amd64$",
                      what="Debian 12 stock kernel"),
    "6.1-cloud": KernelLine("6.1-cloud", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
                            append=LSM_NO_BPF,
                            what="Debian 12 cloud kernel (the one cloud images boot), booted "
                                 "without the BPF LSM"),
    "6.12": KernelLine("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
                       what="Debian 12's 6.12 LTS (bookworm-security)"),
}


def _vkey(pkg: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", pkg))


def newest_package(line: KernelLine) -> str:
    """The newest package name of a line, from apt's lists (updated once if empty)."""
    for attempt in (0, 1):
        r = subprocess.run(["apt-cache", "search", "--names-only", line.pattern],
                           capture_output=True, text=True, check=True)
        names = [ln.split(" - ", 1)[0].strip() for ln in r.stdout.splitlines()]
        names = [n for n in names if re.match(line.pattern, n)]
        if names:
            return max(names, key=_vkey)
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
    raise RuntimeError(f"no package matches {line.pattern} (apt-cache search)")


@dataclass
class Kernel:
    line: KernelLine
    package: str
    release: str          # the kernel's uname -r
    vmlinuz: Path


def fetch(line: KernelLine, log=print) -> Kernel:
    """Download and unpack the newest kernel of a line (once), its modules in /lib/modules."""
    pkg = newest_package(line)
    root = CACHE / pkg
    done = root / ".unpacked"
    if not done.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        dl = CACHE / "debs"
        dl.mkdir(exist_ok=True)
        debs = sorted(dl.glob(f"{pkg}_*.deb"))
        if not debs:
            log(f"kernels: apt-get download {pkg}")
            subprocess.run(["apt-get", "download", "-q", pkg], cwd=dl, check=True,
                           capture_output=True)
            debs = sorted(dl.glob(f"{pkg}_*.deb"))
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(root)], check=True)
        done.touch()
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if not images:
        raise RuntimeError(f"{pkg}: no boot/vmlinuz-* in the package")
    vmlinuz = images[-1]
    release = vmlinuz.name.removeprefix("vmlinuz-")
    mods = Path("/lib/modules") / release
    if not (mods / "modules.dep").exists():
        src = root / "lib" / "modules" / release
        log(f"kernels: modules of {release} -> {mods}")
        shutil.copytree(src, mods, symlinks=True, dirs_exist_ok=True)
        if not (mods / "modules.dep").exists():
            subprocess.run(["depmod", "-a", release], check=True)
    return Kernel(line, pkg, release, vmlinuz)
