#!/usr/bin/env bash
# podman on this kind of node: runc (crun refuses hybrid cgroups) and no default ulimits.
set -e
conf=/etc/containers/containers.conf
command -v podman >/dev/null || exit 0
if ! grep -qs 'runtime = "runc"' "$conf"; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' > "$conf"
  echo "wrote $conf"
fi
