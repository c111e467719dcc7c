#!/usr/bin/env bash
# The small VM of the QEMU end-to-end tests (test/integration/hook-qemu.test.ts): Debian's cloud
# kernel (with its virtio-net modules) and a static busybox, downloaded with `apt-get download`
# and unpacked with `dpkg -x` into a cache directory, never installed. Idempotent: once the
# files are there it does nothing. Run as root after `apt-get update` (scripts/deps.sh calls it).
#
#   bash scripts/vm-assets.sh [CACHE_DIR]    default: $MVNET_VM_CACHE or /var/tmp/mvnet-test-cache
#
# Leaves CACHE_DIR/vmlinuz, CACHE_DIR/modules/ (the kernel's lib/modules/VERSION) and
# CACHE_DIR/busybox (static), and prints CACHE_DIR.
set -euo pipefail

cache="${1:-${MVNET_VM_CACHE:-/var/tmp/mvnet-test-cache}}"
if [ -f "$cache/vmlinuz" ] && [ -d "$cache/modules" ] && [ -x "$cache/busybox" ]; then
  echo "$cache"
  exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.dl.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
cd "$work"

# The versioned kernel the metapackage depends on (linux-image-6.1.0-NN-cloud-amd64).
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$kpkg" ]; then
  echo "vm-assets.sh: linux-image-cloud-amd64 has no linux-image dependency in the apt cache (apt-get update?)" >&2
  exit 1
fi
# `apt-get download` as root warns that _apt cannot write here; the download is the same.
apt-get download -q "$kpkg" busybox-static 2> >(grep -v 'unsandboxed' >&2)
dpkg -x "$(ls "$kpkg"_*.deb)" kernel
dpkg -x "$(ls busybox-static_*.deb)" bb

kver=$(ls kernel/lib/modules)
rm -rf "$cache/modules"
mv "kernel/lib/modules/$kver" "$cache/modules"
install -m 755 bb/bin/busybox "$cache/busybox"
# Last, so an interrupted run is not taken for a finished one.
install -m 644 "kernel/boot/vmlinuz-$kver" "$cache/vmlinuz"
echo "$cache"
