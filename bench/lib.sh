# What the bench scripts share; sourced, not run.

# listening_port ERR: waits (up to 2 s) until a receiver started with its stderr
# in file ERR says "listening on ADDR:PORT", and prints PORT (nothing if it never
# said so).
listening_port() {
  for _ in $(seq 200); do
    grep -q 'listening on' "$1" 2>/dev/null && break
    sleep 0.01
  done
  grep -o 'listening on [^ ]*' "$1" | sed 's/.*://'
}
