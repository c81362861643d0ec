#!/usr/bin/env bash
# Builds a minimal Debian root filesystem with systemd, for booting fieldgate under a real
# systemd as PID 1 with systemd-nspawn (tests/systemd_boot.rs). Idempotent: reuses an
# existing tree. Needs root, debootstrap and Debian's package mirror.
#   hil/systemd-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: $0 DIR}
# What fieldgate needs at run time beside systemd: the TPM software stack it links.
pkgs="systemd,systemd-sysv,dbus,sqlite3,procps,libtss2-esys-3.0.2-0,libtss2-tctildr0,libtss2-tcti-device0,libtss2-tcti-swtpm0"
if [ -x "$dir/lib/systemd/systemd" ] && [ "$(cat "$dir/.fieldgate-packages" 2>/dev/null)" = "$pkgs" ]; then
    exit 0
fi
rm -rf "$dir.tmp"
mkdir -p "$(dirname "$dir")"
debootstrap --variant=minbase --include="$pkgs" bookworm "$dir.tmp" \
    http://deb.debian.org/debian >"$dir.log" 2>&1 || { tail -20 "$dir.log"; exit 1; }
# No getty on the console: the rig is driven from outside.
ln -sf /dev/null "$dir.tmp/etc/systemd/system/console-getty.service"
echo fieldgate-rig >"$dir.tmp/etc/hostname"
echo "$pkgs" >"$dir.tmp/.fieldgate-packages"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
