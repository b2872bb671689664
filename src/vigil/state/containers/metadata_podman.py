"""Container metadata from ``podman inspect``: a process per container, the last resort."""
from __future__ import annotations

import json
import subprocess
from typing import Optional

from vigil.state.containers.metadata_docker import parse_docker_inspect
from vigil.state.containers.metadata_values import DIGEST_RE, drop_empty

class PodmanCLISource:
    """``podman inspect``: a process per container, so only when nothing cheaper answered."""
    name = "podman-cli"

    def __init__(self, binary: str = "podman", timeout: float = 10.0):
        self.binary = binary
        self.timeout = timeout

    def fetch(self, cid: str, runtime: str = "") -> Optional[dict]:
        if runtime not in ("", "podman"):
            return None
        try:
            r = subprocess.run([self.binary, "container", "inspect", "--format", "json", cid],
                               capture_output=True, timeout=self.timeout, text=True)
        except (OSError, subprocess.SubprocessError):
            return None
        if r.returncode != 0:
            return None
        try:
            data = json.loads(r.stdout)
        except ValueError:
            return None
        if isinstance(data, list):
            data = data[0] if data else None
        if not isinstance(data, dict) or data.get("Id") != cid:
            return None
        out = parse_docker_inspect(data)
        out.pop("_image_id", None)
        # podman's native inspect: ImageName / ImageDigest / Config.Annotations
        if data.get("ImageName"):
            out["image"] = data["ImageName"]
        if isinstance(data.get("ImageDigest"), str) and DIGEST_RE.match(data["ImageDigest"]):
            out["image_digest"] = data["ImageDigest"]
        if isinstance(data.get("HostConfig"), dict) and isinstance(data["HostConfig"].get("Privileged"), bool):
            out["privileged"] = data["HostConfig"]["Privileged"]
        out["runtime"] = "podman"
        return drop_empty(out)
