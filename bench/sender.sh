#!/usr/bin/env bash
# Sender benchmark: ncu-send side by side with a bare sendto loop and with `nc -u`
# (netcat-openbsd) on loopback, plus its peak RSS while streaming 1 GB.
#   bench/sender.sh                 everything (about 30 s)
#   bench/sender.sh --skip-rss      without the 1 GB run
#   bench/sender.sh --only r        recovery's cost: default resend ring vs --resend-buffer 0
#   bench/sender.sh --only c --also PATH
#                                   (c) with another build of ncu-send alternating beside
#                                   it (repeatable), to measure a change
# Uses 2 CPUs' worth of loopback traffic: do not run it in a loop on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! nc -h 2>&1 | grep -q OpenBSD; then
  echo "installing netcat-openbsd" >&2
  apt-get install -y --no-install-recommends netcat-openbsd >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends netcat-openbsd >/dev/null; }
fi
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ncu-sender -p ncu-bench
exec "$target/release/bench-sender" --ncu "$target/release/ncu-send" "$@"
