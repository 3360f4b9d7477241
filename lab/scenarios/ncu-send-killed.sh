#!/bin/sh
# Scenario: ncu-send through an impaired link (netem on the guest's eth0, as in
# ncu-send-netem.sh) is SIGKILLed mid-stream: lines are written into a fifo in
# chunks (the first once the sender has its socket open), and once ncu.kill lines
# are written the sender is killed (no END, no resends after that); the guest idles
# ncu.idle seconds, then crashes.
# Needs ncu-send (static) in /bin.
# Kernel command line parameters (all optional):
#   ncu.port=6666     host UDP port (10.0.2.2 = host loopback)
#   ncu.kill=10000    lines written (seq 1 N) before the SIGKILL
#   ncu.chunk=250     lines written at once
#   ncu.pause=50000   microseconds between chunks
#   ncu.idle=1        seconds between the SIGKILL and the crash
#   ncu.netem=loss,10%,reorder,25%,duplicate,5%,delay,5ms  netem options (commas for spaces)
#   ncu.sendargs=     more ncu-send options, commas for spaces ("--resend-buffer,0")
# shellcheck source=/dev/null
. /lab.sh

port=$(lab_param ncu.port 6666)
kill=$(lab_param ncu.kill 10000)
chunk=$(lab_param ncu.chunk 250)
pause=$(lab_param ncu.pause 50000)
idle=$(lab_param ncu.idle 1)
netem=$(lab_param ncu.netem "loss,10%,reorder,25%,duplicate,5%,delay,5ms" | tr ',' ' ')
sendargs=$(lab_param ncu.sendargs "" | tr ',' ' ')

# shellcheck disable=SC2086
tc qdisc add dev eth0 root netem $netem || lab_say "netem setup failed"
lab_say "scenario ncu-send-killed: port=$port kill=$kill chunk=$chunk pause=${pause}us netem=$netem sendargs=$sendargs"
mkfifo /tmp/lines
# shellcheck disable=SC2086
ncu-send --name killed $sendargs "10.0.2.2:$port" </tmp/lines &
pid=$!
exec 3>/tmp/lines
# A static binary takes a while to start under TCG; the fifo would take the first
# 64 KiB at once. Start writing once ncu-send has its socket (5 s at most).
waited=$(lab_wait_socket "$pid" 500)
lab_say "scenario ncu-send-killed: ncu-send has its socket after ${waited}x10ms; writing"
n=0
while [ "$n" -lt "$kill" ]; do
    last=$((n + chunk))
    [ "$last" -gt "$kill" ] && last=$kill
    seq $((n + 1)) "$last" >&3
    n=$last
    # No pause after the last chunk: the kill lands while its lines are in flight.
    [ "$n" -lt "$kill" ] && usleep "$pause"
done
kill -9 "$pid"
lab_say "scenario ncu-send-killed: SIGKILL sent after $n lines written"
exec 3>&-
wait "$pid"
lab_say "scenario ncu-send-killed: ncu-send exited $?"
sleep "$idle"
lab_crash
