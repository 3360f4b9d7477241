#!/usr/bin/env bash
# The main job, on one machine: ships this machine's kernel log (or, when it is not
# readable, a sample log) through ncu-send to ncu-recv on loopback, then shows what
# arrived, the events, and the gap report a bug ticket would get.
#
# Usage: scripts/demo.sh        (builds the release binaries first)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bins --quiet
bin=${CARGO_TARGET_DIR:-target}/release

work=$(mktemp -d)
trap 'kill "$recv" 2>/dev/null || true; rm -rf "$work"' EXIT

# The log to ship: the kernel's own, else a generated dmesg-like sample.
if dmesg >"$work/input.log" 2>/dev/null && [ -s "$work/input.log" ]; then
    what="this machine's kernel log (dmesg)"
else
    what="a sample log (dmesg is not readable here)"
    for i in $(seq 1 2000); do
        printf '[%6d.%06d] sample: line %d of 2000, the kernel said something\n' $((i / 100)) $((i * 1373 % 1000000)) "$i"
    done >"$work/input.log"
fi

# Receiver on a free loopback port; it prints "listening on ADDR:PORT" to stderr.
"$bin/ncu-recv" --once --dead-after 2s --report "$work/report.md" 127.0.0.1:0 \
    >"$work/received.txt" 2>"$work/recv.err" &
recv=$!
port=""
for _ in $(seq 1 100); do
    port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$work/recv.err" | head -n1)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { cat "$work/recv.err" >&2; echo "demo: ncu-recv did not start" >&2; exit 1; }

lines=$(wc -l <"$work/input.log")
echo "== shipping $lines lines of $what to 127.0.0.1:$port"
"$bin/ncu-send" --name demo "127.0.0.1:$port" <"$work/input.log"
wait "$recv"
recv=""

echo "== first lines as ncu-recv wrote them"
head -n 5 "$work/received.txt"
echo "   ..."
echo "== ncu-recv's event lines"
grep '^### ncu:' "$work/received.txt" || true
echo "== identical to the input? (every line, byte for byte)"
if grep -v '^### ncu:' "$work/received.txt" | cmp -s - "$work/input.log"; then
    echo "yes: $lines of $lines lines"
else
    echo "NO: the output differs from the input" >&2
    exit 1
fi
echo "== the report (--report) a bug ticket gets"
cat "$work/report.md"
