#!/usr/bin/env bash
# Builds a minimal container root filesystem from Debian's busybox-static, so podman can run
# containers with `--rootfs` and no image registry. Idempotent: an existing, complete rootfs is
# left alone.
#
# Usage: scripts/make_rootfs.sh DIR
set -euo pipefail

dir="${1:?usage: make_rootfs.sh DIR}"
busybox=/bin/busybox

if [[ ! -x "$busybox" ]]; then
  echo "make_rootfs: $busybox missing (apt-get install busybox-static)" >&2
  exit 1
fi

# The marker is written last, so a half-built rootfs (interrupted run) is rebuilt.
if [[ -f "$dir/.flock-rootfs" && -x "$dir/bin/busybox" ]]; then
  exit 0
fi

echo "make_rootfs: building busybox rootfs in $dir" >&2
tmp="$(mktemp -d "${dir%/}.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,run,root,var/tmp}
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
cp "$busybox" "$tmp/bin/busybox"
# busybox --install needs /proc/self/exe to be busybox itself, so run it in a chroot.
chroot "$tmp" /bin/busybox --install -s
cat >"$tmp/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$tmp/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
touch "$tmp/etc/hosts" "$tmp/etc/resolv.conf"
date -u +%FT%TZ >"$tmp/.flock-rootfs"

rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
