#!/usr/bin/env bash
# A fleet's kernels on one receiver (figures, not a test; root, about 3 minutes).
# bench-netconsole (bench/src/netconsole.rs) sends extended netconsole records of 96
# bytes from HOSTS hosts, each its own 127.x.y.z address, at a given rate.
#   1. for 64, 16,384 and 65,536 hosts and socket buffers of 208 KiB, 4 MiB and
#      64 MiB (--receive-buffer): the highest rate of 50k, 100k, 150k, 200k
#      records/s that lost nothing (kernel drops 0, no gap), 2 s each
#   2. CPU per record (user + system, both threads) at 100k/s, 64 hosts, --json to a file
#   3. RSS: peak, and per idle host after one record from each of 65,536 hosts
#   4. drain: half a second of the blaster at full speed (some 130,000 records)
#      queued while ncu-recv is stopped (SIGSTOP), then the
#      time until it has written them all
# Not yet: netconsd beside it (NETCONSD=/path/to/netconsd), alternating runs with
# the same buffer, and the ratios.
# Usage: bench/netconsole.sh [--quick]   (--quick: 64 hosts only in 1)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ncu-receiver -p ncu-bench
rel="$target/release"
blast="$rel/bench-netconsole"
work=$(mktemp -d)
rmem_default=$(cat /proc/sys/net/core/rmem_default)
rmem_max=$(cat /proc/sys/net/core/rmem_max)
trap 'kill $(jobs -p) 2>/dev/null || true; sysctl -qw net.core.rmem_default=$rmem_default net.core.rmem_max=$rmem_max; rm -rf "$work"' EXIT
hosts_list="64 16384 65536"
[ "${1:-}" = --quick ] && hosts_list=64

# start_recv ARGS...: ncu-recv --json to a file; sets $rpid and $rport.
start_recv() {
  rm -f "$work/out" "$work/err"
  "$rel/ncu-recv" --json --dead-after 600s --max-sessions 70000 "$@" 127.0.0.1:0 >"$work/out" 2>"$work/err" &
  rpid=$!
  for _ in $(seq 200); do
    grep -q 'listening on' "$work/err" 2>/dev/null && break
    sleep 0.01
  done
  rport=$(grep -o 'listening on [^ ]*' "$work/err" | sed 's/.*://')
}
# stop_recv: SIGTERM; the exit summary is then the last line of the output.
stop_recv() {
  kill -TERM "$rpid"; wait "$rpid" || true
}
field() { tail -c 2000 "$work/out" | grep -o "\"$1\":[0-9]*" | tail -1 | cut -d: -f2; }
gaps() { grep -c '"event":"gap"' "$work/out" || true; }
lines() { grep -c '"event":"line"' "$work/out" || true; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "== 1. highest zero-loss rate (records/s), 2 s at each rate"
printf '  %-8s %-10s %s\n' hosts buffer "ncu-recv (drops at the next rate)"
for hosts in $hosts_list; do
  for buf in 208KiB 4MiB 64MiB; do
    best=0; note=""
    for rate in 50000 100000 150000 200000; do
      start_recv --receive-buffer "$buf"
      "$blast" "127.0.0.1:$rport" "$hosts" "$rate" 2 >/dev/null
      # Every record handled (or given up on) before the counts are read.
      for _ in $(seq 100); do
        [ "$(ticks "$rpid")" = "$(sleep 0.1; ticks "$rpid")" ] && break
      done
      stop_recv
      drops=$(field kernel_drops); g=$(gaps)
      if [ "${drops:-1}" -eq 0 ] && [ "$g" -eq 0 ]; then best=$rate; else note="$drops drops at $rate"; break; fi
    done
    printf '  %-8s %-10s %s %s\n' "$hosts" "$buf" "$best" "${note:+($note)}"
  done
done

echo "== 2. CPU per record at 100,000 records/s, 64 hosts, 3 s, --json to a file"
start_recv
t0=$(ticks "$rpid")
"$blast" "127.0.0.1:$rport" 64 100000 3 >/dev/null
sleep 0.5
t1=$(ticks "$rpid")
stop_recv
n=$(field datagrams)
hz=$(getconf CLK_TCK)
awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$n" 'BEGIN { printf "  %.2f us per record (%d records, %.2f s of CPU)\n", t / hz / n * 1e6, n, t / hz }'

echo "== 3. RSS with 65,536 hosts, one record each"
start_recv
sleep 0.2
r0=$(awk '/VmRSS/ {print $2}' "/proc/$rpid/status")
"$blast" "127.0.0.1:$rport" 65536 100000 0.7 >/dev/null
sleep 1
r1=$(awk '/VmRSS/ {print $2}' "/proc/$rpid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$rpid/status")
stop_recv
echo "  RSS $r0 KiB idle, $r1 KiB with 65,536 sessions ($(( (r1 - r0) * 1024 / 65536 )) bytes per idle host); peak $hwm KiB; retired $(field retired)"

echo "== 4. drain: half a second of records queued while stopped, 64 MiB buffer"
start_recv
kill -STOP "$rpid"
"$blast" "127.0.0.1:$rport" 64 0 0.5 >"$work/sent" || true
sent=$(awk '{print $2}' "$work/sent")
t0=$(date +%s.%N)
kill -CONT "$rpid"
while [ "$(lines)" -lt "$sent" ]; do
  sleep 0.02
  [ "$(echo "$(date +%s.%N) - $t0 > 30" | bc)" = 1 ] && break
done
t1=$(date +%s.%N)
got=$(lines)
stop_recv
awk -v n="$got" -v s="$sent" -v a="$t0" -v b="$t1" 'BEGIN { printf "  %d of %d records written in %.3f s: %.0f records/s\n", n, s, b - a, n / (b - a) }'

if [ -n "${NETCONSD:-}" ]; then
  echo "== netconsd beside it: not done by this script yet (see the header)"
fi
