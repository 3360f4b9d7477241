#!/bin/sh
# Scenario: kernel netconsole to the host, numbered markers, then a crash.
# Kernel command line parameters (all optional):
#   ncu.port=6666            host UDP port (10.0.2.2 = host loopback)
#   ncu.mode=extended|plain  netconsole format
#   ncu.markers=20           number of marker lines
#   ncu.sleep=1              seconds to sleep before the crash
#   ncu.sysrq=               sysrq commands to run before the crash, e.g. "ml"
#                            (m: memory info, printed with KERN_CONT pieces)
# shellcheck source=/dev/null
. /lab.sh

port=$(lab_param ncu.port 6666)
mode=$(lab_param ncu.mode extended)
markers=$(lab_param ncu.markers 20)
pause=$(lab_param ncu.sleep 1)
sysrq=$(lab_param ncu.sysrq "")

load_netconsole "$port" "$mode"
lab_say "scenario netconsole-markers: mode=$mode port=$port markers=$markers"

lab_markers "$markers"

# A long message: "<4>" + 986 bytes of text + newline (a /dev/kmsg write over
# 992 bytes is refused with EINVAL). In extended mode it exceeds 1000 bytes with its
# header, so netconsole sends it in two ncfrag fragments.
long="ncu-long begin "
while [ "${#long}" -lt 980 ]; do long="${long}0123456789"; done
long=$(printf '%s' "$long" | cut -c1-977)
long="$long end-long"
printf '<4>%s\n' "$long" >/dev/kmsg || lab_say "long write of ${#long} bytes refused"

# Non-printable bytes (extended format escapes them as \xNN), a backslash.
printf '<4>ncu-escape tab[\t] bell[\007] esc[\033] del[\177] high[\351] backslash[\\] end\n' >/dev/kmsg
# A multi-line message: one record with embedded newlines.
printf '<4>ncu-multiline first\nncu-multiline second\nncu-multiline third\n' >/dev/kmsg
# Another facility/level: user-level (1) notice (5) -> prefix <13>.
printf '<13>ncu-facility user notice\n' >/dev/kmsg

if [ -n "$sysrq" ]; then
    # Each character is one sysrq command.
    printf '%s\n' "$sysrq" | sed 's/./&\n/g' | while read -r c; do
        [ -n "$c" ] && echo "$c" >/proc/sysrq-trigger
    done
fi

lab_say "scenario netconsole-markers: done, crashing after ${pause}s"
sleep "$pause"
lab_crash
