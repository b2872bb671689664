#!/usr/bin/env bash
# The Debian 12 base image made from Debian packages, for sites where no image registry
# is reachable: mmdebstrap builds a minimal root filesystem from the Debian mirror and
# `podman import` turns it into an image.  Does nothing when the image already exists.
#   scripts/base-image.sh [IMAGE]     (default localhost/vigil-base:12)
set -euo pipefail
image=${1:-localhost/vigil-base:12}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if podman image exists "$image"; then
  exit 0
fi
if ! command -v mmdebstrap >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "building $image from $mirror (mmdebstrap bookworm, minbase)"
mmdebstrap --quiet --variant=minbase --include=ca-certificates \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --aptopt='Acquire::Languages "none"' \
  bookworm "$tmp/rootfs.tar" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} bookworm-security main"
podman import --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$tmp/rootfs.tar" "$image" >/dev/null
echo "built $image"
