#!/bin/sh
# Scenario: ncu-send --kmsg --netconsole sets up the kernel's netconsole beside it
# (through configfs, which it mounts; the module is loaded here without targets).
# Needs ncu-send (static) in /bin. Kernel command line parameters:
#   ncu.port=6666      host UDP port for both
#   ncu.ncmode=crash   crash: markers, then a crash (the panic goes out through the
#                      kernel's netconsole); clean: ncu-send gets SIGTERM, its
#                      target must be gone; nomodule: the module is not loaded
#                      (and modprobe cannot find it): one line, --kmsg goes on
#   ncu.netem=         netem options for eth0, commas for spaces (both paths)
#   ncu.markers=10     markers written (every ncu.interval microseconds, 20000)
#   ncu.panic=sysrq    how the kernel dies: sysrq, null, lockup, hung (lab_crash)
# shellcheck source=/dev/null
. /lab.sh

port=$(lab_param ncu.port 6666)
host=$(lab_param ncu.gw 10.0.2.2)
mode=$(lab_param ncu.ncmode crash)
lab_say "scenario netconsole-companion: mode=$mode"
if [ "$mode" != nomodule ]; then
    while read -r m; do
        grep -q "^$m " /proc/modules || insmod "/lib/modules/$m.ko"
    done </lib/modules/netconsole.order
fi
netem=$(lab_param ncu.netem "" | tr ',' ' ')
if [ -n "$netem" ]; then
    # shellcheck disable=SC2086
    tc qdisc add dev eth0 root netem $netem || lab_say "netem setup failed"
fi
ncu-send --name guest --kmsg --netconsole "$host:$port" 2>/tmp/send.err &
sender=$!
lab_wait_socket "$sender" 500 >/dev/null
usleep 800000
lab_say "scenario netconsole-companion: ncu-send said: $(tr '\n' ' ' </tmp/send.err)"
lab_say "scenario netconsole-companion: targets: [$(ls /sys/kernel/config/netconsole 2>/dev/null | tr '\n' ' ')]"
markers=$(lab_param ncu.markers 10)
interval=$(lab_param ncu.interval 20000)
lab_markers "$markers" "$interval"
if [ "$mode" = clean ]; then
    kill -TERM "$sender"
    wait "$sender"
    lab_say "scenario netconsole-companion: after a clean end, targets: [$(ls /sys/kernel/config/netconsole 2>/dev/null | tr '\n' ' ')]"
fi
usleep 300000
[ -n "$netem" ] && lab_say "scenario netconsole-companion: $(tc -s qdisc show dev eth0 | tr '\n' ' ')"
lab_crash "$(lab_param ncu.panic sysrq)"
