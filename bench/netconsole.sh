#!/usr/bin/env bash
# A fleet's kernels on one receiver (figures, not a test; root, about 7 minutes,
# about 15 with netconsd beside it; ROUNDS=1 about a third of that).
# bench-netconsole (bench/src/netconsole.rs) sends extended netconsole records of 96
# bytes from HOSTS hosts, each its own 127.x.y.z address, at a given rate.
#   1. for 64, 16,384 and 65,536 hosts and socket buffers of 208 KiB, 4 MiB and
#      64 MiB (as the kernel counts them: net.core.rmem_default, which both
#      receivers keep): records lost at 50k, 100k, 150k and 200k records/s, 2 s
#      each (sent minus written), the median of ROUNDS rounds, and the highest
#      rate whose median lost none (a single round is a coin toss at the edge:
#      both receivers lose a few hundred records now and then where they mostly
#      lose none)
#   2. CPU per record (user + system, every thread) at 150k/s, 64 hosts, written to
#      a file (ncu-recv --json)
#   3. RSS: peak, and per idle host after one record from each of 65,536 hosts
#   4. drain: half a second of the blaster at full speed (some 130,000 records)
#      queued while the receiver is stopped (SIGSTOP), then the time until it has
#      written what it got (its output stops growing)
# NETCONSD=/path/to/netconsd runs facebook's netconsd beside it, alternating runs,
# with the same buffer, and prints the ratios; its printer module is
# NETCONSD_MODULE (default: modules/printer.so beside the binary). netconsd is not a
# dependency: build it from its repository in a scratch folder.
# Usage: [ROUNDS=3] bench/netconsole.sh [--quick]   (--quick: 64 hosts only in 1;
# ROUNDS: alternating rounds of 2 and 4, each receiver's median printed)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ncu-receiver -p ncu-bench
rel="$target/release"
blast="$rel/bench-netconsole"
work=$(mktemp -d)
rmem_default=$(cat /proc/sys/net/core/rmem_default)
rmem_max=$(cat /proc/sys/net/core/rmem_max)
trap 'kill $(jobs -p) 2>/dev/null || true; sysctl -qw net.core.rmem_default=$rmem_default net.core.rmem_max=$rmem_max; rm -rf "$work"' EXIT
hosts_list="64 16384 65536"
rounds=${ROUNDS:-3}
[ "${1:-}" = --quick ] && hosts_list=64
receivers=ncu
if [ -n "${NETCONSD:-}" ]; then
  receivers="ncu netconsd"
  module=${NETCONSD_MODULE:-$(dirname "$NETCONSD")/modules/printer.so}
  [ -x "$NETCONSD" ] && [ -f "$module" ] || { echo "NETCONSD=$NETCONSD or its module $module missing" >&2; exit 2; }
fi

# bytes SIZE: 208KiB, 4MiB, 64MiB as a byte count.
bytes() { case $1 in *KiB) echo $(( ${1%KiB} * 1024 ));; *MiB) echo $(( ${1%MiB} * 1048576 ));; esac; }

# start WHO: the receiver on a fresh port with the current rmem_default; sets
# $rpid and $rport. ncu-recv is told a receive buffer smaller than any here, so
# that it keeps the default as netconsd does.
start() {
  rm -f "$work/out" "$work/err"
  if [ "$1" = ncu ]; then
    "$rel/ncu-recv" --json --dead-after 600s --max-sessions 70000 --receive-buffer 4KiB \
      127.0.0.1:0 >"$work/out" 2>"$work/err" &
    rpid=$!
    rport=$(listening_port "$work/err")
  else
    rport=$(( 20000 + RANDOM % 20000 ))
    "$NETCONSD" -u "$rport" "$module" >"$work/out" 2>"$work/err" &
    rpid=$!
    local hex; hex=$(printf ':%04X ' "$rport")
    for _ in $(seq 200); do
      grep -q "$hex" /proc/net/udp6 2>/dev/null && break
      sleep 0.01
    done
  fi
}
# stop: SIGTERM; both write what they hold before they exit.
stop() { kill -TERM "$rpid"; wait "$rpid" || true; }
# written WHO: records written so far.
written() {
  if [ "$1" = ncu ]; then grep -c '"event":"line"' "$work/out" || true
  else grep -c 'ncu-bench host' "$work/out" || true; fi
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# settle: until the receiver has used no CPU for 0.1 s (everything handled).
settle() {
  for _ in $(seq 100); do
    [ "$(ticks "$rpid")" = "$(sleep 0.1; ticks "$rpid")" ] && break
  done
}
field() { tail -c 2000 "$work/out" | grep -o "\"$1\":[0-9]*" | tail -1 | cut -d: -f2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# median VALUES...: the median of the numbers given.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# medians NAME UNIT: each receiver's median over the rounds of $NAME_<who>, and
# their ratio (this machine's figures swing by a fifth from run to run).
medians() {
  local line="  median of $rounds rounds:" m
  for who in $receivers; do
    eval "m=\$(median \${$1_$who})"
    eval "med_$who=$m"
    line="$line $who $m $2;"
  done
  [ -n "${NETCONSD:-}" ] && line="$line ncu-recv / netconsd: $(ratio "$med_ncu" "$med_netconsd")"
  echo "$line"
}

echo "== 1. records lost (of those sent), 2 s at each rate, the median of $rounds rounds (each"
echo "   round's in brackets); the highest rate whose median lost none"
for hosts in $hosts_list; do
  for buf in 208KiB 4MiB 64MiB; do
    sysctl -qw net.core.rmem_default="$(bytes "$buf")" net.core.rmem_max="$(bytes "$buf")"
    declare -A best=([ncu]=0 [netconsd]=0) done_=([ncu]=0 [netconsd]=0)
    row=""
    for rate in 50000 100000 150000 200000; do
      cell="$rate/s:"
      declare -A runs=([ncu]="" [netconsd]="")
      for _ in $(seq "$rounds"); do
        for who in $receivers; do
          start "$who"
          sent=$("$blast" "127.0.0.1:$rport" "$hosts" "$rate" 2 | awk '{print $2}')
          settle; stop
          got=$(written "$who")
          runs[$who]="${runs[$who]} $(( sent - got ))"
        done
      done
      for who in $receivers; do
        # The median of the rounds (each round's count after it).
        lost=$(median ${runs[$who]})
        cell="$cell $who $lost (${runs[$who]# })"
        if [ "$lost" -le 0 ] && [ "${done_[$who]}" = 0 ]; then best[$who]=$rate; else done_[$who]=1; fi
      done
      row="$row  $cell;"
    done
    printf '  %-6s hosts %-7s best:' "$hosts" "$buf"
    for who in $receivers; do printf ' %s %s' "$who" "${best[$who]}"; done
    printf '  lost:%s\n' "$row"
  done
done
sysctl -qw net.core.rmem_default=$((64 << 20)) net.core.rmem_max=$((64 << 20))

echo "== 2. CPU per record at 150,000 records/s, 64 hosts, 3 s, written to a file"
hz=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
  for who in $receivers; do
    start "$who"
    t0=$(ticks "$rpid")
    sent=$("$blast" "127.0.0.1:$rport" 64 150000 3 | awk '{print $2}')
    settle
    t1=$(ticks "$rpid")
    stop
    us=$(awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$sent" 'BEGIN { printf "%.2f", t / hz / n * 1e6 }')
    eval "cpu_$who=$us"
    eval "cpus_$who=\"\${cpus_$who:-} $us\""
    printf '  round %d %-9s %s us per record (%d records, %d ticks)\n' "$round" "$who" "$us" "$sent" "$((t1 - t0))"
  done
  [ -n "${NETCONSD:-}" ] && echo "  round $round ncu-recv / netconsd: $(ratio "$cpu_ncu" "$cpu_netconsd")"
done
medians cpus "us per record"

echo "== 3. RSS with 65,536 hosts, one record each"
for who in $receivers; do
  start "$who"
  sleep 0.2
  r0=$(awk '/VmRSS/ {print $2}' "/proc/$rpid/status")
  "$blast" "127.0.0.1:$rport" 65536 100000 0.7 >/dev/null
  settle
  r1=$(awk '/VmRSS/ {print $2}' "/proc/$rpid/status")
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$rpid/status")
  stop
  extra=""
  [ "$who" = ncu ] && extra="; retired $(field retired)"
  echo "  $who: RSS $r0 KiB idle, $r1 KiB with 65,536 hosts ($(( (r1 - r0) * 1024 / 65536 )) bytes per idle host); peak $hwm KiB$extra"
done

echo "== 4. drain: half a second of records queued while stopped, 128 MiB buffer"
sysctl -qw net.core.rmem_default=$((128 << 20)) net.core.rmem_max=$((128 << 20))
for round in $(seq "$rounds"); do
  for who in $receivers; do
    start "$who"
    kill -STOP "$rpid"
    sent=$("$blast" "127.0.0.1:$rport" 64 0 0.5 | awk '{print $2}') || true
    t0=$(date +%s.%N)
    kill -CONT "$rpid"
    # Until nothing more is written for 0.3 s; the time is that of the last write
    # (the output file's modification time; what the socket could not queue is
    # gone, and not waited for).
    got=0; still=0
    while [ "$still" -lt 30 ]; do
      sleep 0.01
      n=$(written "$who")
      if [ "$n" -gt "$got" ]; then got=$n; still=0; else still=$((still + 1)); fi
    done
    t1=$(stat -c %.9Y "$work/out")
    stop
    rate=$(awk -v n="$got" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    eval "drain_$who=$rate"
    eval "drains_$who=\"\${drains_$who:-} $rate\""
    awk -v w="$who" -v r="$round" -v n="$got" -v s="$sent" -v a="$t0" -v b="$t1" \
      'BEGIN { printf "  round %d %-9s %d of %d records written in %.3f s: %.0f records/s\n", r, w, n, s, b - a, n / (b - a) }'
  done
  [ -n "${NETCONSD:-}" ] && echo "  round $round ncu-recv / netconsd: $(ratio "$drain_ncu" "$drain_netconsd")"
done
medians drains "records/s"
