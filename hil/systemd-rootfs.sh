#!/usr/bin/env bash
# Builds a minimal Debian root filesystem with systemd, for booting fieldgate under a real
# systemd as PID 1 with systemd-nspawn (tests/systemd_boot.rs). Idempotent: reuses an
# existing tree. Needs root, debootstrap and Debian's package mirror.
#   hil/systemd-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: $0 DIR}
if [ -x "$dir/lib/systemd/systemd" ] && [ -x "$dir/usr/bin/sqlite3" ] && [ -x "$dir/bin/kill" ]; then
    exit 0
fi
rm -rf "$dir.tmp"
mkdir -p "$(dirname "$dir")"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,sqlite3,procps bookworm "$dir.tmp" \
    http://deb.debian.org/debian >"$dir.log" 2>&1 || { tail -20 "$dir.log"; exit 1; }
# No getty on the console: the rig is driven from outside.
ln -sf /dev/null "$dir.tmp/etc/systemd/system/console-getty.service"
echo fieldgate-rig >"$dir.tmp/etc/hostname"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
