#!/usr/bin/env bash
# Idempotent setup for the service and package tests (tests/e2e/service.rs,
# tests/e2e/package.rs): the real systemd tools (systemd-analyze,
# systemd-socket-activate), logrotate, strace, man-db and bash-completion from
# Debian's packages, and cargo-deb from crates.io.
# Usage: packaging/setup.sh   (root, or sudo, for apt-get when packages are missing)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$HERE/../target"
APTLOG="$HERE/../target/packaging-setup-apt.log"
log() { echo "packaging setup: $*" >&2; }
# shellcheck source=../scripts/apt.sh
source "$HERE/../scripts/apt.sh"

want=(systemd logrotate strace man-db bash-completion)
missing=()
for p in "${want[@]}"; do have_pkg "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then apt_update_once; fi
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb"
    cargo install --locked --quiet cargo-deb
fi
log "ready: $(systemd-analyze --version | head -n1), $(logrotate --version 2>&1 | head -n1), $(cargo deb --version)"
