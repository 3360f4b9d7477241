#!/usr/bin/env bash
# Sealing's cost (issue 7: sealed throughput within 25% of plain), side by side in one
# run, about 40 s of loopback load (do not run it in a loop on a shared machine):
#   1. ncu-send on a 24 MB dmesg-like log into a drained UDP sink, --no-pack and
#      packed, with and without --key-file;
#   2. ncu-recv fed pre-built (pre-sealed) datagrams with no loss, one line per
#      datagram and packed, with and without --key-file.
# Figures are CPU time (user+sys, rusage) of the measured process for a fixed
# workload, median of ROUNDS (default 3) alternating runs: steadier than wall-clock
# ceilings on a small shared machine. Code: bench/src/sealed.rs.
#   bench/sealed.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ncu-sender -p ncu-receiver -p ncu-bench --bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rel="$target/release"
"$rel/bench-sealed" "$rel/ncu-send" "$rel/ncu-recv" "$work" "${1:-3}"
