"""Container metadata from containers/storage's ``containers.json`` (podman and
CRI-O share it): names, image name, CRI-O's pod metadata."""
from __future__ import annotations

import json
import os
from typing import Optional

from vigil.state.containers.metadata_values import json_dict
from vigil.host_paths import host_path

STORAGE_FILES = (
    "/var/lib/containers/storage/overlay-containers/containers.json",
    "/var/lib/containers/storage/vfs-containers/containers.json",
)


class StorageSource:
    """containers/storage's containers.json (podman and CRI-O share it)."""
    name = "containers-storage"

    def __init__(self, files=STORAGE_FILES):
        self.files = tuple(host_path(f) for f in files)   # as VIGIL_HOST_ROOT says
        self._cache: dict = {}          # path -> (mtime_ns, size, {id: entry})

    def _load(self, path: str) -> dict:
        try:
            st = os.stat(path)
        except OSError:
            return {}
        c = self._cache.get(path)
        if c and c[0] == st.st_mtime_ns and c[1] == st.st_size:
            return c[2]
        data = None
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            data = None
        idx = {}
        if isinstance(data, list):
            for e in data:
                if isinstance(e, dict) and isinstance(e.get("id"), str):
                    idx[e["id"]] = e
        self._cache[path] = (st.st_mtime_ns, st.st_size, idx)
        return idx

    def fetch(self, cid: str, runtime: str = "") -> Optional[dict]:
        for p in self.files:
            e = self._load(p).get(cid)
            if e is None:
                continue
            out: dict = {}
            names = e.get("names") or []
            md = json_dict(e.get("metadata"))
            if md.get("pod-name") or md.get("pod-id"):
                # CRI-O: metadata name is kubelet's k8s_<container>_<pod>_<ns>_<uid>_<n>
                out["runtime"] = "cri-o"
                if md.get("metadata-name"):
                    out["k8s_container_name"] = str(md["metadata-name"])
                if md.get("pod-name"):
                    out["pod_name"] = str(md["pod-name"])
                if md.get("pod-id") and md.get("pod-id") != cid:
                    out["sandbox_id"] = str(md["pod-id"])
                name = md.get("name") or (names[0] if names else "")
                if isinstance(name, str) and name.startswith("k8s_"):
                    parts = name.split("_")
                    if len(parts) >= 6:
                        out.setdefault("k8s_container_name", parts[1])
                        out.setdefault("pod_name", parts[2])
                        out["namespace"] = parts[3]
                        out["pod_uid"] = parts[4]
                out["name"] = out.get("k8s_container_name", "") or str(name)
            else:
                if names:
                    out["name"] = str(names[0])
                elif md.get("name"):
                    out["name"] = str(md["name"])
            img = md.get("image-name") or ""
            if img:
                out["image"] = str(img)
            return {k: v for k, v in out.items() if v}
        return None
