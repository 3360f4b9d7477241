#!/usr/bin/env bash
# Idempotent setup for the service, package and integration tests
# (tests/e2e/{service,package,integrations}.rs): the real systemd tools
# (systemd-analyze, systemd-socket-activate, systemd-journal-remote), logrotate,
# strace, man-db and bash-completion from Debian's packages, cargo-deb from
# crates.io, and the prometheus_client parser from PyPI.
# Usage: packaging/setup.sh   (root, or sudo, for apt-get when packages are missing)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$HERE/../target"
APTLOG="$HERE/../target/packaging-setup-apt.log"
log() { echo "packaging setup: $*" >&2; }
# shellcheck source=../scripts/apt.sh
source "$HERE/../scripts/apt.sh"

want=(systemd systemd-journal-remote logrotate strace man-db bash-completion)
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
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    log "installing prometheus_client (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check prometheus_client
fi
log "ready: $(systemd-analyze --version | head -n1), $(logrotate --version 2>&1 | head -n1), $(cargo deb --version)"
