#!/usr/bin/env bash
# Idempotent setup of the crash lab: installs qemu, busybox-static, cpio, iproute2,
# downloads the Debian cloud kernel package and unpacks it under lab/cache/, and
# builds lab/crashmod against its headers.
# Prints two lines: KERNEL=<path of vmlinuz> and MODULES=<modules dir>.
# Usage: lab/setup.sh            (needs root for apt-get when packages are missing)
set -euo pipefail

LAB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$LAB/cache"
mkdir -p "$CACHE"

log() { echo "setup: $*" >&2; }
APTLOG="$CACHE/setup-apt.log"

# have_pkg, apt_update_once, apt_install (they log to $APTLOG).
# shellcheck source=../scripts/apt.sh
source "$LAB/../scripts/apt.sh"

# 1. Packages.
# iproute2: its full `ip` and `tc` (netem) are copied into the initramfs.
want=(qemu-system-x86 busybox-static cpio iproute2)
missing=()
for p in "${want[@]}"; do have_pkg "$p" || missing+=("$p"); done
had_qemu_utils=0
have_pkg qemu-utils && had_qemu_utils=1
if [ "${#missing[@]}" -gt 0 ]; then
    # Unknown to apt (lists never fetched): update first.
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then apt_update_once; fi
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
    # Installing qemu-system-x86 can replace a newer (backports) qemu-utils.
    if [ "$had_qemu_utils" -eq 1 ] && ! have_pkg qemu-utils; then
        log "qemu-utils was removed; reinstalling it"
        apt_install qemu-utils
    fi
fi

# 2. Kernel package: find the versioned package behind linux-image-cloud-amd64.
find_kpkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)\( .*\)\{0,1\}$/\1/p' \
        | grep -v -- '-unsigned$' | head -n1
}

kdir=""
# Reuse an already unpacked kernel if there is one (works offline).
for d in "$CACHE"/linux-image-*-cloud-amd64; do
    if [ -d "$d" ] && compgen -G "$d/boot/vmlinuz-*" >/dev/null && [ -f "$d/.unpacked" ]; then
        kdir="$d"
    fi
done

download_kpkg() {
    # apt-get download drops privileges to _apt; the folder must be writable.
    chmod 0777 "$CACHE" 2>/dev/null || true
    (cd "$CACHE" && apt-get download -qq "$1" >&2)
}

# fetch_kernel: the kernel apt's fresh lists name, downloaded and unpacked into
# $CACHE; sets kdir. The lists are brought up to date first: stale lists can name
# a kernel whose headers the mirror no longer has (seen: the image still there,
# its headers 404), and the crash module needs both of one version.
fetch_kernel() {
    apt_update_once
    kpkg="$(find_kpkg || true)"
    if [ -z "$kpkg" ]; then
        log "cannot find the versioned package of linux-image-cloud-amd64"
        exit 1
    fi
    if ! compgen -G "$CACHE/${kpkg}_*.deb" >/dev/null; then
        download_kpkg "$kpkg" || true
    fi
    log "kernel package: $kpkg"
    kdir="$CACHE/$kpkg"
    deb="$(compgen -G "$CACHE/${kpkg}_*.deb" | head -n1 || true)"
    [ -f "$deb" ] || { log "download of $kpkg failed"; exit 1; }
    rm -rf "$kdir"
    mkdir -p "$kdir"
    dpkg -x "$deb" "$kdir"
    touch "$kdir/.unpacked"
}

# kernel_paths: vmlinuz, moddir and kver of $kdir.
kernel_paths() {
    vmlinuz="$(compgen -G "$kdir/boot/vmlinuz-*" | head -n1 || true)"
    moddir="$(compgen -G "$kdir/lib/modules/*" | head -n1 || true)"
    if [ -z "$moddir" ]; then moddir="$(compgen -G "$kdir/usr/lib/modules/*" | head -n1 || true)"; fi
    if [ ! -f "$vmlinuz" ] || [ ! -d "$moddir" ]; then
        log "unpacked kernel is incomplete in $kdir"
        exit 1
    fi
    kver="$(basename "$moddir")"
}

[ -n "$kdir" ] || fetch_kernel
kernel_paths

# A cached kernel whose headers are gone from the mirror (a newer kernel replaced
# it) is replaced by the current one, when the mirror can be reached.
if [ ! -f "/usr/src/linux-headers-$kver/Makefile" ] && [ ! -f "$moddir/extra/ncu_crash.ko" ]; then
    apt_update_once || true
    if ! apt-cache show "linux-headers-$kver" >/dev/null 2>&1 && [ -n "$(find_kpkg || true)" ] \
        && [ "$(find_kpkg)" != "$(basename "$kdir")" ]; then
        log "no headers for the cached $kver any more: taking the current kernel"
        rm -rf "$kdir" "$CACHE/$(basename "$kdir")"_*.deb
        fetch_kernel
        kernel_paths
    fi
fi

# 3. The crash module (lab/crashmod: a NULL dereference, a soft lockup, a hung task;
# the cloud kernel has no lkdtm), built against this kernel's headers into its
# modules dir, where lab/mkinitramfs.sh finds it. Without the headers the lab still
# works; the scenarios that need the module say it is missing.
crash_ko="$moddir/extra/ncu_crash.ko"
if [ ! -f "$crash_ko" ] || [ "$LAB/crashmod/ncu_crash.c" -nt "$crash_ko" ]; then
    hdr="/usr/src/linux-headers-$kver"
    if [ ! -f "$hdr/Makefile" ]; then
        log "installing linux-headers-$kver (for the crash module)"
        if ! apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then apt_update_once; fi
        apt_install "linux-headers-$kver" make gcc || log "no headers for $kver: the crash module is not built"
    fi
    if [ -f "$hdr/Makefile" ]; then
        build="$CACHE/crashmod-$kver"
        rm -rf "$build"
        mkdir -p "$build" "$moddir/extra"
        cp "$LAB/crashmod/ncu_crash.c" "$LAB/crashmod/Kbuild" "$build/"
        if make -s -C "$hdr" M="$build" modules >"$CACHE/crashmod-build.log" 2>&1; then
            cp "$build/ncu_crash.ko" "$crash_ko"
            log "crash module built: $crash_ko"
        else
            log "the crash module did not build (see $CACHE/crashmod-build.log)"
        fi
    fi
fi

echo "KERNEL=$vmlinuz"
echo "MODULES=$moddir"
