#!/bin/sh
# Scenario: ncu-send through an impaired link (netem on the guest's eth0, as in
# ncu-send-netem.sh), its input paced: lines are written into a fifo in chunks (the
# first once the sender has its socket open), then the input is closed, ncu-send
# ends (END, and its linger with recovery) and the guest crashes a second later.
# Pacing keeps the lines in flight well below the receiver's bound on held lines
# (65,536 per session, 16,384 when this was written: a hole with more lines held
# behind it is given up at once, before any NACK could recover it).
# Needs ncu-send (static) in /bin.
# Kernel command line parameters (all optional):
#   ncu.port=6666     host UDP port (10.0.2.2 = host loopback)
#   ncu.lines=20000   lines sent (1 to N)
#   ncu.chunk=1000    lines written at once
#   ncu.pause=50000   microseconds between chunks
#   ncu.netem=loss,10%,reorder,25%,duplicate,5%,delay,5ms  netem options (commas for spaces)
#   ncu.sendargs=     more ncu-send options, commas for spaces ("-v")
# shellcheck source=/dev/null
. /lab.sh

port=$(lab_param ncu.port 6666)
lines=$(lab_param ncu.lines 20000)
chunk=$(lab_param ncu.chunk 1000)
pause=$(lab_param ncu.pause 50000)
netem=$(lab_param ncu.netem "loss,10%,reorder,25%,duplicate,5%,delay,5ms" | tr ',' ' ')
sendargs=$(lab_param ncu.sendargs "" | tr ',' ' ')

# shellcheck disable=SC2086
tc qdisc add dev eth0 root netem $netem || lab_say "netem setup failed"
lab_say "scenario ncu-send-paced: port=$port lines=$lines chunk=$chunk pause=${pause}us netem=$netem sendargs=$sendargs"
mkfifo /tmp/lines
# shellcheck disable=SC2086
ncu-send --name paced $sendargs "10.0.2.2:$port" </tmp/lines &
pid=$!
exec 3>/tmp/lines
waited=$(lab_wait_socket "$pid" 500)
lab_say "scenario ncu-send-paced: ncu-send has its socket after ${waited}x10ms; writing"
n=0
while [ "$n" -lt "$lines" ]; do
    last=$((n + chunk))
    [ "$last" -gt "$lines" ] && last=$lines
    seq $((n + 1)) "$last" >&3
    n=$last
    usleep "$pause"
done
exec 3>&-
lab_say "scenario ncu-send-paced: $n lines written, input closed"
wait "$pid"
lab_say "scenario ncu-send-paced: ncu-send exited $?"
# For the record: UDP as the guest's kernel saw it (NACKs in: InDatagrams).
lab_say "scenario ncu-send-paced: $(grep Udp: /proc/net/snmp | tr '\n' ' ')"
sleep 1
lab_crash
