#!/usr/bin/env bash
# Boots the netconsole-markers scenario in each netconsole mode, checks every
# capture, and writes the fixtures in proto/tests/fixtures/netconsole/.
# Usage: lab/make_fixtures.sh [OUTDIR]   (default: proto/tests/fixtures/netconsole)
# Raw captures stay in lab/work/fixtures/<case>/ (capture.hex, serial.log).
set -euo pipefail

LAB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$LAB")"
out="${1:-$ROOT/proto/tests/fixtures/netconsole}"
work="$LAB/work/fixtures"
mkdir -p "$work" "$out"

"$LAB/setup.sh" >"$work/setup.out"
LAB_KERNEL="$(sed -n 's/^KERNEL=//p' "$work/setup.out")"
export LAB_KERNEL
initrd="$work/markers.cpio.gz"
"$LAB/mkinitramfs.sh" "$initrd" "$LAB/scenarios/netconsole-markers.sh"

# run CASE MODE MARKERS "EXTRA CMDLINE"
run() {
    local name="$1" mode="$2" markers="$3" extra="$4"
    "$LAB/run.sh" "$initrd" "ncu.mode=$mode ncu.markers=$markers $extra" "$work/$name" 90
    "$LAB/check_capture.py" "$work/$name/capture.hex" "$markers" "$mode"
}
sel() { "$LAB/select_fixture.py" "$work/$1/capture.hex" "$out/$1.hex" "${@:2}"; }

run plain plain 20 ""
sel plain head:3 from:"netpoll: netconsole: local port"

run extended extended 20 ""
sel extended head:3 dict:3 gap:2 from:"netpoll: netconsole: local port"

run extended-ignore-loglevel extended 20 "ignore_loglevel"
sel extended-ignore-loglevel head:3 dict:3 level:7:3 from:"netpoll: netconsole: local port"

# Continuation records: sysrq m (show memory: KERN_CONT pieces merged) and
# t (show state: the scheduler debug dump is printed with pr_cont only).
run extended-cont extended 3 "ncu.sysrq=mt"
sel extended-cont span:"sysrq: Show Memory":10 cont:6 lastcont:2

# Two boots into one listener: sequence numbers fall back to 0.
LAB_BOOTS=2 LAB_IDLE=20 run extended-reboot extended 3 ""
sel extended-reboot boots:5:3

{
    echo "kernel: $(basename "$LAB_KERNEL")"
    echo "qemu: $(qemu-system-x86_64 --version | head -n1)"
} >&2
