#!/usr/bin/env bash
# Builds a crash-lab initramfs.
# Usage: lab/mkinitramfs.sh OUT.cpio.gz SCENARIO.sh [EXTRA_FILE...]
#   SCENARIO.sh becomes /scenario.sh, run by /init once eth0 is up; when it
#   returns, /init crashes the kernel (echo c > /proc/sysrq-trigger).
#   EXTRA_FILEs are copied into /bin (with their shared libraries if dynamic).
# Environment:
#   LAB_MODULES_DIR  kernel modules dir (default: from lab/setup.sh)
#   LAB_EXTRA_MODULES  more module names to add (and load at boot), space separated
set -euo pipefail

LAB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUT.cpio.gz SCENARIO.sh [EXTRA_FILE...]" >&2
    exit 2
fi
out="$1"; scenario="$2"; shift 2
[ -f "$scenario" ] || { echo "mkinitramfs: no such scenario: $scenario" >&2; exit 2; }
for f in "$@"; do [ -f "$f" ] || { echo "mkinitramfs: no such file: $f" >&2; exit 2; }; done

moddir="${LAB_MODULES_DIR:-}"
if [ -z "$moddir" ]; then
    moddir="$("$LAB/setup.sh" | sed -n 's/^MODULES=//p')"
fi
[ -d "$moddir" ] || { echo "mkinitramfs: no modules dir: $moddir" >&2; exit 1; }
busybox="$(command -v busybox || true)"
[ -n "$busybox" ] || busybox=/bin/busybox
applets="$("$busybox" --list 2>/dev/null || true)"
if ! grep -qx insmod <<<"$applets"; then
    echo "mkinitramfs: need busybox-static (run lab/setup.sh)" >&2; exit 1
fi
if grep -q '=>' <<<"$(ldd "$busybox" 2>/dev/null || true)"; then
    echo "mkinitramfs: $busybox is dynamic; need busybox-static" >&2; exit 1
fi

# Modules loaded by /init (in dependency order) and netconsole (loaded by
# the scenario through load_netconsole). veth and the qdiscs/actions are for
# network-impairment scenarios (tc ... netem, ifb + mirred for ingress; the ingress
# qdisc + u32 + gact drop for a one-way network, lab_drop_udp_in in guest/lab.sh).
init_modules=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
              failover net_failover virtio_net configfs
              veth sch_netem sch_tbf sch_prio ifb act_mirred cls_u32 cls_matchall
              sch_ingress act_gact)
# shellcheck disable=SC2206
init_modules+=(${LAB_EXTRA_MODULES:-})

stage="$(mktemp -d "${TMPDIR:-/tmp}/ncu-initramfs.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/local/sbin,proc,sys,dev,tmp,run,etc,lib/modules,root}

find_mod() {
    local f
    f="$(find "$moddir" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" | head -n1)"
    [ -n "$f" ] || { echo "mkinitramfs: module not found: $1" >&2; return 1; }
    case "$f" in
        *.ko) echo "$f" ;;
        *) echo "mkinitramfs: compressed module not supported: $f" >&2; return 1 ;;
    esac
}
mod_deps() {
    # The .modinfo section holds NUL-separated key=value strings.
    tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}

# Topological order, depth first: dependencies before their users.
order=()
declare -A seen=()
add_mod() {
    local name="${1//-/_}" f dep
    [ -n "${seen[$name]:-}" ] && return 0
    seen[$name]=1
    f="$(find_mod "$name")"
    for dep in $(mod_deps "$f"); do add_mod "$dep"; done
    cp "$f" "$stage/lib/modules/$name.ko"
    order+=("$name")
}
for m in "${init_modules[@]}"; do add_mod "$m"; done
printf '%s\n' "${order[@]}" >"$stage/lib/modules/load.order"
# netconsole and its dependencies (configfs is already loaded by /init).
nc_order_start=${#order[@]}
add_mod netconsole
printf '%s\n' "${order[@]:$nc_order_start}" >"$stage/lib/modules/netconsole.order"
basename "$moddir" >"$stage/lib/modules/kernel.release"
# The crash module lab/setup.sh builds (lab_crash null|lockup|hung), when it did.
crash_ko="$(find "$moddir" -name ncu_crash.ko | head -n1)"
[ -n "$crash_ko" ] && cp "$crash_ko" "$stage/lib/modules/ncu_crash.ko"

cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"   # for /init's #!/bin/sh; the rest: busybox --install at boot

# Copy a dynamic executable's shared libraries (by their ldd paths).
copy_libs() {
    local lib
    # ldd fails on static executables (and grep finds nothing): not an error.
    { ldd "$1" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
        [ -e "$stage$lib" ] && continue
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
}

# Full iproute2 ip and tc (busybox's tc knows no netem): in /usr/local/sbin,
# which /init puts first in PATH.
for tool in ip tc; do
    p="$(command -v "$tool" || true)"
    if [ -n "$p" ] && [ -x "$p" ]; then
        cp -L "$p" "$stage/usr/local/sbin/$tool"
        copy_libs "$p"
    fi
done
for d in /usr/lib/x86_64-linux-gnu/tc /usr/lib/tc; do
    if [ -d "$d" ]; then mkdir -p "$stage$d"; cp -r "$d/." "$stage$d/"; fi
done

for f in "$@"; do
    cp -L "$f" "$stage/bin/$(basename "$f")"
    chmod +x "$stage/bin/$(basename "$f")"
    copy_libs "$f"
done

cp "$LAB/guest/init" "$stage/init"
cp "$LAB/guest/lab.sh" "$stage/lab.sh"
cp "$scenario" "$stage/scenario.sh"
chmod +x "$stage/init" "$stage/scenario.sh"
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"

mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
echo "mkinitramfs: $out ($(du -h "$out" | cut -f1)), modules: ${order[*]}" >&2
