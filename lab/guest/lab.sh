# Helpers for crash-lab scenarios; sourced by /init and by scenarios: . /lab.sh

# lab_param NAME DEFAULT: value of NAME=... on the kernel command line.
lab_param() {
    _v=$(tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n 1)
    if [ -n "$_v" ]; then echo "$_v"; else echo "$2"; fi
}

# lab_flag NAME: true if the bare word NAME is on the kernel command line.
lab_flag() {
    tr ' ' '\n' </proc/cmdline | grep -qx "$1"
}

# lab_say TEXT: a line to the kernel log (and so the console and netconsole).
lab_say() {
    echo "<5>ncu-lab: $*" >/dev/kmsg
}

# load_netconsole PORT extended|plain: netconsole to the host (10.0.2.2:PORT).
load_netconsole() {
    _port=${1:-6666}
    _plus=
    case "${2:-extended}" in
        extended) _plus=+ ;;
        plain) _plus= ;;
        *) echo "load_netconsole: mode must be extended or plain" >&2; return 2 ;;
    esac
    while read -r _m; do
        [ "$_m" = netconsole ] && break
        grep -q "^$_m " /proc/modules || insmod "/lib/modules/$_m.ko"
    done </lib/modules/netconsole.order
    insmod /lib/modules/netconsole.ko "netconsole=${_plus}6665@10.0.2.15/eth0,${_port}@10.0.2.2/"
}

# lab_markers COUNT [INTERVAL_US]: writes "ncu-marker NNNN of MMMM" COUNT times to
# the kernel log at level 4, INTERVAL_US microseconds apart (default 0: at once).
lab_markers() {
    _i=1
    while [ "$_i" -le "$1" ]; do
        printf '<4>ncu-marker %04d of %04d\n' "$_i" "$1" >/dev/kmsg
        [ "${2:-0}" -gt 0 ] && usleep "$2"
        _i=$((_i + 1))
    done
}

# lab_crash [KIND]: crash the kernel now (a panic; with panic=-1 qemu exits).
#   sysrq   (default) sysrq 'c': panic() at once
#   null    an oops in process context: insmod of lab/crashmod writes through NULL
#   lockup  a soft lockup (2 s: watchdog_thresh 1), the module spinning preempt-off
#   hung    a hung task (1 to 2 s), the module sleeping uninterruptibly
# Each of the last three is made a panic by its sysctl first.
lab_crash() {
    case "${1:-sysrq}" in
        sysrq) echo c >/proc/sysrq-trigger; return ;;
        null) echo 1 >/proc/sys/kernel/panic_on_oops ;;
        lockup) echo 1 >/proc/sys/kernel/softlockup_panic
                echo 1 >/proc/sys/kernel/watchdog_thresh ;;
        hung) echo 1 >/proc/sys/kernel/hung_task_panic
              echo 1 >/proc/sys/kernel/hung_task_timeout_secs ;;
        *) lab_say "lab_crash: unknown kind $1"; echo c >/proc/sysrq-trigger; return ;;
    esac
    if [ ! -f /lib/modules/ncu_crash.ko ]; then
        lab_say "lab_crash: no crash module in the initramfs (lab/setup.sh builds it)"
        echo c >/proc/sysrq-trigger
        return
    fi
    insmod /lib/modules/ncu_crash.ko what="$1"
    # hung: insmod never returns; the others panic inside it.
    lab_say "lab_crash: insmod ncu_crash what=$1 returned $?"
}

# lab_drop_udp_in [DEV]: drop every UDP datagram arriving on DEV (default eth0), a
# one-way network: the guest still sends (ARP to the gateway is static, see /init)
# but nothing the host sends back over UDP reaches the guest's sockets.
lab_drop_udp_in() {
    tc qdisc add dev "${1:-eth0}" ingress &&
        tc filter add dev "${1:-eth0}" parent ffff: protocol ip u32 \
            match ip protocol 17 0xff action drop
}

# lab_udp_in_dropped [DEV]: datagrams dropped so far by lab_drop_udp_in's filter.
lab_udp_in_dropped() {
    tc -s filter show dev "${1:-eth0}" parent ffff: |
        sed -n 's/.*Sent [0-9]* bytes \([0-9]*\) pkt.*/\1/p' | head -n 1
}

# lab_wait_socket PID [TRIES]: wait (TRIES x 10 ms at most, default 500) until
# process PID has a socket open, e.g. a sender past its start-up; prints the tries.
lab_wait_socket() {
    _i=0
    while [ "$_i" -lt "${2:-500}" ]; do
        for _fd in /proc/"$1"/fd/*; do
            case "$(readlink "$_fd" 2>/dev/null)" in socket:*) echo "$_i"; return 0 ;; esac
        done
        usleep 10000; _i=$((_i + 1))
    done
    echo "$_i"
    return 1
}

# busybox's ash runs its own applets before searching PATH, and busybox's
# tc knows no netem: use the full iproute2 tools when the initramfs has them.
if [ -x /usr/local/sbin/tc ]; then tc() { /usr/local/sbin/tc "$@"; }; fi
if [ -x /usr/local/sbin/ip ]; then ip() { /usr/local/sbin/ip "$@"; }; fi
