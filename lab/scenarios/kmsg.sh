#!/bin/sh
# Scenario: the kernel's log shipped from /dev/kmsg by ncu-send --kmsg (or, to
# compare, by `cat /dev/kmsg | ncu-send` or util-linux `dmesg -w | ncu-send`).
# Needs ncu-send (static) in /bin; util-linux dmesg as /bin/dmesg-util for
# ncu.reader=dmesg. Kernel command line parameters (all optional):
#   ncu.port=6666        host UDP port (10.0.2.2 = host loopback)
#   ncu.mode=overrun     overrun: the reader is stopped (SIGSTOP) while ncu.flood
#                        records are written, continued, then ncu.markers markers
#                        every 20 ms and a crash right after the last;
#                        restart: ncu-send --kmsg-state is killed (SIGKILL) after
#                        markers 1-10, markers 11-20 are written while none runs,
#                        it starts again, markers 21-30, crash;
#                        level: --kmsg-level 4, markers at levels 4 and 6 in turn,
#                        ending with a level-4 one, crash;
#                        early: nothing here (init started ncu-send before loading
#                        modules or bringing up the network: ncu.early), markers,
#                        crash
#   ncu.reader=kmsg      kmsg | cat | dmesg (overrun mode only)
#   ncu.flood=4000       records written while the reader is stopped
#   ncu.markers=20       markers written after the flood (overrun mode)
# Markers are "ncu-marker NNNN of MMMM" (overrun, early), "ncu-restart NNNN"
# (restart), "ncu-level L NNNN" (level).
# shellcheck source=/dev/null
. /lab.sh

port=$(lab_param ncu.port 6666)
mode=$(lab_param ncu.mode overrun)
reader=$(lab_param ncu.reader kmsg)
flood=$(lab_param ncu.flood 4000)
markers=$(lab_param ncu.markers 20)
dest="10.0.2.2:$port"
lab_say "scenario kmsg: mode=$mode reader=$reader flood=$flood markers=$markers"

# Waits until process $1 has its socket, then a little more for the replay of the
# ring so far to go out.
settle() {
    lab_wait_socket "$1" 500 >/dev/null
    usleep 500000
}

case "$mode" in
overrun)
    case "$reader" in
    kmsg) ncu-send --name guest --kmsg "$dest" & ;;
    cat) cat /dev/kmsg | ncu-send --name guest "$dest" & ;;
    dmesg) dmesg-util -w | ncu-send --name guest "$dest" & ;;
    esac
    sender=$!
    settle "$sender"
    # The process reading /dev/kmsg: ncu-send itself, or cat / dmesg before it.
    case "$reader" in
    kmsg) stop=$sender ;;
    cat) stop=$(pidof cat) ;;
    dmesg) stop=$(pidof dmesg-util) ;;
    esac
    lab_say "scenario kmsg: stopping $reader (pid $stop); flood of $flood records"
    kill -STOP "$stop"
    pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
    i=1
    while [ "$i" -le "$flood" ]; do
        echo "<6>ncu-flood $i $pad" >/dev/kmsg
        i=$((i + 1))
    done
    kill -CONT "$stop"
    lab_say "scenario kmsg: continued $reader after the flood"
    usleep 300000
    lab_markers "$markers" 20000
    ;;
restart)
    ncu-send --name guest --kmsg --kmsg-state /tmp/kmsg.state "$dest" &
    sender=$!
    settle "$sender"
    i=1
    while [ "$i" -le 10 ]; do printf '<4>ncu-restart %04d\n' "$i" >/dev/kmsg; usleep 20000; i=$((i + 1)); done
    usleep 300000
    kill -KILL "$sender"
    wait "$sender"
    lab_say "scenario kmsg: killed ncu-send; state $(cat /tmp/kmsg.state)"
    while [ "$i" -le 20 ]; do printf '<4>ncu-restart %04d\n' "$i" >/dev/kmsg; i=$((i + 1)); done
    ncu-send --name guest --kmsg --kmsg-state /tmp/kmsg.state "$dest" &
    sender=$!
    settle "$sender"
    while [ "$i" -le 30 ]; do printf '<4>ncu-restart %04d\n' "$i" >/dev/kmsg; usleep 20000; i=$((i + 1)); done
    usleep 300000
    ;;
level)
    ncu-send --name guest --kmsg --kmsg-level 4 "$dest" &
    sender=$!
    settle "$sender"
    i=1
    while [ "$i" -le 40 ]; do
        level=4
        [ $((i % 2)) -eq 0 ] && level=6
        [ "$i" -eq 40 ] && level=4
        printf '<%d>ncu-level %d %04d\n' "$level" "$level" "$i" >/dev/kmsg
        usleep 10000
        i=$((i + 1))
    done
    usleep 300000
    ;;
early)
    lab_markers "$markers" 20000
    ;;
esac
lab_crash
