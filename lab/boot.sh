#!/usr/bin/env bash
# Boots a kernel + initramfs under qemu (TCG, virtio-net user networking; the
# host's loopback is 10.0.2.2 from the guest), serial console to a file.
# Usage: lab/boot.sh KERNEL INITRAMFS "EXTRA CMDLINE" TIMEOUT_SECONDS SERIAL_LOG
# Exit status: 0 the guest ended by itself (panic -> reboot -> qemu exits,
#              thanks to panic=-1 and -no-reboot)
#              124 timed out (qemu killed)
#              other: qemu failed
# Prints "boot: ended|timeout after S.SSs" on stderr.
# Environment: LAB_QEMU_EXTRA  more qemu arguments (word-split)
#              LAB_TAP         a tap device (made by the caller, its host side
#                              addressed) instead of user networking: no NAT, the
#                              guest's addresses reach the host as they are
#              LAB_MEM         guest memory in MiB (default 256)
set -euo pipefail

if [ "$#" -ne 5 ]; then
    echo "usage: $0 KERNEL INITRAMFS \"EXTRA CMDLINE\" TIMEOUT_SECONDS SERIAL_LOG" >&2
    exit 2
fi
kernel="$1"; initrd="$2"; extra="$3"; tmo="$4"; serial="$5"
[ -f "$kernel" ] || { echo "boot: no kernel: $kernel" >&2; exit 2; }
[ -f "$initrd" ] || { echo "boot: no initramfs: $initrd" >&2; exit 2; }
mkdir -p "$(dirname "$serial")"

qemu="$(command -v qemu-system-x86_64 || true)"
[ -n "$qemu" ] || { echo "boot: qemu-system-x86_64 missing (run lab/setup.sh)" >&2; exit 2; }

# shellcheck disable=SC2206
qemu_extra=(${LAB_QEMU_EXTRA:-})
netdev="user,id=n0"
[ -n "${LAB_TAP:-}" ] && netdev="tap,id=n0,ifname=$LAB_TAP,script=no,downscript=no"
start=$(date +%s.%N)
set +e
timeout --kill-after=5 "$tmo" "$qemu" \
    -accel tcg -m "${LAB_MEM:-256}" -smp 1 \
    -nodefaults -display none -no-reboot -monitor none \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 $extra" \
    -netdev "$netdev" -device virtio-net-pci,netdev=n0,romfile= \
    -serial "file:$serial" \
    "${qemu_extra[@]}" </dev/null
rc=$?
set -e
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
case "$rc" in
    0) echo "boot: ended after ${secs}s" >&2 ;;
    124|137) echo "boot: timeout after ${secs}s" >&2; rc=124 ;;
    *) echo "boot: qemu failed (status $rc) after ${secs}s" >&2 ;;
esac
exit "$rc"
