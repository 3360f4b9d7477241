#!/usr/bin/env bash
# Boots one crash-lab scenario with a UDP capture on the host and waits for both.
# Usage: lab/run.sh INITRAMFS "EXTRA CMDLINE" OUTDIR [TIMEOUT_SECONDS]
#   Starts lab/udp_capture.py on a free port P, boots with "ncu.port=P EXTRA",
#   writes OUTDIR/capture.hex, OUTDIR/serial.log, OUTDIR/port.
# Environment: LAB_KERNEL  kernel to boot (default: from lab/setup.sh)
#              LAB_IDLE    capture idle timeout after the last datagram (default 3)
#              LAB_BOOTS   how many boots in a row into one capture (default 1)
# Exit status: that of lab/boot.sh (0 = the guest ended by itself; 124 = timeout),
# of the last boot.
set -euo pipefail

LAB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$#" -lt 3 ]; then
    echo "usage: $0 INITRAMFS \"EXTRA CMDLINE\" OUTDIR [TIMEOUT_SECONDS]" >&2
    exit 2
fi
initrd="$1"; extra="$2"; outdir="$3"; tmo="${4:-120}"
kernel="${LAB_KERNEL:-}"
if [ -z "$kernel" ]; then kernel="$("$LAB/setup.sh" | sed -n 's/^KERNEL=//p')"; fi
mkdir -p "$outdir"

fifo="$outdir/.capture.fifo"
rm -f "$fifo"; mkfifo "$fifo"
python3 "$LAB/udp_capture.py" 0 "$outdir/capture.hex" "${LAB_IDLE:-3}" "$((tmo + 30))" >"$fifo" &
cap=$!
trap 'kill "$cap" 2>/dev/null || true; rm -f "$fifo"' EXIT
read -r _ port <"$fifo"
rm -f "$fifo"
echo "$port" >"$outdir/port"

rc=0
boots="${LAB_BOOTS:-1}"
for ((b = 1; b <= boots; b++)); do
    log="$outdir/serial.log"
    [ "$boots" -gt 1 ] && log="$outdir/serial-$b.log"
    rc=0
    "$LAB/boot.sh" "$kernel" "$initrd" "ncu.port=$port $extra" "$tmo" "$log" || rc=$?
done
wait "$cap" || true
trap - EXIT
exit "$rc"
