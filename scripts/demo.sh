#!/usr/bin/env bash
# The main job, on one machine, as a story: a sender ("db-7") ships its lines through
# a link that loses some datagrams, then dies without a word (SIGKILL); ncu-recv says
# which lines were lost, that db-7 went silent and what its last line was, and
# writes the report a bug ticket gets.
#
# Usage: scripts/demo.sh        (builds the release binaries first; needs python3
#                               for the lossy link)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bins --quiet
bin=${CARGO_TARGET_DIR:-target}/release

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

# Receiver on a free loopback port; it prints "listening on ADDR:PORT" to stderr.
"$bin/ncu-recv" --dead-after 2s --report "$work/report.md" 127.0.0.1:0 \
    >"$work/received.txt" 2>"$work/recv.err" &
recv=$!
pids+=("$recv")
port=""
for _ in $(seq 1 100); do
    port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$work/recv.err" | head -n1)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { cat "$work/recv.err" >&2; echo "demo: ncu-recv did not start" >&2; exit 1; }

# The lossy link: a UDP relay that drops datagrams 40 and 41 of what it carries.
python3 - "$port" >"$work/link.port" <<'EOF' &
import socket, sys
dst = ("127.0.0.1", int(sys.argv[1]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
n = 0
while True:
    data, _ = s.recvfrom(65535)
    n += 1
    if n not in (40, 41):
        s.sendto(data, dst)
EOF
pids+=("$!")
for _ in $(seq 1 100); do [ -s "$work/link.port" ] && break; sleep 0.05; done
link=$(cat "$work/link.port")

echo "== db-7 ships 200 lines, one every 5 ms, through a link that loses two datagrams"
echo "   (ncu-send --resend-buffer 0: no recovery, so that the loss shows), then is killed"
"$bin/ncu-send" --name db-7 --no-pack --resend-buffer 0 "127.0.0.1:$link" -- \
    sh -c 'for i in $(seq 1 200); do echo "db-7: request $i served"; sleep 0.005; done; sleep 60' &
sender=$!
pids+=("$sender")
for _ in $(seq 1 400); do
    grep -q 'request 200 served' "$work/received.txt" 2>/dev/null && break
    sleep 0.05
done
{ kill -KILL "$sender"; wait "$sender"; } 2>/dev/null || true
echo "== SIGKILL: no END, no last words; ncu-recv notices after --dead-after 2s"
for _ in $(seq 1 100); do
    grep -q '^### ncu: silent' "$work/received.txt" && break
    sleep 0.1
done
kill -TERM "$recv"
wait "$recv" || true

echo "== the first lines as ncu-recv wrote them"
grep -v '^### ncu:' "$work/received.txt" | head -n 3
echo "   ..."
echo "== what ncu-recv said about them"
grep '^### ncu:' "$work/received.txt" | grep -v 'summary' || true
echo "== the report (--report) a bug ticket gets"
cat "$work/report.md"
