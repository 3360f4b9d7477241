#!/bin/sh
# Scenario: ncu-send through an impaired link (netem on the guest's eth0), then a
# crash once it has finished. Needs ncu-send (static) in /bin.
# Kernel command line parameters (all optional):
#   ncu.port=6666     host UDP port (10.0.2.2 = host loopback)
#   ncu.lines=20000   lines sent (seq 1 N)
#   ncu.netem=loss,10%,reorder,25%,duplicate,5%,delay,5ms  netem options (commas for spaces)
#   ncu.sendargs=     more ncu-send options, commas for spaces ("--copies,2")
# shellcheck source=/dev/null
. /lab.sh

port=$(lab_param ncu.port 6666)
lines=$(lab_param ncu.lines 20000)
netem=$(lab_param ncu.netem "loss,10%,reorder,25%,duplicate,5%,delay,5ms" | tr ',' ' ')
sendargs=$(lab_param ncu.sendargs "" | tr ',' ' ')

# shellcheck disable=SC2086
tc qdisc add dev eth0 root netem $netem || lab_say "netem setup failed"
lab_say "scenario ncu-send-netem: port=$port lines=$lines netem=$netem sendargs=$sendargs"
# shellcheck disable=SC2086
seq 1 "$lines" | ncu-send --name netem $sendargs "10.0.2.2:$port"
lab_say "scenario ncu-send-netem: ncu-send exited $?"
sleep 1
lab_crash
