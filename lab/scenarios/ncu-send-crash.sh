#!/bin/sh
# Scenario: ncu-send inside the dying guest ships the kernel log (cat /dev/kmsg)
# to the host while extended netconsole ships it too, to a second port; numbered
# markers are written every ~20 ms, then the kernel is crashed right away.
# Needs ncu-send (static) in /bin: lab/mkinitramfs.sh OUT this.sh .../ncu-send
# Kernel command line parameters (all optional):
#   ncu.port=6666        host UDP port for ncu-send (10.0.2.2 = host loopback)
#   ncu.ncport=6667      host UDP port for extended netconsole
#   ncu.markers=50       number of marker lines
#   ncu.interval=20000   microseconds between markers
#   ncu.sendargs=        more ncu-send options, commas for spaces ("--copies,2")
# shellcheck source=/dev/null
. /lab.sh

port=$(lab_param ncu.port 6666)
ncport=$(lab_param ncu.ncport 6667)
markers=$(lab_param ncu.markers 50)
interval=$(lab_param ncu.interval 20000)
sendargs=$(lab_param ncu.sendargs "" | tr ',' ' ')

load_netconsole "$ncport" extended
lab_say "scenario ncu-send-crash: port=$port ncport=$ncport markers=$markers interval=${interval}us"

# /dev/kmsg replays the whole log buffer, then follows it: one record per line,
# "level,seq,ts_usec,flags;text".
# shellcheck disable=SC2086
cat /dev/kmsg | ncu-send --name guest $sendargs "10.0.2.2:$port" &

# Wait until ncu-send has caught up with the replayed log: the sync line below is
# read by cat and sent; give the sender a moment to start under TCG.
lab_say "scenario ncu-send-crash: sender started"
usleep 300000

lab_markers "$markers" "$interval"
lab_crash
