#!/usr/bin/env bash
# Receiver benchmark (figures side by side; not a test). About 40 s of loopback load:
# do not run it in a loop on a shared machine.
#   1. ncu-send -> ncu-recv, 1,000,000 lines, packed and --no-pack: lines lost
#   2. ncu-recv's ceiling in datagrams/s fed by 2 blaster processes, against a bare
#      recvmmsg loop fed the same way (ratio; target >= 70%)
#   3. ncu-recv's peak RSS (VmHWM) under a garbage flood and under 10,000 sessions
#   4. --output-dir with --sync-every 1h (none), 1s (the default) and 0 (every write)
#   5. the ceiling with --journal-export and --metrics on against off (text)
# Binaries: receiver/examples/{blast,bare_recv}.rs, release ncu-send and ncu-recv.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ncu-receiver -p ncu-sender --bins --examples
rel="$target/release"
blast="$rel/examples/blast"
bare="$rel/examples/bare_recv"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
secs=${BLAST_SECS:-3}

# Starts ncu-recv with "$@" in the background; sets $rpid and $rport.
start_recv() {
  rm -f "$work/out" "$work/err"
  "$rel/ncu-recv" "$@" 127.0.0.1:0 >"$work/out" 2>"$work/err" &
  rpid=$!
  rport=$(listening_port "$work/err")
}
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# Feeds a receiver started with start_recv from 2 blasters for $secs, stops it; sets
# $offered and, from the report "$1" it was told to write, $received.
blast_and_stop() {
  "$blast" lines "127.0.0.1:$rport" "$secs" 2>"$work/b1" & b1=$!
  "$blast" lines "127.0.0.1:$rport" "$secs" 2>"$work/b2" & b2=$!
  wait $b1 $b2
  sleep 0.5
  kill -TERM "$rpid"; wait "$rpid" || true
  received=$(grep -o 'datagrams received: [0-9]*' "$1" | awk '{print $3}')
  offered=$(cat "$work/b1" "$work/b2" | awk '{s += $5} END {print s}')
}

echo "== 1. ncu-send -> ncu-recv, 1,000,000 lines (80 bytes) at the sender's full speed"
seq -f 'line %07g ................................................................' 1 1000000 >"$work/in"
for mode in packed no-pack; do
  flag=""; [ "$mode" = no-pack ] && flag="--no-pack"
  start_recv --once --report "$work/report.md"
  t0=$(date +%s.%N)
  "$rel/ncu-send" $flag --name bench "127.0.0.1:$rport" <"$work/in"
  wait "$rpid"
  t1=$(date +%s.%N)
  got=$(grep -o 'lines received: [0-9]*' "$work/report.md" | head -1 | awk '{print $3}')
  lost=$(grep -o 'lost: [0-9]* lines' "$work/report.md" | head -1 | awk '{print $2}')
  drops=$(grep -o 'receive buffer full): [0-9]*' "$work/report.md" | awk '{print $4}')
  printf '  %-8s received %s lines, lost %s, kernel drops %s, %.2f s\n' "$mode" "$got" "$lost" "${drops:-?}" "$(echo "$t1 - $t0" | bc)"
done

echo "== 2. ceiling: 2 blasters x ${secs}s, one 100-byte line per datagram"
start_recv --report "$work/ceiling.md"
blast_and_stop "$work/ceiling.md"
recv_n=$received
"$bare" 127.0.0.1:0 >"$work/bare" 2>"$work/bare.err" & bpid=$!
bport=$(listening_port "$work/bare.err")
"$blast" lines "127.0.0.1:$bport" "$secs" 2>"$work/b3" & b3=$!
"$blast" lines "127.0.0.1:$bport" "$secs" 2>"$work/b4" & b4=$!
wait $b3 $b4
wait "$bpid"
bare_n=$(cat "$work/bare")
bare_offered=$(cat "$work/b3" "$work/b4" | awk '{s += $5} END {print s}')
printf '  %-22s %12s %12s %10s\n' "" offered received "per second"
printf '  %-22s %12d %12d %10d\n' "ncu-recv (text out)" "$offered" "$recv_n" $((recv_n / secs))
printf '  %-22s %12d %12d %10d\n' "bare recvmmsg loop" "$bare_offered" "$bare_n" $((bare_n / secs))
echo "  ratio ncu-recv / bare: $(echo "scale=1; 100 * $recv_n / $bare_n" | bc)%"

echo "== 3. peak RSS (VmHWM) of ncu-recv"
start_recv
base=$(hwm "$rpid")
"$blast" garbage "127.0.0.1:$rport" "$secs" 2>"$work/g1" & g1=$!
"$blast" garbage "127.0.0.1:$rport" "$secs" 2>"$work/g2" & g2=$!
wait $g1 $g2
sleep 0.3
garbage_hwm=$(hwm "$rpid")
kill -TERM "$rpid"; wait "$rpid" || true
echo "  idle: ${base} KiB; garbage flood ($(cat "$work/g1" "$work/g2" | awk '{s += $3} END {print s}') datagrams): ${garbage_hwm} KiB"
start_recv
"$blast" sessions "127.0.0.1:$rport" 10000 5 2>"$work/s1"
sleep 0.5
sessions_hwm=$(hwm "$rpid")
kill -TERM "$rpid"; wait "$rpid" || true
sessions=$(grep -o 'summary [0-9]* sessions' "$work/out" | awk '{print $2}')
echo "  10,000 concurrent sessions x 5 lines (${sessions} sessions seen): ${sessions_hwm} KiB"

echo "== 4. --output-dir durability: the cost of --sync-every (fdatasync) against none"
# None: --sync-every 1h never comes due within a run (files are still synced once when
# their session ends). The 1,000,000 lines of 1. at the sender's full speed, packed;
# --sync-every 0 (after every write) on the first 20,000 of them.
runs=${SYNC_RUNS:-3}
head -n 20000 "$work/in" >"$work/in20k"
for every in 1h 1s 0; do
  input="$work/in"; [ "$every" = 0 ] && input="$work/in20k"
  n=$(wc -l <"$input")
  best=""
  for _ in $(seq "$runs"); do
    rm -rf "$work/dir"
    start_recv --once --output-dir "$work/dir" --sync-every "$every"
    t0=$(date +%s.%N)
    "$rel/ncu-send" --name bench "127.0.0.1:$rport" <"$input"
    wait "$rpid"
    t1=$(date +%s.%N)
    t=$(echo "$t1 - $t0" | bc)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; fi
  done
  printf '  --sync-every %-3s %8d lines  best of %d: %.3f s  (%d lines/s)\n' "$every" "$n" "$runs" "$best" "$(echo "$n / $best" | bc)"
done

echo "== 5. the ceiling of 2. with the journal export and metrics on, alternating with them off"
# on:   --journal-export - (the export stream on standard output, instead of text) and
#       --metrics with --metrics-file; off: text on standard output. Both to a file.
# also: --journal-export FILE beside the text (two outputs written).
for round in 1 2 3; do
  for mode in off on also; do
    extra=()
    case $mode in
      on) extra=(--journal-export - --metrics 127.0.0.1:0 --metrics-file "$work/ncu.prom") ;;
      also) extra=(--journal-export "$work/export" --metrics 127.0.0.1:0) ;;
    esac
    rm -f "$work/export"
    start_recv --report "$work/c5.md" "${extra[@]}"
    blast_and_stop "$work/c5.md"
    printf '  round %d, %-5s %10d datagrams/s\n' "$round" "$mode" $((received / secs))
  done
done
