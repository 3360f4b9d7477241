#!/usr/bin/env bash
# Idempotent setup of the crash lab: installs qemu, busybox-static, cpio, iproute2,
# downloads the Debian cloud kernel package and unpacks it under lab/cache/.
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

if [ -z "$kdir" ]; then
    kpkg="$(find_kpkg || true)"
    if [ -z "$kpkg" ]; then apt_update_once; kpkg="$(find_kpkg || true)"; fi
    if [ -z "$kpkg" ]; then
        log "cannot find the versioned package of linux-image-cloud-amd64"
        exit 1
    fi
    if ! compgen -G "$CACHE/${kpkg}_*.deb" >/dev/null; then
        if ! download_kpkg "$kpkg"; then
            # Stale package lists can name a kernel the mirror no longer has.
            apt_update_once
            kpkg="$(find_kpkg)"
            compgen -G "$CACHE/${kpkg}_*.deb" >/dev/null || download_kpkg "$kpkg"
        fi
    fi
    log "kernel package: $kpkg"
    kdir="$CACHE/$kpkg"
    deb="$(compgen -G "$CACHE/${kpkg}_*.deb" | head -n1 || true)"
    [ -f "$deb" ] || { log "download of $kpkg failed"; exit 1; }
    rm -rf "$kdir"
    mkdir -p "$kdir"
    dpkg -x "$deb" "$kdir"
    touch "$kdir/.unpacked"
fi

vmlinuz="$(compgen -G "$kdir/boot/vmlinuz-*" | head -n1 || true)"
moddir="$(compgen -G "$kdir/lib/modules/*" | head -n1 || true)"
if [ -z "$moddir" ]; then moddir="$(compgen -G "$kdir/usr/lib/modules/*" | head -n1 || true)"; fi
if [ ! -f "$vmlinuz" ] || [ ! -d "$moddir" ]; then
    log "unpacked kernel is incomplete in $kdir"
    exit 1
fi
echo "KERNEL=$vmlinuz"
echo "MODULES=$moddir"
