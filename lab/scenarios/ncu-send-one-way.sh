#!/bin/sh
# Scenario: ncu-send through a one-way impaired link: netem on the guest's eth0
# (egress) and every UDP datagram arriving on eth0 dropped (lab_drop_udp_in), so the
# receiver's NACKs never reach the sender; then a crash once it has finished. The
# datagrams the filter dropped are reported as "ingress udp dropped N".
# Needs ncu-send (static) in /bin.
# Kernel command line parameters (all optional):
#   ncu.port=6666     host UDP port (10.0.2.2 = host loopback)
#   ncu.lines=20000   lines sent (seq 1 N)
#   ncu.netem=loss,10%,reorder,25%,duplicate,5%,delay,5ms  netem options (commas for spaces)
#   ncu.sendargs=     more ncu-send options, commas for spaces
# shellcheck source=/dev/null
. /lab.sh

port=$(lab_param ncu.port 6666)
lines=$(lab_param ncu.lines 20000)
netem=$(lab_param ncu.netem "loss,10%,reorder,25%,duplicate,5%,delay,5ms" | tr ',' ' ')
sendargs=$(lab_param ncu.sendargs "" | tr ',' ' ')

# shellcheck disable=SC2086
tc qdisc add dev eth0 root netem $netem || lab_say "netem setup failed"
lab_drop_udp_in eth0 || lab_say "ingress drop setup failed"
lab_say "scenario ncu-send-one-way: port=$port lines=$lines netem=$netem sendargs=$sendargs; sending"
# shellcheck disable=SC2086
seq 1 "$lines" | ncu-send --name oneway $sendargs "10.0.2.2:$port"
lab_say "scenario ncu-send-one-way: ncu-send exited $?"
lab_say "scenario ncu-send-one-way: ingress udp dropped $(lab_udp_in_dropped eth0)"
sleep 1
lab_crash
