#!/usr/bin/env bash
# The virtual rig's VM: boots a Debian kernel under qemu (software emulation, no KVM
# needed) with the kernel's CAN stack (can, can-raw, can-dev, vcan) and netem (link loss
# and delay, which this machine's own kernel lacks), sets up vcan0 and runs one program
# inside. The guest's exit code becomes this script's exit code.
#
#   hil/can-vm.sh [--file PATH]... PROGRAM [ARGS...]
#
# PROGRAM and each --file are copied into the guest under the same absolute path, with
# the shared libraries they need; can-utils' canplayer, cansend and candump come along
# when installed. The guest sees FIELDGATE_IN_VM=1, a writable /tmp and vcan0 up.
# The kernel is downloaded once (apt-get download, no root needed) and kept in
# target/hil/can-vm; delete that folder to start afresh.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="${FIELDGATE_VM_DIR:-$here/target/hil/can-vm}"
files=()
while [ $# -gt 0 ]; do
    case "$1" in
        --file) files+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--file PATH]... PROGRAM [ARGS...]" >&2; exit 2; }
prog="$(readlink -f "$1")"; shift
for tool in qemu-system-x86_64 busybox xz; do
    command -v "$tool" >/dev/null || { echo "can-vm: $tool is missing (apt-get install qemu-system-x86 busybox-static xz-utils)" >&2; exit 2; }
done

# 1. The kernel and its CAN modules, once.
mkdir -p "$work"
if [ ! -s "$work/vmlinux" ] || [ ! -s "$work/modules/cls_u32.ko" ]; then
    pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
    [ -n "$pkg" ] || { echo "can-vm: apt-cache names no linux-image for linux-image-amd64 (run apt-get update)" >&2; exit 2; }
    echo "can-vm: fetching $pkg (once)" >&2
    rm -rf "$work/deb" "$work/modules" && mkdir -p "$work/deb" "$work/modules"
    (cd "$work/deb" && apt-get download -qq "$pkg" 2>&1 | grep -v "unsandboxed" >&2 || true)
    ls "$work/deb/"*.deb >/dev/null 2>&1 || { echo "can-vm: apt-get download $pkg failed" >&2; exit 2; }
    dpkg -x "$work/deb/"*.deb "$work/deb/x"
    vmlinuz="$(ls "$work/deb/x/boot/"vmlinuz-*)"
    # vmlinux is the xz stream inside vmlinuz: booting it directly skips the BIOS
    # decompression (about 3 s instead of 9 s under software emulation).
    off="$(python3 -c 'import sys; print(open(sys.argv[1], "rb").read().find(b"\xfd7zXZ\x00"))' "$vmlinuz")"
    tail -c +"$((off + 1))" "$vmlinuz" | xz -dc > "$work/vmlinux" 2>/dev/null || true
    [ -s "$work/vmlinux" ] || { echo "can-vm: could not unpack $vmlinuz" >&2; exit 2; }
    for m in can can-raw can-dev vcan sch_netem sch_prio cls_u32; do
        ko="$(find "$work/deb/x/lib/modules" -name "$m.ko*" | head -1)"
        [ -n "$ko" ] || { echo "can-vm: module $m not found in $pkg" >&2; exit 2; }
        case "$ko" in
            *.xz) xz -dc "$ko" > "$work/modules/$m.ko" ;;
            *) cp "$ko" "$work/modules/$m.ko" ;;
        esac
    done
    rm -rf "$work/deb"
fi

# 2. The initramfs: busybox, the modules, the program, its files and libraries.
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$(command -v busybox)" "$root/bin/busybox"
for a in sh mount insmod ip dd printf timeout cat ls sleep echo mkdir; do ln -s busybox "$root/bin/$a"; done
cp "$work/modules/"*.ko "$root/lib/modules/"
copy() { # PATH: the file and every library it links, at the same paths
    mkdir -p "$root$(dirname "$1")"
    cp -L "$1" "$root$1"
    ldd "$1" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
        [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done
}
copy "$prog"
# Debug symbols are not needed inside and make the initramfs several times larger.
strip --strip-debug "$root$prog" 2>/dev/null || true
for f in "${files[@]}"; do
    f="$(readlink -f "$f")"
    mkdir -p "$root$(dirname "$f")"
    cp -r "$f" "$root$f"
    # Programs among the files: with their libraries, without debug info.
    if [ -f "$f" ] && [ -x "$f" ]; then
        copy "$f"
        strip --strip-debug "$root$f" 2>/dev/null || true
    fi
done
# can-utils for CAN traffic, socat for virtual serial lines, iproute2's tc for netem,
# swtpm for a TPM, and the TPM stack's transport libraries (loaded at run time).
for t in canplayer cansend candump socat tc swtpm; do
    p="$(command -v $t || true)"
    [ -n "$p" ] && copy "$p"
done
for l in /usr/lib/*/libtss2-tcti-swtpm.so.0 /usr/lib/*/libtss2-tcti-device.so.0; do
    [ -e "$l" ] && copy "$l"
done
{
    echo '#!/bin/sh'
    # The initramfs root is writable RAM already; no tmpfs over /tmp, where the program
    # and its files may live (a checkout under /tmp).
    echo 'mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mkdir -p /tmp /dev/pts; mount -t devpts devpts /dev/pts'
    echo 'for m in can can-raw can-dev vcan sch_netem sch_prio cls_u32; do insmod /lib/modules/$m.ko || echo "can-vm: insmod $m failed"; done'
    echo 'ip link set lo up'
    echo 'ip link add dev vcan0 type vcan && ip link set vcan0 mtu 72 && ip link set up vcan0'
    echo 'export FIELDGATE_IN_VM=1 PATH=/bin:/usr/bin:/sbin:/usr/sbin HOME=/tmp'
    printf 'cd /tmp; timeout %s' "${FIELDGATE_VM_TIMEOUT:-120}"
    printf ' %q' "$prog" "$@"
    echo
    echo 'rc=$?; echo "can-vm: guest exit $rc"'
    # isa-debug-exit: qemu exits with (byte << 1) | 1.
    echo 'printf "\\$(printf %o $rc)" | dd of=/dev/port bs=1 seek=244 2>/dev/null'
}> "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null) > "$work/rig.cpio"

# 3. Boot and run.
start=$(date +%s.%N)
set +e
qemu-system-x86_64 -accel tcg,thread=multi -m 1024 -smp 2 -nographic -no-reboot -nic none \
    -kernel "$work/vmlinux" -initrd "$work/rig.cpio" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04
qrc=$?
set -e
secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }")
rc=$(( qrc & 1 ? qrc >> 1 : 255 ))
[ "$qrc" -eq 0 ] && rc=255
echo "can-vm: boot and run took ${secs}s; guest exit $rc" >&2
exit "$rc"
