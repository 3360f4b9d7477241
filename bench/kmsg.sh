#!/usr/bin/env bash
# Kernel log benchmark: how many /dev/kmsg records per second ncu-send --kmsg reads
# and sends while a writer floods /dev/kmsg as fast as it can, beside
# `cat /dev/kmsg | ncu-send` under the same flood (alternating, --runs times each).
#   bench/kmsg.sh [--records N] [--runs K]
# Needs root: it writes N records into this machine's kernel log (and sets
# kernel.printk_devkmsg=on for the run, restoring it after). The kernel's ring holds
# only its last ~128 KiB, so a reader that falls behind loses records: --kmsg names
# them (overwritten), cat stops at the first overrun (read fails with EPIPE).
set -euo pipefail
cd "$(dirname "$0")/.."
records=200000
runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    *) echo "usage: $0 [--records N] [--runs K]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench/kmsg.sh: needs root (it writes to /dev/kmsg)" >&2; exit 2; }
cargo build --release -q -p ncu-sender -p ncu-receiver
bin=target/release
work=$(mktemp -d /tmp/ncu-bench-kmsg.XXXXXX)
old=$(cat /proc/sys/kernel/printk_devkmsg)
cleanup() {
  echo "$old" >/proc/sys/kernel/printk_devkmsg
  pkill -P $$ 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
echo on >/proc/sys/kernel/printk_devkmsg

# Writes $1 records into /dev/kmsg as fast as one process can; prints the seconds.
flood() {
  python3 - "$1" <<'EOF'
import os, sys, time
n = int(sys.argv[1])
fd = os.open("/dev/kmsg", os.O_WRONLY)
pad = b"x" * 60
t = time.monotonic()
for i in range(n):
    os.write(fd, b"<6>ncu-bench-flood %07d %s\n" % (i, pad))
print(f"{time.monotonic() - t:.3f}")
EOF
}

# One run: $1 = kmsg | cat. Prints "reader seconds_of_flood records_delivered
# flood_records_delivered overwritten_named".
run() {
  local port=$((20000 + RANDOM % 20000))
  "$bin/ncu-recv" --json "127.0.0.1:$port" >"$work/recv.json" 2>"$work/recv.err" &
  local recv=$!
  sleep 0.3
  case "$1" in
    kmsg) "$bin/ncu-send" --kmsg --kmsg-from now --name bench "127.0.0.1:$port" 2>"$work/send.err" & ;;
    cat) { cat /dev/kmsg 2>"$work/cat.err"; } | "$bin/ncu-send" --name bench "127.0.0.1:$port" 2>"$work/send.err" & ;;
  esac
  sleep 0.5
  local secs
  secs=$(flood "$records")
  sleep 1
  pkill -TERM -f "ncu-send --kmsg --kmsg-from now --name bench" 2>/dev/null || true
  pkill -TERM -x cat 2>/dev/null || true
  sleep 1.5
  kill -TERM "$recv" 2>/dev/null || true
  wait "$recv" 2>/dev/null || true
  python3 - "$1" "$secs" "$work/recv.json" <<'EOF'
import json, sys
reader, secs, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
lines = flood = overwritten = lost = 0
for raw in open(path):
    e = json.loads(raw)
    if e.get("event") == "line":
        lines += 1
        flood += e.get("text", "").startswith("ncu-bench-flood") or "ncu-bench-flood" in e.get("text", "")
    elif e.get("event") == "gap" and e.get("kind") == "overwritten":
        overwritten += e["last"] - e["first"] + 1
    elif e.get("event") == "gap":
        lost += e["last"] - e["first"] + 1
print(reader, secs, lines, flood, overwritten, lost)
EOF
}

echo "kernel log: $records records written into /dev/kmsg as fast as one writer can, $runs runs each, alternating"
printf '%-26s %10s %12s %12s %12s %12s %10s\n' reader "flood s" "written/s" "delivered" "delivered/s" "overwritten" "net lost"
for _ in $(seq "$runs"); do
  for reader in kmsg cat; do
    read -r name secs _lines flood over lost < <(run "$reader")
    rate=$(python3 -c "print(f'{$records/$secs:.0f}')")
    drate=$(python3 -c "print(f'{$flood/$secs:.0f}')")
    label="ncu-send --kmsg"
    [ "$name" = cat ] && label="cat /dev/kmsg | ncu-send"
    printf '%-26s %10s %12s %12s %12s %12s %10s\n' "$label" "$secs" "$rate" "$flood" "$drate" "$over" "$lost"
  done
done
echo "delivered: flood records that reached the receiver; overwritten: records the receiver"
echo "named overwritten in the kernel's ring; net lost: lines the receiver reported lost on the"
echo "network. For --kmsg, delivered + overwritten + net lost = written; cat names nothing."
